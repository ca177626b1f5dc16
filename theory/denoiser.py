"""Denoisers: anything with ``marginals(states) -> (B, L, V)``.

A denoiser maps a batch of partial states ``states`` (B, L) with entries in {0..V} (V = mask) to the
per-position conditional marginals (B, L, V). Conventions shared by every denoiser in the toolkit
(exact, tabulated, Markov oracle, learned):

* masked position i: a probability vector over the V clean tokens (never the mask);
* visible position i: the one-hot vector of its token ("carry-over unmasking");
* ``marginals`` must be a JAX-traceable function of an integer array, so the Monte-Carlo sampler
  can ``jit``/``vmap`` through it.

Optional faces the Monte-Carlo sampler (:func:`theory.sampling.sample`) uses when a denoiser has them:
``marginals_at(states, positions (B, K)) -> (B, K, V)``, the conditionals at K positions only (the ranked path
draws from it only if the denoiser also sets ``exact_marginals_at = True``: its rows are the full marginals' rows
bit for bit in any program); and the
incremental face of the static-order path, ``init_cache(states) -> cache`` (a pytree of batch-leading
arrays), ``marginals_at_cached(cache, states, positions)`` (equal to ``marginals_at``) and
``update_cache(cache, states, positions, valid)`` (the cache of ``states``, reached from the cached state by
revealing ``positions[valid]``), so that a step need not look at the whole state again (the Markov oracle
keeps its packed visibility mask and possibility flag, :mod:`synthetic.chain_oracle`); and the scores face of
the ranked path (Top-k, EB), ``scores(states, proxy) -> (B, L)``, bit for bit
``theory.policies.proxy_score(marginals(states), proxy)`` for every proxy, without storing the (B, L, V)
marginals (the Markov oracle computes them value by value); and the ranked face, on top of the scores face:
``has_rank_step`` (true where it runs), ``rank_session(proxy)`` (a context manager around a sampler call,
yielding a key) and ``rank_step(states, proxy, K, key) -> (cpos (B, K) int32, cscore (B, K))``, each row's K
lowest positions by (score, position), visible positions counting as +inf, and their scores, the ``scores``
face's bits (the Markov oracle's runs on the host through numba, :mod:`synthetic.chain_host`; the sampler uses
it only unsharded, and the scores face for the rare full-sort fallback step).

The exact denoiser of a joint q uses the table of *cylinder sums* C over (V+1)**L,
C[z] = sum of q(x) over the sequences x consistent with z (agreeing on z's visible positions). It is
L tensor contractions away from q: extend each axis of the (V,)*L table by its sum. Then for a masked
position i, q(x_i = v | z) = C[z with z_i := v] / C[z], an index shift of (v - V) * (V+1)**(L-1-i).
States with C[z] = 0 (impossible under q) get the uniform distribution 1/V at masked positions: a
documented, finite answer, the same in every exact denoiser of the toolkit. With the exact denoiser a
sampler started from the all-mask state reaches them only through a parallel reveal: with one token per
step (any policy), with values drawn jointly from q, or when q has full support, every reached state has
C[z] > 0; revealing several tokens with independently drawn values can produce a jointly impossible state
(q uniform on {000, 111}, counts [2, 1]: probability 1/2). Impossible states are absorbing
(C[child] <= C[z]), so the probability of ever reaching one equals the sampler's SER, and the convention
only decides which off-support sequences get that mass: KL(q || p), TV, SER and log TER (+inf once
SER > 0) do not depend on it; a correctness predicate accepting off-support sequences does. See
tests/test_impossible_states.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from .joint import Joint
from .pytree import register_dataclass
from .states import all_states, strides
from .validation import SCALABLE_HINT, as_f64, check_size, require_x64


@runtime_checkable
class Denoiser(Protocol):
    """Protocol: ``vocab_size``, ``length`` and ``marginals(states (B, L) int) -> (B, L, V) float``."""

    vocab_size: int
    length: int

    def marginals(self, states) -> jax.Array: ...


def cylinder_bytes(vocab_size: int, length: int) -> int:
    return 8 * (vocab_size + 1) ** length


def cylinder_sums(joint: Joint, max_bytes: float | None = None) -> jax.Array:
    """C over (V+1)**L (flat, row-major): C[z] = sum_{x consistent with z} q(x)."""
    require_x64("cylinder_sums")
    V, L = joint.vocab_size, joint.length
    check_size(cylinder_bytes(V, L), f"The cylinder-sum table over (V+1)**L = {V + 1}**{L}", max_bytes, SCALABLE_HINT)
    return _cylinder(joint.probs, V, L)


@partial(jax.jit, static_argnames=("V", "L"))
def _cylinder(probs, V, L):
    t = probs.reshape((V,) * L)
    for ax in range(L):
        t = jnp.concatenate([t, t.sum(axis=ax, keepdims=True)], axis=ax)  # axis ax: V -> V+1
    return t.reshape(-1)


def _masked_onehot(states, vocab_size: int):
    masked = states == vocab_size  # (B, L)
    onehot = jax.nn.one_hot(jnp.where(masked, 0, states), vocab_size, dtype=jnp.float64)  # (B, L, V)
    return masked, onehot


@partial(jax.jit, static_argnames=("V", "L"))
def _exact_marginals(cyl, states, V, L):
    st = jnp.asarray(strides(V + 1, L))  # (L,)
    idx = states.astype(jnp.int64) @ st  # (B,)
    den = cyl[idx]  # (B,)
    shift = (jnp.arange(V)[None, None, :] - states[:, :, None]) * st[None, :, None]  # (B, L, V)
    num = cyl[idx[:, None, None] + shift]  # (B, L, V); meaningful where masked
    masked, onehot = _masked_onehot(states, V)
    ok = den[:, None, None] > 0
    cond = jnp.where(ok, num / jnp.where(ok, den[:, None, None], 1.0), 1.0 / V)
    return jnp.where(masked[..., None], cond, onehot)


@register_dataclass(data_fields=("cyl",), drop_fields=("joint",))
@dataclass(frozen=True, eq=False)
class ExactDenoiser:
    """The exact conditionals q(x_i = v | visible part of z) of a Joint, via cylinder sums."""

    joint: Joint
    cyl: jax.Array  # ((V+1)**L,)
    vocab_size: int
    length: int

    def marginals(self, states) -> jax.Array:
        """(B, L) partial states -> (B, L, V) exact conditionals (one-hot at visible positions)."""
        return _exact_marginals(self.cyl, jnp.asarray(states), self.vocab_size, self.length)

    def state_prob(self, states) -> jax.Array:
        """C[z] = q(visible part of z), shape (B,)."""
        st = jnp.asarray(strides(self.vocab_size + 1, self.length))
        return self.cyl[jnp.asarray(states).astype(jnp.int64) @ st]

    def table(self, max_bytes: float | None = None) -> jax.Array:
        """Conditionals of every partial state, shape ((V+1)**L, L, V)."""
        V, L = self.vocab_size, self.length
        check_size(
            8 * (V + 1) ** L * L * V,
            f"The denoiser table over (V+1)**L = {V + 1}**{L} states",
            max_bytes,
            SCALABLE_HINT + "; or call .marginals(states) on the states you need",
        )
        return self.marginals(jnp.asarray(all_states(V, L)))


def exact_denoiser(joint: Joint, max_bytes: float | None = None) -> ExactDenoiser:
    """Build the exact denoiser of ``joint`` (cost: one (V+1)**L table)."""
    if not isinstance(joint, Joint):
        raise TypeError(f"exact_denoiser needs a theory.joint.Joint, got {type(joint).__name__}.")
    cached = joint.__dict__.get("_exact_denoiser")
    if cached is None:
        cached = ExactDenoiser(joint, cylinder_sums(joint, max_bytes), joint.vocab_size, joint.length)
        object.__setattr__(joint, "_exact_denoiser", cached)  # a Joint is immutable: cache its denoiser
    return cached


def denoiser_table(joint: Joint, max_bytes: float | None = None) -> jax.Array:
    """Exact conditionals for all (V+1)**L partial states at once, shape ((V+1)**L, L, V)."""
    return exact_denoiser(joint, max_bytes).table(max_bytes)


@partial(jax.jit, static_argnames=("V", "L"))
def _tabular_marginals(table, states, V, L):
    idx = states.astype(jnp.int64) @ jnp.asarray(strides(V + 1, L))
    masked, onehot = _masked_onehot(states, V)
    return jnp.where(masked[..., None], table[idx], onehot)


@register_dataclass(data_fields=("table",))
@dataclass(frozen=True, eq=False)
class TabularDenoiser:
    """A denoiser given as a table ((V+1)**L, L, V) of conditionals (e.g. a perturbed exact one).

    Masked rows must be probability vectors; visible rows are replaced by one-hots on lookup.
    """

    table: jax.Array
    vocab_size: int
    length: int

    def __init__(self, table, vocab_size: int, length: int):
        t = as_f64(table, "TabularDenoiser.table")
        if t.shape != ((vocab_size + 1) ** length, length, vocab_size):
            raise ValueError(
                f"table must have shape ((V+1)**L, L, V) = {((vocab_size + 1) ** length, length, vocab_size)}, "
                f"got {t.shape}."
            )
        arr = np.asarray(t)
        if np.any(arr < 0) or np.any(np.abs(arr.sum(-1) - 1) > 1e-9):
            raise ValueError("every row of a TabularDenoiser table must be a probability vector over V tokens.")
        object.__setattr__(self, "table", t)
        object.__setattr__(self, "vocab_size", int(vocab_size))
        object.__setattr__(self, "length", int(length))

    def marginals(self, states) -> jax.Array:
        return _tabular_marginals(self.table, jnp.asarray(states), self.vocab_size, self.length)


@dataclass(frozen=True, eq=False)
class FunctionDenoiser:
    """Wrap a JAX function ``fn(states (B, L)) -> (B, L, V)`` as a Denoiser (visible rows forced one-hot)."""

    fn: Callable
    vocab_size: int
    length: int

    def marginals(self, states) -> jax.Array:
        states = jnp.asarray(states)
        out = self.fn(states)
        masked, onehot = _masked_onehot(states, self.vocab_size)
        return jnp.where(masked[..., None], out, onehot)


def check_denoiser(denoiser, vocab_size: int | None = None, length: int | None = None) -> None:
    """Raise TypeError/ValueError if ``denoiser`` does not follow the Denoiser protocol or sizes."""
    if not hasattr(denoiser, "marginals") or not callable(denoiser.marginals):
        raise TypeError(f"a denoiser needs a `marginals(states) -> (B, L, V)` method; got {type(denoiser).__name__}.")
    for name, want in (("vocab_size", vocab_size), ("length", length)):
        have = getattr(denoiser, name, None)
        if have is None:
            raise TypeError(f"a denoiser needs a `{name}` attribute; {type(denoiser).__name__} has none.")
        if want is not None and have != want:
            raise ValueError(f"denoiser.{name} = {have} but {want} was asked for.")


# ---- imperfect denoisers with a known error (learning-error experiments) ------------------------------
@partial(jax.jit, static_argnames=("V",))
def _smooth(m, states, eps, V):
    return jnp.where((states == V)[..., None], (1.0 - eps) * m + eps / V, m)


@register_dataclass(data_fields=("base", "eps"))
@dataclass(frozen=True, eq=False)
class SmoothedDenoiser:
    """p(x_i | z) = (1 - eps) base(x_i | z) + eps / V at masked positions (one-hot at visible ones)."""

    base: Denoiser
    eps: float
    vocab_size: int
    length: int

    def marginals(self, states) -> jax.Array:
        states = jnp.asarray(states)
        return _smooth(self.base.marginals(states), states, self.eps, self.vocab_size)


def smoothed(denoiser, eps: float) -> SmoothedDenoiser:
    """Mix a denoiser with the uniform law: p = (1 - eps) q + eps / V, eps in [0, 1).

    Its per-token error is bounded by :func:`smoothing_kl_bound` (eps_learning of Feng2025 when q is exact).
    """
    check_denoiser(denoiser)
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps}.")
    return SmoothedDenoiser(denoiser, float(eps), denoiser.vocab_size, denoiser.length)


def smoothing_kl_bound(eps: float) -> float:
    """Per-token KL(q || (1 - eps) q + eps u) <= -log(1 - eps), since p >= (1 - eps) q pointwise."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps}.")
    return float(-np.log1p(-eps))


def tempered(denoiser, temperature: float) -> FunctionDenoiser:
    """p proportional to q ** (1 / T) at masked positions (zeros stay zero); T < 1 is over-confident."""
    check_denoiser(denoiser)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")

    def fn(states):
        q = denoiser.marginals(states)
        logq = jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)) / temperature, -jnp.inf)
        return jax.nn.softmax(logq, axis=-1)

    return FunctionDenoiser(jax.jit(fn), denoiser.vocab_size, denoiser.length)
