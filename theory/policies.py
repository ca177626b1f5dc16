"""Reveal policies: which masked positions a sampling step unmasks.

A policy is a small frozen object with two faces that describe the same rule:

* ``select(key, state (L,), marginals (L, V), count) -> (L,) bool`` — one example, JAX-traceable,
  used (vmapped) by the Monte-Carlo sampler. ``count`` is the number of tokens the schedule asks for
  at this step (a traced int); only masked positions may be selected.
* ``reveal_distribution(states (B, L), marginals (B, L, V), counts (B,)) -> (parent (R,), subsets (R, L)
  bool, weights (R,))`` — numpy, the exact distribution over reveal sets for each input row, used by
  :func:`theory.sampling.exact_law`. Row r says: from input ``parent[r]`` reveal ``subsets[r]`` with
  probability ``weights[r]``; the weights of each parent sum to 1.

Attributes: ``uses_count`` (False for adaptive policies that choose how many tokens to reveal
themselves, e.g. fixed-k Top-k or entropy-bounded; the sampler then runs until no mask is left) and
``deterministic`` (the reveal set is a function of (state, marginals, count); the default
``reveal_distribution`` then calls ``select`` once per row).

Deterministic policies rank masked positions by a score (lower is revealed first) with ties broken
by position (stable sort), and reveal the first ``count``. To add a policy, subclass
:class:`ScorePolicy` and implement ``score``, or implement the two methods directly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from math import comb

import jax
import jax.numpy as jnp
import numpy as np

PROXIES = ("confidence", "margin", "entropy")


# ---- helpers --------------------------------------------------------------------------------------
def reveal_by_score(score, masked, count):
    """Reveal the ``count`` masked positions with the lowest score (ties by position). (L,) -> (L,) bool."""
    L = score.shape[-1]
    s = jnp.where(masked, score, jnp.inf)
    order = jnp.argsort(s, stable=True)  # (L,)
    rank = jnp.zeros((L,), jnp.int32).at[order].set(jnp.arange(L, dtype=jnp.int32))
    return masked & (rank < count)


def token_entropy(marginals):
    """Entropy in nats of each position's conditional, (..., L, V) -> (..., L)."""
    p = marginals
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def proxy_score(marginals, proxy: str):
    """Error proxy as a score where lower = more certain = revealed first. (L, V) -> (L,).

    confidence: -max_v p;  margin: -(top1 - top2);  entropy: H(p) in nats (BenHamu2025's proxies).
    """
    if proxy == "confidence":
        return -jnp.max(marginals, axis=-1)
    if proxy == "margin":
        top2 = jax.lax.top_k(marginals, 2)[0]
        return -(top2[..., 0] - top2[..., 1])
    if proxy == "entropy":
        return token_entropy(marginals)
    raise ValueError(f"unknown proxy {proxy!r}; choose one of {PROXIES}.")


def _check_proxy(proxy):
    if proxy not in PROXIES:
        raise ValueError(f"unknown proxy {proxy!r}; choose one of {PROXIES}.")


# ---- base classes ----------------------------------------------------------------------------------
class Policy:
    """Base class: subclasses set ``uses_count``/``deterministic`` and implement ``select``."""

    uses_count: bool = True
    deterministic: bool = True

    def select(self, key, state, marginals, count):  # pragma: no cover - interface
        raise NotImplementedError

    def reveal_distribution(self, states, marginals, counts):
        """Default for deterministic policies: one reveal set per row, weight 1 (calls ``select``)."""
        if not self.deterministic:
            raise NotImplementedError(f"{type(self).__name__} is random: it must implement reveal_distribution.")
        states = np.asarray(states)
        marginals = np.asarray(marginals)
        B, L = states.shape
        V = marginals.shape[-1]
        # pad to a power of two (>= 8) so the jitted select compiles for few shapes
        b = max(8, 1 << (max(B, 1) - 1).bit_length())
        zs = np.full((b, L), V, dtype=np.int32)
        zs[:B] = states
        ms = np.full((b, L, V), 1.0 / V)
        ms[:B] = marginals
        cs = np.zeros(b, dtype=np.int32)
        cs[:B] = counts
        sel = np.asarray(_batched_select(self, jnp.asarray(zs), jnp.asarray(ms), jnp.asarray(cs)))[:B]
        subsets = sel & (states == V)
        return np.arange(B), subsets, np.ones(B)


@partial(jax.jit, static_argnames="policy")
def _batched_select(policy, states, marginals, counts):
    key = jax.random.PRNGKey(0)
    return jax.vmap(lambda s, m, c: policy.select(key, s, m, c))(states, marginals, counts)


@dataclass(frozen=True)
class ScorePolicy(Policy):
    """Deterministic policy revealing the ``count`` masked positions with the lowest ``score``."""

    def score(self, state, marginals):  # pragma: no cover - interface
        raise NotImplementedError

    def select(self, key, state, marginals, count):
        return reveal_by_score(self.score(state, marginals), state == marginals.shape[-1], count)


# ---- policies ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomOrder(Policy):
    """Reveal ``count`` masked positions chosen uniformly at random (the MDM default).

    With Bernoulli reveal (count ~ Binomial(#masked, p)) this is exactly "each masked token is
    revealed independently with probability p".
    """

    uses_count = True
    deterministic = False

    def select(self, key, state, marginals, count):
        u = jax.random.uniform(key, state.shape, dtype=jnp.float64)
        return reveal_by_score(u, state == marginals.shape[-1], count)

    def reveal_distribution(self, states, marginals, counts):
        states = np.asarray(states)
        counts = np.asarray(counts)
        V = np.asarray(marginals).shape[-1]
        B, L = states.shape
        masked = states == V
        k = masked.sum(1)
        parents, subsets, weights = [], [], []
        for kk, cc in sorted(set(zip(k.tolist(), np.minimum(counts, k).tolist()))):
            rows = np.nonzero((k == kk) & (np.minimum(counts, k) == cc))[0]
            pos = np.nonzero(masked[rows])[1].reshape(len(rows), kk)  # (b, k) masked positions, sorted
            combos = np.array(list(itertools.combinations(range(kk), cc)), dtype=np.int64).reshape(comb(kk, cc), cc)  # (r, c)
            r = combos.shape[0]
            sub = np.zeros((len(rows), r, L), dtype=bool)
            chosen = pos[:, combos]  # (b, r, c)
            bi = np.repeat(np.arange(len(rows)), r * cc)
            ri = np.tile(np.repeat(np.arange(r), cc), len(rows))
            sub[bi, ri, chosen.reshape(-1)] = True
            parents.append(np.repeat(rows, r))
            subsets.append(sub.reshape(-1, L))
            weights.append(np.full(len(rows) * r, 1.0 / comb(kk, cc)))
        return np.concatenate(parents), np.concatenate(subsets), np.concatenate(weights)


@dataclass(frozen=True)
class LeftToRight(ScorePolicy):
    """Reveal the leftmost ``count`` masked positions (semi-autoregressive order)."""

    def score(self, state, marginals):
        return jnp.arange(state.shape[-1], dtype=jnp.float64)


@dataclass(frozen=True)
class FixedOrder(ScorePolicy):
    """Reveal positions in the order ``perm`` (perm[0] first), ``count`` at a time."""

    perm: tuple

    def __post_init__(self):
        p = tuple(int(i) for i in self.perm)
        if sorted(p) != list(range(len(p))):
            raise ValueError(f"FixedOrder needs a permutation of 0..L-1, got {self.perm}.")
        object.__setattr__(self, "perm", p)

    def score(self, state, marginals):
        if state.shape[-1] != len(self.perm):
            raise ValueError(f"FixedOrder was built for L = {len(self.perm)}, used with L = {state.shape[-1]}.")
        rank = np.empty(len(self.perm))
        rank[list(self.perm)] = np.arange(len(self.perm))
        return jnp.asarray(rank, dtype=jnp.float64)


@dataclass(frozen=True)
class TopK(ScorePolicy):
    """Reveal the masked positions the model is surest of, by ``proxy`` (confidence, margin, entropy).

    ``k=None``: reveal as many as the schedule asks for at each step (LLaDA's low-confidence
    remasking). ``k`` an int: exactly ``min(k, #masked)`` per step, ignoring the schedule (BenHamu2025's
    Top-k baseline; runs until no mask is left, i.e. ceil(L / k) steps).
    """

    proxy: str = "confidence"
    k: int | None = None

    def __post_init__(self):
        _check_proxy(self.proxy)
        if self.k is not None and (isinstance(self.k, bool) or int(self.k) < 1):
            raise ValueError(f"TopK k must be a positive int or None, got {self.k}.")

    @property
    def uses_count(self):  # type: ignore[override]
        return self.k is None

    def score(self, state, marginals):
        return proxy_score(marginals, self.proxy)

    def select(self, key, state, marginals, count):
        c = count if self.k is None else self.k
        return super().select(key, state, marginals, c)


def check_policy(policy) -> None:
    for attr in ("select", "reveal_distribution"):
        if not callable(getattr(policy, attr, None)):
            raise TypeError(f"a policy needs a `{attr}` method; {type(policy).__name__} has none (see theory.policies).")
