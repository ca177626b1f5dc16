"""Tasks with a correctness check, for accuracy-versus-NFE experiments (BenHamu2025, issue 5).

A :class:`Task` bundles a data distribution (exact conditionals), a correctness predicate and, when
V**L is small, the enumerated :class:`theory.joint.Joint` (for exact laws and KL):

* :func:`markov_task` — a random Markov language (``synthetic.languages.random_markov``) with some
  transitions forbidden, so "correct" = "has positive probability under q" (1 - SER of Feng2025);
* :func:`copy_pairs_task` — the copy-pairs worst case: L/2 blocks (a, a), a uniform on {0, 1}
  (every pair is perfectly dependent, so parallel reveals inside a pair cost log 2 each);
* :func:`sudoku_task` — 4x4 Sudoku completion from a clue set: V = 4, the positions are the blank
  cells (row-major), q is uniform over the valid completions. It is held as a :class:`SparseJoint`
  (a support list of K sequences with weights) whose exact denoiser :class:`SupportDenoiser`
  compares each state's visible tokens with the (K, L) support array — V**L is never enumerated.

Largest instances. :class:`SupportDenoiser` costs O(B K L V) time and O(B K) memory per call; the
largest Sudoku instance, the empty 4x4 grid (L = 16 blanks, K = 288 solutions), runs with the
Monte-Carlo sampler in a fraction of a second per thousand samples. Exact laws need the enumerated
state space (V+1)**L = 5**L (``theory.sampling.exact_law``): up to about L = 10 blanks (5**10 states,
~78 MB per table); :meth:`Task.joint` refuses larger instances.

Imperfect models for the tasks are :func:`theory.denoiser.smoothed` and :func:`theory.denoiser.tempered`.

Measuring a sampler on a task (one point of an accuracy-versus-NFE curve, BenHamu2025):
:func:`evaluate_sampler` (exact law: expected NFE, accuracy, KL and the error decomposition of
:mod:`theory.dependence`) and :func:`evaluate_sampler_mc` (Monte Carlo: means with standard errors).
Accuracy is the same in both: the probability that ``task.correct`` accepts the generated sequence,
i.e. 1 - SER with the task's predicate. The NFE reduction at equal accuracy is
:func:`theory.metrics.nfe_speedups`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from theory.dependence import error_decomposition
from theory.joint import Joint, joint_bytes
from theory.metrics import mean_se
from theory.sampling import sample
from theory.states import all_sequences, encode_sequence
from theory.validation import as_f64, check_size, check_vocab_length, require_x64

from . import languages


# ================================ sparse joint =======================================================
@dataclass(frozen=True, eq=False)
class SparseJoint:
    """A distribution given by its support list: ``sequences`` (K, L) distinct, ``weights`` (K,) summing to 1."""

    sequences: np.ndarray
    weights: np.ndarray
    vocab_size: int
    length: int

    def __init__(self, sequences, vocab_size: int, length: int, weights=None):
        V, L = check_vocab_length(vocab_size, length)
        seqs = np.asarray(sequences)
        if seqs.dtype.kind not in "iu":
            raise TypeError(f"support sequences must be integers in 0..{V - 1}, got dtype {seqs.dtype}.")
        seqs = seqs.astype(np.int64).reshape(-1, L) if seqs.size else np.zeros((0, L), np.int64)
        if seqs.shape[0] == 0:
            raise ValueError("a SparseJoint needs at least one supported sequence.")
        if seqs.min() < 0 or seqs.max() >= V:
            raise ValueError(f"support sequences must have tokens in 0..{V - 1} (no mask token).")
        if len(np.unique(seqs, axis=0)) != len(seqs):
            raise ValueError("support sequences must be distinct; merge duplicates by adding their weights.")
        w = np.ones(len(seqs)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(seqs),) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be {len(seqs)} positive finite numbers (drop zero-weight sequences).")
        object.__setattr__(self, "sequences", seqs)
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "vocab_size", V)
        object.__setattr__(self, "length", L)

    @property
    def num_support(self) -> int:
        return int(self.sequences.shape[0])

    def entropy(self) -> float:
        """H(q) in nats."""
        w = self.weights
        return float(-np.sum(w * np.log(w)))

    def contains(self, tokens) -> np.ndarray:
        """Boolean (M,): each sequence of ``tokens`` (M, L) is in the support."""
        t = np.asarray(tokens, dtype=np.int64).reshape(-1, self.length)
        keys = {tuple(s) for s in self.sequences.tolist()}
        return np.array([tuple(r) in keys for r in t.tolist()], dtype=bool)

    def log_prob(self, tokens) -> np.ndarray:
        """log q(x) for sequences (M, L); -inf outside the support."""
        t = np.asarray(tokens, dtype=np.int64).reshape(-1, self.length)
        lut = {tuple(s): np.log(w) for s, w in zip(self.sequences.tolist(), self.weights)}
        return np.array([lut.get(tuple(r), -np.inf) for r in t.tolist()])

    def sample(self, key, num: int) -> jax.Array:
        """``num`` exact samples (num, L) from the support list (float64 inverse CDF over the K weights)."""
        require_x64("SparseJoint.sample")
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}.")
        u = jax.random.uniform(key, (int(num),), dtype=jnp.float64)
        cdf = jnp.cumsum(jnp.asarray(self.weights))
        k = jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), self.num_support - 1)
        return jnp.asarray(self.sequences, dtype=jnp.int32)[k]

    def joint(self, max_bytes: float | None = None) -> Joint:
        """Enumerate into a dense :class:`Joint` over V**L (small L only)."""
        V, L = self.vocab_size, self.length
        check_size(
            joint_bytes(V, L),
            f"Enumerating this support list over V**L = {V}**{L}",
            max_bytes,
            "Use SupportDenoiser with the Monte-Carlo sampler theory.sampling.sample",
        )
        table = np.zeros(V**L)
        np.add.at(table, encode_sequence(self.sequences, V), self.weights)
        return Joint(table / table.sum(), V, L, max_bytes=max_bytes)

    def denoiser(self) -> SupportDenoiser:
        """The exact conditionals from the support list (built once)."""
        d = self.__dict__.get("_denoiser")
        if d is None:
            d = SupportDenoiser(self)
            object.__setattr__(self, "_denoiser", d)
        return d


@dataclass(frozen=True, eq=False)
class SupportDenoiser:
    """Exact conditionals of a :class:`SparseJoint` from its support list (V**L never enumerated).

    For a state z, sequence k is consistent when it agrees with every visible token of z; then
    q(x_i = v | z) = sum_k w_k [consistent_k] [x^k_i = v] / sum_k w_k [consistent_k]. States no
    supported sequence is consistent with get the uniform 1/V at masked positions (the same documented
    convention as :class:`theory.denoiser.ExactDenoiser`). JAX-traceable; cost O(B K L V).
    """

    joint: SparseJoint
    vocab_size: int
    length: int

    def __init__(self, joint: SparseJoint):
        if not isinstance(joint, SparseJoint):
            raise TypeError(f"SupportDenoiser needs a SparseJoint, got {type(joint).__name__}.")
        object.__setattr__(self, "joint", joint)
        object.__setattr__(self, "vocab_size", joint.vocab_size)
        object.__setattr__(self, "length", joint.length)

    def marginals(self, states) -> jax.Array:
        return _support_marginals(
            jnp.asarray(self.joint.sequences),
            as_f64(self.joint.weights, "SparseJoint.weights"),
            jnp.asarray(states),
            self.vocab_size,
        )


@partial(jax.jit, static_argnames="V")
def _support_marginals(seqs, w, states, V):
    """seqs (K, L), w (K,), states (B, L) -> (B, L, V)."""
    onehot = jax.nn.one_hot(seqs, V, dtype=jnp.float64)  # (K, L, V)
    masked = states == V  # (B, L)
    agree = masked[:, None, :] | (states[:, None, :] == seqs[None, :, :])  # (B, K, L)
    wk = jnp.where(jnp.all(agree, axis=-1), w[None, :], 0.0)  # (B, K)
    num = jnp.einsum("bk,klv->blv", wk, onehot)  # (B, L, V)
    den = wk.sum(-1)[:, None, None]  # (B, 1, 1)
    cond = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0 / V)
    vis = jax.nn.one_hot(jnp.where(masked, 0, states), V, dtype=jnp.float64)
    return jnp.where(masked[..., None], cond, vis)


# ================================ tasks ==============================================================
@dataclass(frozen=True, eq=False)
class Task:
    """A task: a Language ``language`` (the data distribution q, :mod:`theory.language`) and a correctness
    predicate ``correct(tokens (M, L)) -> (M,) bool``. A Task is itself a Language (it delegates)."""

    name: str
    language: Any  # a theory.language.Language
    correct: Callable
    grid: np.ndarray | None = None  # Sudoku: the clue grid (16,), -1 at blanks

    @property
    def vocab_size(self) -> int:
        return self.language.vocab_size

    @property
    def length(self) -> int:
        return self.language.length

    def denoiser(self):
        return self.language.denoiser()

    def log_prob(self, tokens):
        return self.language.log_prob(tokens)

    def entropy(self) -> float:
        return self.language.entropy()

    def sample(self, key, num: int):
        return self.language.sample(key, num)

    def joint(self, max_bytes: float | None = None) -> Joint:
        """The enumerated Joint (for exact laws and KL); raises ValueError when V**L is too large."""
        return self.language.joint(max_bytes)

    def enumerable(self, max_states: int = 5**10) -> bool:
        """True when exact laws are affordable: (V+1)**L <= max_states."""
        return (self.vocab_size + 1) ** self.length <= max_states

    def correct_table(self) -> np.ndarray:
        """``correct`` on every sequence, (V**L,) bool in flat-index order (computed once; small V**L only)."""
        t = self.__dict__.get("_correct_table")
        if t is None:
            V, L = self.vocab_size, self.length
            check_size(joint_bytes(V, L), f"Tabulating correct() over V**L = {V}**{L}", None, "Use evaluate_sampler_mc")
            t = np.asarray(self.correct(all_sequences(V, L)), dtype=bool).reshape(V**L)
            object.__setattr__(self, "_correct_table", t)
        return t


def _joint_task(name: str, q: Joint) -> Task:
    support = np.asarray(q.probs) > 0

    def correct(tokens):
        return support[encode_sequence(np.asarray(tokens, dtype=np.int64), q.vocab_size)]

    return Task(name, q, correct)


def markov_task(key, vocab_size: int, length: int, concentration: float = 0.5, forbid: float = 0.3) -> Task:
    """Random Markov language (``languages.random_markov``) with each transition forbidden with
    probability ``forbid`` (at least two allowed per row when V >= 2; rows renormalised).

    Correct = positive probability under q. Enumerated into a Joint (small V**L only).
    """
    require_x64("markov_task")
    V, L = check_vocab_length(vocab_size, length)
    if not 0 <= forbid < 1:
        raise ValueError(f"forbid must be in [0, 1), got {forbid}.")
    k1, k2 = jax.random.split(key)
    m = languages.random_markov(k1, V, L, concentration)
    rng = languages.numpy_rng(k2)
    keep = rng.random((V, V)) >= forbid
    for r in range(V):  # keep at least two tokens per row (no row becomes deterministic by accident)
        if keep[r].sum() < 2:
            keep[r, rng.choice(V, 2, replace=False)] = True
    trans = np.asarray(m.trans) * keep
    trans = trans / trans.sum(1, keepdims=True)
    q = languages.MarkovChain(m.init, trans, L).joint()
    return _joint_task(f"markov(V={V},L={L})", q)


def copy_pairs_task(length: int) -> Task:
    """Copy pairs: L/2 blocks (a, a), a uniform on {0, 1} (V = 2); q uniform over 2**(L/2) sequences."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2 or length % 2:
        raise ValueError(f"copy_pairs_task needs an even length >= 2, got {length!r}.")
    half = int(length) // 2
    a = np.array(list(itertools.product([0, 1], repeat=half)), dtype=np.int64)  # (2**half, half)
    seqs = np.repeat(a, 2, axis=1)  # (2**half, L): a_1 a_1 a_2 a_2 ...
    q = Joint.from_support(seqs, 2, int(length))
    return _joint_task(f"copy_pairs(L={length})", q)


# ---- 4x4 Sudoku -------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _solutions() -> np.ndarray:
    rows = np.array(list(itertools.permutations(range(4))), dtype=np.int64)  # (24, 4)
    # rows 0 and 1 must differ in every column and fill each top box: filter pairs first, then all four
    idx = np.array(list(itertools.product(range(24), repeat=2)))
    top = np.concatenate([rows[idx[:, 0]], rows[idx[:, 1]]], 1)  # (576, 8)
    ok = np.all(top[:, :4] != top[:, 4:], 1)
    ok &= np.all(np.sort(top[:, [0, 1, 4, 5]], 1) == np.arange(4), 1) & np.all(
        np.sort(top[:, [2, 3, 6, 7]], 1) == np.arange(4), 1
    )
    top = top[ok]  # (96, 8)
    grids = np.concatenate([np.repeat(top, len(top), 0), np.tile(top, (len(top), 1))], 1)  # (9216, 16)
    grids = grids[sudoku_valid(grids)]
    return grids[np.lexsort(grids.T[::-1])]


def sudoku_solutions() -> np.ndarray:
    """All 288 valid 4x4 Sudoku grids (values 0..3), shape (288, 16), row-major cells, sorted."""
    return _solutions().copy()


def sudoku_valid(grids) -> np.ndarray:
    """Boolean (M,): each grid (M, 16) (values 0..3) has every row, column and 2x2 box a permutation."""
    g = np.asarray(grids, dtype=np.int64).reshape(-1, 4, 4)
    ok = np.ones(g.shape[0], dtype=bool)
    full = np.arange(4)
    for k in range(4):
        ok &= np.all(np.sort(g[:, k, :], 1) == full, 1)
        ok &= np.all(np.sort(g[:, :, k], 1) == full, 1)
        bi, bj = divmod(k, 2)
        ok &= np.all(np.sort(g[:, 2 * bi : 2 * bi + 2, 2 * bj : 2 * bj + 2].reshape(-1, 4), 1) == full, 1)
    return ok


def sudoku_task(clues=None, *, num_blanks: int | None = None, seed: int = 0, min_solutions: int = 2) -> Task:
    """4x4 Sudoku completion: V = 4, L = number of blank cells, q uniform over the valid completions.

    ``clues``: a dict {cell (0..15): value (0..3)} or a length-16 array with -1 at blanks. Or leave it
    None and give ``num_blanks``: a solution and a blank set are drawn with ``seed`` among those with at
    least ``min_solutions`` completions. ``correct`` = the completed grid is a valid Sudoku.
    Represented sparsely (:class:`SparseJoint`, exact :class:`SupportDenoiser`); ``Task.joint`` enumerates
    it when 4**L is small.
    """
    sols = sudoku_solutions()
    if clues is None:
        if num_blanks is None or not 1 <= int(num_blanks) <= 16:
            raise ValueError("give clues, or num_blanks in 1..16.")
        rng = np.random.default_rng(seed)
        for _ in range(10_000):
            sol = sols[rng.integers(len(sols))]
            blanks = np.sort(rng.choice(16, int(num_blanks), replace=False))
            grid = sol.copy()
            grid[blanks] = -1
            if _completions(sols, grid).shape[0] >= min_solutions:
                break
        else:
            raise ValueError(
                f"no clue set with {num_blanks} blanks has >= {min_solutions} completions; lower min_solutions."
            )
    else:
        if isinstance(clues, dict):
            grid = np.full(16, -1, dtype=np.int64)
            for c, v in clues.items():
                grid[int(c)] = int(v)
        else:
            grid = np.asarray(clues, dtype=np.int64).reshape(16)
        if np.any((grid < -1) | (grid > 3)):
            raise ValueError("clue values must be in 0..3 (-1 marks a blank).")
    blanks = np.nonzero(grid < 0)[0]
    if blanks.size == 0:
        raise ValueError("the clue set leaves no blank cell.")
    comp = _completions(sols, grid)
    if comp.shape[0] == 0:
        raise ValueError("the clue set has no valid completion.")
    sparse = SparseJoint(comp[:, blanks], 4, int(blanks.size))

    def correct(tokens):
        t = np.asarray(tokens, dtype=np.int64).reshape(-1, blanks.size)
        g = np.broadcast_to(grid, (t.shape[0], 16)).copy()
        g[:, blanks] = t
        return sudoku_valid(g)

    return Task(f"sudoku4(blanks={blanks.size},K={comp.shape[0]})", sparse, correct, grid)


def _completions(sols: np.ndarray, grid: np.ndarray) -> np.ndarray:
    given = grid >= 0
    return sols[np.all(sols[:, given] == grid[given], axis=1)]


# ================================ measuring a sampler on a task =======================================
@dataclass(frozen=True)
class SamplerEval:
    """One point of an accuracy-versus-NFE curve: a sampler (denoiser x policy) measured on a task.

    ``nfe``: expected number of denoiser calls (steps that reveal a token); ``accuracy``: probability that
    ``task.correct`` accepts the generated sequence (1 - SER). Exact points (:func:`evaluate_sampler`) have
    ``n = 0``, zero standard errors and the decomposition of :class:`theory.dependence.ErrorDecomposition`
    (``kl`` = KL(q || p) of the sampler's law, ``model_error``, ``dependence``, ``bound`` = their sum,
    ``entropy_bound`` = sum H - max H); Monte-Carlo points (:func:`evaluate_sampler_mc`) have ``n`` samples,
    standard errors, and NaN for the exact-only fields.
    """

    nfe: float
    nfe_se: float
    accuracy: float
    accuracy_se: float
    n: int
    kl: float = float("nan")
    model_error: float = float("nan")
    dependence: float = float("nan")
    bound: float = float("nan")
    entropy_bound: float = float("nan")

    def as_dict(self) -> dict:
        """The fields as a flat dict (one CSV row), in the order above."""
        return dataclasses.asdict(self)


def evaluate_sampler(task: Task, policy, denoiser=None, *, joint: Joint | None = None) -> SamplerEval:
    """Exact accuracy, expected NFE, KL and error decomposition of ``denoiser`` x ``policy`` on ``task``.

    ``denoiser`` defaults to the task's exact one; the policy sees its marginals. ``joint``: the task's
    enumerated :class:`Joint` (default ``task.joint()``; pass it to reuse its cached exact denoiser across
    points). The law and the decomposition come from :func:`theory.dependence.error_decomposition` (for a
    deterministic policy ``kl == bound``); accuracy = sum of the law over the sequences ``task.correct``
    accepts (:meth:`Task.correct_table`). Needs (V+1)**L enumerable.
    """
    q = task.joint() if joint is None else joint
    if (q.vocab_size, q.length) != (task.vocab_size, task.length):
        raise ValueError(
            f"joint has (V, L) = ({q.vocab_size}, {q.length}), the task ({task.vocab_size}, {task.length})."
        )
    dec = error_decomposition(q, policy, denoiser=task.denoiser() if denoiser is None else denoiser)
    assert dec.law is not None  # error_decomposition always returns the law
    p = np.asarray(dec.law.probs)
    return SamplerEval(
        nfe=float(dec.expected_nfe),
        nfe_se=0.0,
        accuracy=float(p[task.correct_table()].sum()),
        accuracy_se=0.0,
        n=0,
        kl=float(dec.kl),
        model_error=float(dec.model_error),
        dependence=float(dec.dependence),
        bound=float(dec.bound),
        entropy_bound=float(dec.entropy_bound),
    )


def evaluate_sampler_mc(key, task: Task, policy, denoiser=None, *, num: int) -> SamplerEval:
    """Monte-Carlo accuracy and NFE of ``denoiser`` x ``policy`` on ``task`` from ``num`` samples.

    Draws with :func:`theory.sampling.sample` (``key``; same key, same numbers) and returns the means of
    the per-sample NFE and of ``task.correct`` with their standard errors (:func:`theory.metrics.mean_se`).
    Any L (the denoiser is asked only for the visited states).
    """
    s = sample(key, task.denoiser() if denoiser is None else denoiser, policy, num=num)
    nfe = mean_se(np.asarray(s.nfe, dtype=np.float64))
    acc = mean_se(np.asarray(task.correct(np.asarray(s.tokens)), dtype=np.float64))
    return SamplerEval(nfe=nfe.mean, nfe_se=nfe.se, accuracy=acc.mean, accuracy_se=acc.se, n=int(num))


__all__ = [
    "SamplerEval",
    "SparseJoint",
    "SupportDenoiser",
    "Task",
    "copy_pairs_task",
    "evaluate_sampler",
    "evaluate_sampler_mc",
    "markov_task",
    "sudoku_solutions",
    "sudoku_task",
    "sudoku_valid",
]
