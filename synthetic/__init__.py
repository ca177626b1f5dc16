"""Synthetic worlds for the theory: languages, worst cases, tasks, learned denoisers.

Every world is a Language (:mod:`theory.language`): ``denoiser()``, ``log_prob``, ``entropy``,
``sample`` (and ``with_length`` / ``joint`` where they make sense).

Modules: ``languages`` (Dirichlet tables, Markov chains, n-grams, HMMs), ``chain_oracle`` (exact
Markov conditionals at any L), ``forward_backward`` (n-gram / HMM conditionals), ``chain_exact``
(their log q, entropies, sampling), ``worst_case`` (Feng2025's worst cases, block languages),
``tasks`` (tasks with a correctness check, sparse 4x4 Sudoku), ``steps_length`` (Feng2025's
measurements), ``models`` and ``train`` (learned denoisers and their training).
"""

from . import chain_exact, chain_oracle, forward_backward, languages, steps_length, tasks, worst_case
from .languages import HMM, MarkovChain, NGram, dirichlet, entropy_ngram, random_hmm, random_markov, random_ngram
from .tasks import (
    SamplerEval,
    SparseJoint,
    SupportDenoiser,
    Task,
    copy_pairs_task,
    evaluate_sampler,
    evaluate_sampler_mc,
    markov_task,
    sudoku_task,
)
from .worst_case import BlockLanguage, additive_ngram, copy_pairs, noisy_copy_pairs

__all__ = [
    "chain_exact", "chain_oracle", "forward_backward", "languages", "steps_length", "tasks", "worst_case",
    "HMM", "MarkovChain", "NGram", "dirichlet", "entropy_ngram", "random_hmm", "random_markov", "random_ngram",
    "SamplerEval", "SparseJoint", "SupportDenoiser", "Task", "copy_pairs_task", "evaluate_sampler",
    "evaluate_sampler_mc", "markov_task", "sudoku_task",
    "BlockLanguage", "additive_ngram", "copy_pairs", "noisy_copy_pairs",
]  # fmt: skip
