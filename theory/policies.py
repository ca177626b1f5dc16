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

Optional third face, ``order(key, length) -> (L,) int32``: a permutation of the positions, for policies
whose reveal set is always the first ``count`` still-masked positions of an order fixed for the whole
run (drawn once per sample from ``key`` if random). The Monte-Carlo sampler then reveals
``order[r : r + count]`` (r = tokens revealed so far) instead of calling ``select`` at every step, and
asks the denoiser only for those positions. For :class:`RandomOrder` this is the same law (the
not-yet-revealed part of a uniform permutation is a uniform order of the masked positions, whatever
the counts); :class:`LeftToRight` and :class:`FixedOrder` are deterministic. Subclasses that change
``select`` or ``score`` must not inherit ``order`` (set ``order = None``).

Optional fourth face, the ranked fast path of the sampler: ``ranked`` (true), ``score(state, marginals)
-> (L,)`` (position-wise) and ``ranked_count(state, marginals, count, sorted_scores) -> ()`` (the rank
cutoff c: the step reveals the masked positions among the c lowest scores, ties by position).
:class:`TopK` and :class:`EntropyBounded` (entropy proxy) have it; the sampler then ranks only the K lowest
scores (:func:`rank_candidates`: float32 ``lax.top_k`` passes, exact by :func:`sort_keys`), and sorts all
integer keys and reads the reveal set off a threshold (:func:`lowest_by_score`) only where c is not settled
among them. Contract of ``ranked_count`` on that path: ``marginals`` is a zero (L, V) placeholder (read its
shape only: the sampler does not keep the (B, L, V) marginals for it); ``sorted_scores`` may be a prefix
(K,) of the sorted scores, padded with +inf past the exact entries, and c may depend on entries 0..c only
(c < the exact length settles it); a policy whose c never reads ``sorted_scores`` says so with
``ranked_uses_scores = False`` (then c <= the exact length settles it). Subclasses that change ``select``
or ``score`` must set ``ranked = False``.

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

from .pytree import register_dataclass
from .reductions import sum_last, sum_terms

PROXIES = ("confidence", "margin", "entropy")


# ---- helpers --------------------------------------------------------------------------------------
def reveal_by_score(score, masked, count):
    """Reveal the ``count`` masked positions with the lowest score (ties by position). (L,) -> (L,) bool."""
    L = score.shape[-1]
    s = jnp.where(masked, score, jnp.inf)
    order = jnp.argsort(s, stable=True)  # (L,)
    rank = jnp.zeros((L,), jnp.int32).at[order].set(jnp.arange(L, dtype=jnp.int32))
    return masked & (rank < count)


def sort_keys(x):
    """float64 -> uint64 keys whose unsigned order is ``lax.sort``'s float order (what ``jnp.argsort`` uses):
    -0.0 and 0.0 equal, every NaN after +inf. Integer sorts are several times faster than float64 ones on CPU."""
    x = jnp.where(x == 0, 0.0, x)  # -0.0 -> 0.0, as lax.sort canonicalises
    x = jnp.where(jnp.isnan(x), jnp.nan, x)  # one NaN bit pattern (positive: sorts last)
    b = jax.lax.bitcast_convert_type(x.astype(jnp.float64), jnp.uint64)
    sign = jnp.uint64(1 << 63)
    return jnp.where(b >= sign, ~b, b | sign)


def from_sort_keys(k):
    """Inverse of :func:`sort_keys` (with -0.0 read back as 0.0): uint64 -> float64."""
    sign = jnp.uint64(1 << 63)
    return jax.lax.bitcast_convert_type(jnp.where(k >= sign, k ^ sign, ~k), jnp.float64)


def lowest_by_score(keys, sorted_keys, count):
    """The ``count`` positions of lowest key, ties by position, without an argsort. Single example.

    ``keys`` (L,) uint64 (:func:`sort_keys` of the scores), ``sorted_keys`` (L,) = ``lax.sort(keys)`` (a
    one-operand integer sort: the fast one on CPU), ``count`` () int -> (L,) bool. With k* the count-th
    smallest key: every position with key < k*, then the first (by position) of those with key = k*.
    The same set as ranks < count in ``argsort(score, stable=True)`` (:func:`reveal_by_score`).
    """
    L = keys.shape[-1]
    c = jnp.clip(count, 0, L)
    kth = sorted_keys[jnp.maximum(c - 1, 0)]
    less = keys < kth
    eq = keys == kth
    take_eq = c - jnp.sum(less)
    return (c > 0) & (less | (eq & (jnp.cumsum(eq) <= take_eq)))


def float32_image(x):
    """A monotone float32 image of float64 scores (..., L): x <= y (``lax.sort``'s order, :func:`sort_keys`)
    implies image(x) <= image(y); NaN -> +inf (NaN sorts last), one zero (-0.0 -> 0.0)."""
    y = jnp.where(jnp.isnan(x), jnp.inf, x).astype(jnp.float32)
    return jnp.where(y == 0, jnp.float32(0), y)


#: Pass 2 of :func:`rank_candidates` orders the boundary float32 bin by key offsets up to this (clipped above):
#: a normal float32 bin holds at most 2**30 float64 values, so the offsets are exact there.
_OFFSET_LIMIT = 1 << 30


def rank_candidates(keys, K: int):
    """The K lowest scores of each row, exactly sorted, without a full sort: (cpos, ckeys, n_exact).

    ``keys`` (B, L) = :func:`sort_keys` of the float64 scores, 1 <= K <= L static. Returns ``cpos``
    (B, K) int32 candidate positions sorted by (key, position), ``ckeys`` (B, K) their keys and ``n_exact``
    (B,) int32: the first ``n_exact`` candidates are the first ``n_exact`` positions of the full order by
    (key, position), i.e. of ``argsort(score, stable=True)``; the later ones may not be.

    Two ``lax.top_k`` passes on float32 values (XLA:CPU's fast kernel; float64 top_k is a full sort), each
    a monotone non-decreasing image of the key order, so that every position whose image is below the K-th
    image is a candidate:

    1. :func:`float32_image` of the scores (read off the keys); T = its K-th lowest value; the boundary bin
       G = {image == T}.
    2. -1 below G, +inf above G, and in G the key's offset from G's smallest key (clipped at
       ``_OFFSET_LIMIT``) as the bits of a positive normal float32: exact for a normal bin, whose float64
       values are at most 2**30 consecutive keys. With T2 the K-th lowest of this image: if no position
       outside the candidates has image T2, or every position with image T2 has the same key (true ties:
       ``lax.top_k`` keeps the lowest positions among equal values, which is "ties by position"), the
       candidates are exactly the first K of the order; else only those strictly below T2 are
       (``n_exact`` < K: a zero, inf or NaN bin wider than the offsets).
    """
    umax = jnp.uint64(np.iinfo(np.uint64).max)
    s32 = float32_image(from_sort_keys(keys))  # off the keys: XLA then need not recompute the scores
    top, _ = jax.lax.top_k(-s32, K)
    T = -jnp.min(top, axis=-1, keepdims=True)  # a reduction, not a slice: XLA:CPU keeps its TopK kernel only
    # for a sort whose results are read as whole [:K] slices (top[..., -1:] would turn it into a full sort)
    G = s32 == T
    base = jnp.min(jnp.where(G, keys, umax), axis=-1, keepdims=True)
    off = jnp.minimum(keys - base, jnp.uint64(_OFFSET_LIMIT)).astype(jnp.uint32) + jnp.uint32(0x00800000)
    v = jnp.where(G, jax.lax.bitcast_convert_type(off, jnp.float32), jnp.where(s32 < T, -1.0, jnp.inf))
    top2, cand = jax.lax.top_k(-v.astype(jnp.float32), K)
    T2 = -jnp.min(top2, axis=-1, keepdims=True)
    n_le = jnp.sum(v <= T2, axis=-1, dtype=jnp.int32)
    n_lt = jnp.sum(v < T2, axis=-1, dtype=jnp.int32)
    group = v == T2
    kmin = jnp.min(jnp.where(group, keys, umax), axis=-1)
    kmax = jnp.max(jnp.where(group, keys, jnp.uint64(0)), axis=-1)
    n_exact = jnp.where((n_le <= K) | (kmin == kmax), K, n_lt)
    ckeys, cpos = jax.lax.sort(
        (jnp.take_along_axis(keys, cand, axis=-1), cand.astype(jnp.int32)), dimension=-1, num_keys=2
    )
    return cpos, ckeys, n_exact.astype(jnp.int32)


def _plogp(p):
    """p log p, 0 where p = 0 (elementwise)."""
    return jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)


def token_entropy(marginals):
    """Entropy in nats of each position's conditional, (..., L, V) -> (..., L); the V terms added left to right
    (:func:`theory.reductions.sum_last`), so :func:`planes_score` gives the same bits."""
    return -sum_last(_plogp(marginals))


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


def planes_score(planes, proxy: str):
    """:func:`proxy_score` from the V planes of the marginals, ``planes[v]`` = marginals[..., v], each (...,):
    the same bits as ``proxy_score(jnp.stack(planes, -1), proxy)`` for V <= :data:`theory.reductions.UNROLLED`
    (max is exact in any order; the entropy's terms are added left to right in both). For a denoiser that
    computes its conditionals plane by plane and never stores (..., L, V) (the Markov oracle's ``scores``)."""
    if proxy == "confidence":
        top = planes[0]
        for p in planes[1:]:
            top = jnp.maximum(top, p)
        return -top
    if proxy == "margin":  # the two largest values with multiplicity, as lax.top_k(., 2)
        top, second = planes[0], jnp.full_like(planes[0], -jnp.inf)
        for p in planes[1:]:
            second = jnp.maximum(second, jnp.minimum(top, p))
            top = jnp.maximum(top, p)
        return -(top - second)
    if proxy == "entropy":
        return -sum_terms([_plogp(p) for p in planes])
    raise ValueError(f"unknown proxy {proxy!r}; choose one of {PROXIES}.")


def _check_proxy(proxy):
    if proxy not in PROXIES:
        raise ValueError(f"unknown proxy {proxy!r}; choose one of {PROXIES}.")


# ---- pytree registration: equal policies share jit caches ----------------------------------------------
def register_policy(cls=None, *, data_fields: tuple = ()):
    """Register a frozen dataclass policy as a JAX pytree (class decorator, :func:`theory.pytree.register_dataclass`).

    ``data_fields`` become traced leaves (e.g. EntropyBounded's ``gamma``: one compilation serves every
    gamma); the other fields are static metadata compared by value, so equal policies share jit caches.
    The Monte-Carlo sampler passes a registered policy as a traced argument; an unregistered policy is
    passed as a static (hashable) one.
    """
    return register_dataclass(cls, data_fields=data_fields)


def pad_batch(states, marginals) -> tuple[np.ndarray, np.ndarray]:
    """Pad a batch of states (B, L) and marginals (B, L, V) to a power of two (>= 8) rows, so that a jitted,
    vmapped ``select`` compiles for few shapes (padding rows: all masked, uniform marginals)."""
    states = np.asarray(states)
    marginals = np.asarray(marginals)
    B, L = states.shape
    V = marginals.shape[-1]
    b = max(8, 1 << (max(B, 1) - 1).bit_length())
    zs = np.full((b, L), V, dtype=np.int32)
    zs[:B] = states
    ms = np.full((b, L, V), 1.0 / V)
    ms[:B] = marginals
    return zs, ms


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
        B = states.shape[0]
        zs, ms = pad_batch(states, marginals)
        b = zs.shape[0]
        cs = np.zeros(b, dtype=np.int32)
        cs[:B] = counts
        sel = np.asarray(_batched_select(self, jnp.asarray(zs), jnp.asarray(ms), jnp.asarray(cs)))[:B]
        subsets = sel & (states == ms.shape[-1])
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
@register_policy
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

    def order(self, key, length: int):
        """A uniform random permutation of the positions (revealed in this order), (L,) int32.

        One sort of 64-bit keys: random high bits with the position packed into the low
        ceil(log2 L) bits (so the sort needs no index payload and keys are distinct). Two positions
        tie in their random bits with probability <= L**2 / 2**(65 - ceil(log2 L)) per sequence
        (< 3e-9 at L = 4096; ties go by position), the same order as the float64 uniforms of
        ``select``. Several times faster on CPU than ``jax.random.permutation``.
        """
        nbits = max(1, int(np.ceil(np.log2(max(length, 2)))))
        low = np.uint64((1 << nbits) - 1)
        r = jax.random.bits(key, (length,), dtype=jnp.uint64)
        packed = (r & ~low) | jnp.arange(length, dtype=jnp.uint64)
        return (jax.lax.sort(packed) & low).astype(jnp.int32)

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
            combos = np.array(list(itertools.combinations(range(kk), cc)), dtype=np.int64).reshape(
                comb(kk, cc), cc
            )  # (r, c)
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


@register_policy
@dataclass(frozen=True)
class LeftToRight(ScorePolicy):
    """Reveal the leftmost ``count`` masked positions (semi-autoregressive order)."""

    def score(self, state, marginals):
        return jnp.arange(state.shape[-1], dtype=jnp.float64)

    def order(self, key, length: int):
        return jnp.arange(length, dtype=jnp.int32)


@register_policy
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

    def order(self, key, length: int):
        if length != len(self.perm):
            raise ValueError(f"FixedOrder was built for L = {len(self.perm)}, used with L = {length}.")
        return jnp.asarray(self.perm, dtype=jnp.int32)


@register_policy(data_fields=("k",))  # an int k is a traced leaf: one compilation serves every k
@dataclass(frozen=True)
class TopK(ScorePolicy):
    """Reveal the masked positions the model is surest of, by ``proxy`` (confidence, margin, entropy).

    ``k=None``: reveal as many as the schedule asks for at each step. This ranks by the *largest*
    probability, decided before the values are drawn; LLaDA's low-confidence remasking ranks by the
    probability of the token it *sampled* (the same only at temperature 0), which is
    ``theory.samplers.get_sampler("llada-low-confidence")``.
    ``k`` an int: exactly ``min(k, #masked)`` per step, ignoring the schedule (BenHamu2025's
    Top-k baseline; runs until no mask is left, i.e. ceil(L / k) steps).
    """

    proxy: str = "confidence"
    k: int | None = None

    def __post_init__(self):
        _check_proxy(self.proxy)
        if self.k is not None and (isinstance(self.k, bool) or int(self.k) < 1):
            raise ValueError(f"TopK k must be a positive int or None, got {self.k}.")

    @property
    def uses_count(self):
        return self.k is None

    def score(self, state, marginals):
        return proxy_score(marginals, self.proxy)

    def select(self, key, state, marginals, count):
        c = count if self.k is None else self.k
        return super().select(key, state, marginals, c)

    ranked = True  # the sampler's ranked fast path applies (see ranked_count)
    score_is_proxy = True  # score(state, marginals) is proxy_score(marginals, proxy): a denoiser's `scores` may give it
    ranked_uses_scores = False  # the cut is the count: it never reads the sorted scores

    def ranked_count(self, state, marginals, count, sorted_scores):
        """Ranked fast path of the sampler (:func:`theory.sampling.sample`): the rank cutoff c of this step,
        so that the reveal set is the masked positions among the c lowest scores (ties by position), the
        same set as ``select``. ``sorted_scores`` (L,): the scores with unmasked positions at +inf, sorted
        (unused here). Single example. Subclasses that change ``select`` or ``score`` must set
        ``ranked = False``."""
        return jnp.asarray(count if self.k is None else self.k, jnp.int32)


def check_policy(policy) -> None:
    for attr in ("select", "reveal_distribution"):
        if not callable(getattr(policy, attr, None)):
            raise TypeError(
                f"a policy needs a `{attr}` method; {type(policy).__name__} has none (see theory.policies)."
            )


# ---- issue 5: entropy-bounded unmasking (BenHamu2025) ---------------------------------------------
def eb_count(entropies_sorted, valid_sorted, gamma):
    """Number of tokens the EB rule reveals, given entropies in the proxy's order (best first).

    ``entropies_sorted`` (L,) nats, ``valid_sorted`` (L,) bool (masked positions; they must form a
    prefix). Returns the length of the largest prefix U with sum_U H - max_U H <= gamma (cumulative sum
    and running max along the order), at least 1 if any position is valid (BenHamu2025, EB rule).
    The excess is accumulated without cancellation: sum_U H - max_U H over a prefix grows by
    min(H_k, max of the earlier H) at each new token k (a sum of non-negative terms), so an entropy of
    1.3e-23 next to 0.0222 counts (cumsum - cummax rounded it away). JAX-traceable; single example.
    """
    h = jnp.where(valid_sorted, entropies_sorted, 0.0)
    prev_max = jnp.concatenate([jnp.zeros(1, h.dtype), jax.lax.cummax(h, axis=0)[:-1]])  # max of earlier H
    excess = jnp.cumsum(jnp.minimum(h, prev_max))  # (L,) sum_U H - max_U H of each prefix
    ok = valid_sorted & (excess <= gamma)
    n_ok = jnp.sum(jnp.cumprod(ok.astype(jnp.int32)))  # leading run of valid prefixes
    return jnp.where(jnp.any(valid_sorted), jnp.maximum(n_ok, 1), 0)


@register_policy(data_fields=("gamma",))
@dataclass(frozen=True)
class EntropyBounded(Policy):
    """BenHamu2025's entropy-bounded (EB) sampler: an adaptive, deterministic reveal rule.

    Sort the masked positions by ``proxy`` ("entropy", "confidence" or "margin"; best first, ties by
    position) and reveal the largest prefix U with  sum_{l in U} H_l - max_{l in U} H_l <= gamma,
    H_l the entropy in nats of the denoiser's marginal at l (running max along the proxy's order);
    always at least one token. ``gamma = 0``: one positive-entropy token per step plus the zero-entropy
    tokens around it in the order; ``gamma = inf``: every masked token at once. ``uses_count`` is False
    (the sampler runs until no mask is left; the schedule's count is ignored).

    The left side bounds the step's joint-dependence error (total correlation) sum H_l - H(x_U | z),
    see :mod:`theory.dependence`.
    """

    gamma: float
    proxy: str = "entropy"

    uses_count = False
    deterministic = True
    score_is_proxy = True  # score(state, marginals) is proxy_score(marginals, proxy): a denoiser's `scores` may give it

    def __post_init__(self):
        _check_proxy(self.proxy)
        if isinstance(self.gamma, bool):
            raise TypeError("EntropyBounded gamma must be a non-negative float (nats), got a bool.")
        try:
            g = float(self.gamma)
        except (TypeError, ValueError):
            raise TypeError(f"EntropyBounded gamma must be a non-negative float (nats), got {self.gamma!r}.") from None
        if not g >= 0:  # also refuses NaN
            raise ValueError(
                f"EntropyBounded gamma must be >= 0 (nats; use float('inf') to reveal all), got {self.gamma!r}."
            )
        object.__setattr__(self, "gamma", g)

    def count(self, state, marginals):
        """How many tokens this step reveals (traced int). (L,), (L, V) -> ()."""
        masked = state == marginals.shape[-1]
        s = jnp.where(masked, proxy_score(marginals, self.proxy), jnp.inf)
        order = jnp.argsort(s, stable=True)  # masked positions first, best proxy first
        return eb_count(token_entropy(marginals)[order], masked[order], self.gamma)

    def score(self, state, marginals):
        """The proxy (lower = revealed first), (L,), (L, V) -> (L,)."""
        return proxy_score(marginals, self.proxy)

    @property
    def ranked(self):
        """The sampler's ranked fast path applies with the entropy proxy (then the entropies in the proxy's
        order are the sorted scores, whatever the order among ties)."""
        return self.proxy == "entropy"

    def ranked_count(self, state, marginals, count, sorted_scores):
        """Ranked fast path (entropy proxy): :meth:`count` from the sorted entropies ``sorted_scores`` (L,)
        (unmasked positions at +inf, last), without the argsort. Single example."""
        masked = state == marginals.shape[-1]
        valid = jnp.arange(sorted_scores.shape[-1]) < jnp.sum(masked)
        return eb_count(jnp.where(valid, sorted_scores, 0.0), valid, self.gamma).astype(jnp.int32)

    def select(self, key, state, marginals, count):
        masked = state == marginals.shape[-1]
        score = proxy_score(marginals, self.proxy)
        return reveal_by_score(score, masked, self.count(state, marginals))

    def reveal_distribution(self, states, marginals, counts):
        """One reveal set per row (deterministic), computed by the jitted, vmapped ``select``."""
        states = np.asarray(states)
        V = np.asarray(marginals).shape[-1]
        marginals = np.asarray(marginals)
        B, chunk = states.shape[0], 1024
        sel = []
        for a in range(0, B, chunk):  # fixed chunk, padded to a power of two: few jit compilations
            st, mg = states[a : a + chunk], marginals[a : a + chunk]
            b = st.shape[0]
            pad = max(64, 1 << (b - 1).bit_length()) - b
            st = np.concatenate([st, np.full((pad,) + st.shape[1:], V, st.dtype)])
            mg = np.concatenate([mg, np.full((pad,) + mg.shape[1:], 1.0 / V)])
            sel.append(
                np.asarray(_eb_select_batch(self.proxy, jnp.float64(self.gamma), jnp.asarray(st), jnp.asarray(mg)))[:b]
            )
        sel = np.concatenate(sel) if sel else np.zeros(states.shape, bool)
        return np.arange(states.shape[0]), sel & (states == V), np.ones(states.shape[0])


@partial(jax.jit, static_argnums=0)
def _eb_select_batch(proxy, gamma, states, marginals):
    """Batched EB select with a traced gamma (one compilation per proxy and batch shape)."""

    def one(state, marg):
        masked = state == marg.shape[-1]
        score = proxy_score(marg, proxy)
        order = jnp.argsort(jnp.where(masked, score, jnp.inf), stable=True)
        n = eb_count(token_entropy(marg)[order], masked[order], gamma)
        return reveal_by_score(score, masked, n)

    return jax.vmap(one)(states, marginals)
