"""A validated probability table over V**L (the data distribution q of a small MDM world).

A Joint is a Language (:mod:`theory.language`): ``denoiser()``, ``log_prob``, ``entropy``, ``sample``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .states import all_sequences, encode_sequence
from .validation import (
    PROB_TOL,
    SCALABLE_HINT,
    as_f64,
    check_size,
    check_vocab_length,
    human_bytes,
)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _sample_table(probs, key, num, V, L):
    u = jax.random.uniform(key, (num,), dtype=jnp.float64)
    cdf = jnp.cumsum(probs)
    idx = jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), V**L - 1)
    st = jnp.asarray(V ** np.arange(L - 1, -1, -1, dtype=np.int64))
    return ((idx[:, None] // st) % V).astype(jnp.int32)  # (num, L)


def joint_bytes(vocab_size: int, length: int) -> int:
    """Bytes of a float64 table over V**L."""
    return 8 * vocab_size**length


@dataclass(frozen=True, eq=False)
class Joint:
    """Probability table ``probs`` of shape (V**L,), row-major (position 0 most significant).

    Construction validates: V >= 2, L >= 1, float64, finite, non-negative, sums to 1 within 1e-9,
    and that the table fits the memory budget (``max_bytes``, default 8 GiB).
    """

    probs: jax.Array
    vocab_size: int
    length: int

    def __init__(self, probs, vocab_size: int, length: int, *, max_bytes: float | None = None, tol: float = PROB_TOL):
        V, L = check_vocab_length(vocab_size, length)
        check_size(joint_bytes(V, L), f"A joint table over V**L = {V}**{L}", max_bytes, SCALABLE_HINT)
        p = np.asarray(probs)
        if p.dtype.kind == "f" and p.dtype.itemsize < 8:
            raise TypeError(f"Joint probs have dtype {p.dtype}; pass float64.")
        if p.shape != (V**L,):
            raise ValueError(f"Joint probs must have shape (V**L,) = ({V**L},), got {p.shape}.")
        p = p.astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError("Joint probs contain NaN or infinite entries.")
        if np.any(p < 0):
            raise ValueError(f"Joint probs have negative entries (min {p.min():.3g}).")
        s = p.sum()
        if abs(s - 1.0) > tol:
            raise ValueError(f"Joint probs sum to {s!r}, not 1 (tolerance {tol:g}); normalise with p / p.sum().")
        object.__setattr__(self, "probs", as_f64(p, "Joint.probs"))
        object.__setattr__(self, "vocab_size", V)
        object.__setattr__(self, "length", L)

    @classmethod
    def from_unnormalized(cls, weights, vocab_size: int, length: int, **kw) -> Joint:
        """Normalise non-negative weights (V**L,) into a Joint."""
        w = np.asarray(weights, dtype=np.float64)
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite and non-negative.")
        total = w.sum()
        if total <= 0:
            raise ValueError("weights sum to 0: no sequence has positive probability.")
        return cls(w / total, vocab_size, length, **kw)

    @classmethod
    def from_support(cls, sequences, vocab_size: int, length: int, weights=None, **kw) -> Joint:
        """Uniform (or weighted) distribution over the listed sequences (K, L)."""
        seqs = np.asarray(sequences, dtype=np.int64).reshape(-1, length)
        if seqs.size and (seqs.min() < 0 or seqs.max() >= vocab_size):
            raise ValueError(f"sequences must have tokens in 0..{vocab_size - 1}.")
        w = np.ones(len(seqs)) if weights is None else np.asarray(weights, dtype=np.float64)
        table = np.zeros(vocab_size**length)
        np.add.at(table, encode_sequence(seqs, vocab_size), w)
        return cls.from_unnormalized(table, vocab_size, length, **kw)

    # ---- views -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.vocab_size**self.length

    def table(self) -> jax.Array:
        """The table as a tensor of shape (V,)*L."""
        return self.probs.reshape((self.vocab_size,) * self.length)

    def sequences(self) -> np.ndarray:
        """All sequences (V**L, L) in flat-index order."""
        return all_sequences(self.vocab_size, self.length)

    def support(self) -> np.ndarray:
        """Boolean (V**L,): q(x) > 0."""
        return np.asarray(self.probs) > 0

    # ---- the Language protocol (theory.language) --------------------------------------------------
    def denoiser(self, max_bytes: float | None = None):
        """The exact conditionals of q (cylinder sums over (V+1)**L, built once): an ExactDenoiser."""
        from .denoiser import exact_denoiser

        return exact_denoiser(self, max_bytes)

    def joint(self, max_bytes: float | None = None) -> Joint:
        """The enumerated table: the Joint itself (the :class:`theory.language.Enumerable` member)."""
        return self

    # ---- quantities --------------------------------------------------------------------------
    def entropy(self) -> float:
        """H(q) in nats."""
        p = self.probs
        return float(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))

    def marginals(self) -> jax.Array:
        """Per-position marginals, shape (L, V)."""
        t = self.table()
        L = self.length
        return jnp.stack([t.sum(axis=tuple(j for j in range(L) if j != i)) for i in range(L)])

    def log_prob(self, tokens) -> jax.Array:
        """log q(x) for sequences (..., L); -inf outside the support."""
        idx = encode_sequence(np.asarray(tokens, dtype=np.int64), self.vocab_size)
        p = self.probs[idx]
        return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)

    def sample(self, key, num: int) -> jax.Array:
        """Draw ``num`` exact samples (num, L) from q (float64 inverse-CDF)."""
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}.")
        return _sample_table(self.probs, key, int(num), self.vocab_size, self.length)

    def __repr__(self) -> str:
        return f"Joint(V={self.vocab_size}, L={self.length}, H={self.entropy():.4f} nats, {human_bytes(8 * self.size)})"
