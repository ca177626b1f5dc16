"""Benchmark tasks with exact ground truth (issue 16, part 2): ``TASKS`` name -> factory, :func:`get_task`.

Every task is a :class:`synthetic.tasks.Task` — a Language (``vocab_size``, ``length``, ``denoiser()``,
``log_prob``, ``entropy``, ``sample``, ``joint()``) plus ``correct(tokens (M, L)) -> (M,) bool``:

=================  ===========================================================================  ============
name               q                                                                            long L
=================  ===========================================================================  ============
``dirichlet``      random table q ~ Dirichlet(concentration) over V**L                          no (table)
``markov``         random Markov chain, each transition forbidden with prob ``forbid``          chain oracle
``ngram``          random n-gram (order n), transitions forbidden likewise                      chain oracle
``hmm``            random HMM, emissions forbidden likewise                                      chain oracle
``additive-ngram`` x_0, x_1 uniform, x_i = (x_{i-1} + x_{i-2}) mod V (Feng2025's SER worst case)  chain oracle
``copy-pairs``     L/2 blocks (a, a), a uniform on {0, 1}                                       table
``sudoku``         4x4 Sudoku completion, uniform over the valid completions                     support list
``parity``         uniform over x in {0,1}^L with an even number of ones                         table
``dyck``           uniform over the balanced bracket words (Dyck-k) of length L                 table
=================  ===========================================================================  ============

``correct`` is "q(x) > 0" (membership in the support), so SER = 1 - P(correct) is Feng2025's sequence
error rate. The forbidden transitions of the random chains make SER non-trivial (a full-support chain
accepts every sequence). Chains run at any L through their exact oracles (theory.sampling.sample with
``denoiser()``); tables (``Joint.from_support`` for the uniform-over-support ones) need small V**L.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import numpy as np

from theory.joint import Joint
from theory.validation import require_x64

from . import languages
from .tasks import Task, copy_pairs_task, sudoku_task
from .worst_case import additive_ngram

__all__ = ["TASKS", "dyck_words", "get_task", "list_tasks", "parity_words"]


def _support_task(name: str, lang) -> Task:
    """A Task whose correct() is membership in the language's support (log q > -inf)."""

    def correct(tokens):
        t = np.asarray(tokens, dtype=np.int64).reshape(-1, lang.length)
        return np.isfinite(np.asarray(lang.log_prob(t)))

    return Task(name, lang, correct)


def _forbid(rows: np.ndarray, rng: np.random.Generator, forbid: float, min_keep: int = 2) -> np.ndarray:
    """Zero each entry of the last axis with probability ``forbid`` (>= ``min_keep`` kept per row), renormalise."""
    if not 0 <= forbid < 1:
        raise ValueError(f"forbid must be in [0, 1), got {forbid}.")
    r = np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])
    keep = rng.random(r.shape) >= forbid
    for i in range(r.shape[0]):
        if keep[i].sum() < min_keep:
            keep[i, rng.choice(r.shape[1], min_keep, replace=False)] = True
    r = r * keep
    return (r / r.sum(1, keepdims=True)).reshape(rows.shape)


def _key(seed: int):
    return jax.random.PRNGKey(int(seed))


def dirichlet_task(vocab_size: int = 2, length: int = 4, concentration: float = 0.5, seed: int = 0) -> Task:
    """Random table q ~ Dirichlet(concentration) (:func:`synthetic.languages.dirichlet`); correct = q(x) > 0."""
    require_x64("dirichlet_task")
    q = languages.dirichlet(_key(seed), vocab_size, length, concentration)
    return _support_task(f"dirichlet(V={vocab_size},L={length},c={concentration})", q)


def markov_task(
    vocab_size: int = 3, length: int = 5, concentration: float = 0.5, forbid: float = 0.3, seed: int = 0
) -> Task:
    """Random Markov chain (:func:`synthetic.languages.random_markov`) with each transition forbidden with
    probability ``forbid`` (at least two allowed per row); exact conditionals at any L (chain oracle)."""
    require_x64("markov_task")
    m = languages.random_markov(_key(seed), vocab_size, length, concentration)
    trans = _forbid(np.asarray(m.trans), np.random.default_rng(seed + 1), forbid)
    lang = languages.MarkovChain(np.asarray(m.init), trans, length)
    return _support_task(f"markov(V={vocab_size},L={length})", lang)


def ngram_task(
    vocab_size: int = 3, order: int = 3, length: int = 5, concentration: float = 0.5, forbid: float = 0.3, seed: int = 0
) -> Task:
    """Random n-gram (:func:`synthetic.languages.random_ngram`) with next tokens forbidden like :func:`markov_task`."""
    require_x64("ngram_task")
    g = languages.random_ngram(_key(seed), vocab_size, order, length, concentration)
    cond = _forbid(np.asarray(g.cond), np.random.default_rng(seed + 1), forbid)
    lang = languages.NGram(np.asarray(g.init), cond, length)
    return _support_task(f"ngram(V={vocab_size},n={order},L={length})", lang)


def hmm_task(
    num_hidden: int = 2,
    vocab_size: int = 3,
    length: int = 5,
    concentration: float = 0.5,
    forbid: float = 0.4,
    seed: int = 0,
) -> Task:
    """Random HMM (:func:`synthetic.languages.random_hmm`) with each hidden transition and each emission
    forbidden with probability ``forbid`` (at least one kept per row), so some sequences have q = 0."""
    require_x64("hmm_task")
    h = languages.random_hmm(_key(seed), num_hidden, vocab_size, length, concentration)
    rng = np.random.default_rng(seed + 1)
    trans = _forbid(np.asarray(h.trans), rng, forbid, min_keep=1)
    emit = _forbid(np.asarray(h.emit), rng, forbid, min_keep=1)
    lang = languages.HMM(np.asarray(h.init), trans, emit, length)
    return _support_task(f"hmm(H={num_hidden},V={vocab_size},L={length})", lang)


def additive_ngram_task(vocab_size: int = 2, length: int = 6) -> Task:
    """Feng2025's hard-constraint n-gram (:func:`synthetic.worst_case.additive_ngram`)."""
    require_x64("additive_ngram_task")
    return _support_task(f"additive_ngram(V={vocab_size},L={length})", additive_ngram(vocab_size, length))


def copy_pairs(length: int = 4) -> Task:
    """Copy pairs (:func:`synthetic.tasks.copy_pairs_task`)."""
    return copy_pairs_task(length)


def sudoku(num_blanks: int = 4, seed: int = 0, min_solutions: int = 2) -> Task:
    """4x4 Sudoku completion (:func:`synthetic.tasks.sudoku_task`), V = 4, L = ``num_blanks``."""
    return sudoku_task(num_blanks=num_blanks, seed=seed, min_solutions=min_solutions)


def parity_words(length: int) -> np.ndarray:
    """All x in {0,1}^L with an even number of ones, (2**(L-1), L), lexicographic."""
    a = np.array(list(itertools.product([0, 1], repeat=int(length))), dtype=np.int64).reshape(-1, int(length))
    return a[a.sum(1) % 2 == 0]


def parity_task(length: int = 4) -> Task:
    """Uniform over even-parity binary words (Yang2025's parity): every L-1 tokens are independent and
    uniform, the last is their XOR — a constraint spanning the whole sequence."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"parity_task needs an int length >= 2, got {length!r}.")
    q = Joint.from_support(parity_words(length), 2, int(length))
    return _support_task(f"parity(L={length})", q)


def dyck_words(k: int, length: int) -> np.ndarray:
    """All balanced bracket words of Dyck-k of length L (opening bracket of type i = 2i, closing = 2i+1),
    (count, L), lexicographic. One-sided (the usual Dyck language); count = Catalan(L/2) k**(L/2)."""
    L = int(length)
    out = []
    for w in itertools.product(range(2 * k), repeat=L):
        stack: list = []
        ok = True
        for t in w:
            if t % 2 == 0:
                stack.append(t)
            elif stack and stack[-1] == t - 1:
                stack.pop()
            else:
                ok = False
                break
        if ok and not stack:
            out.append(w)
    return np.asarray(out, dtype=np.int64).reshape(-1, L)


def dyck_task(length: int = 6, k: int = 1) -> Task:
    """Uniform over the Dyck-k words of length L (V = 2k, L even; :func:`dyck_words`)."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2 or length % 2:
        raise ValueError(f"dyck_task needs an even length >= 2, got {length!r}.")
    if (2 * k) ** length > 5_000_000:
        raise ValueError(f"enumerating (2k)**L = {(2 * k) ** length} words is too many; lower L or k.")
    q = Joint.from_support(dyck_words(k, length), 2 * k, int(length))
    return _support_task(f"dyck(k={k},L={length})", q)


#: name -> factory taking the task's own keyword defaults.
TASKS: dict[str, Callable[..., Task]] = {
    "dirichlet": dirichlet_task,
    "markov": markov_task,
    "ngram": ngram_task,
    "hmm": hmm_task,
    "additive-ngram": additive_ngram_task,
    "copy-pairs": copy_pairs,
    "sudoku": sudoku,
    "parity": parity_task,
    "dyck": dyck_task,
}


def list_tasks() -> list[str]:
    """The registered task names."""
    return list(TASKS)


def get_task(name: str, **kw) -> Task:
    """The registered task ``name`` built with its keyword defaults overridden (e.g. ``length=8``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    try:
        return TASKS[name](**kw)
    except TypeError as e:
        raise TypeError(f"get_task({name!r}): bad keyword argument ({e}).") from None
