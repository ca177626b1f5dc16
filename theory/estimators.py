"""Jia2025's variance-reduction estimators: training hooks for synthetic.train, each with its exact variance.

An estimator is a t-law (how the masking rate is drawn, with its importance weight) and a mask law (how the
masks are drawn given the rate). ``est.t_sampler(eps)`` and ``est.mask_sampler()`` are the two hooks of
:func:`synthetic.train.train` / :func:`theory.elbo.per_example_loss`: the t-sampler returns the clipped rate
s = eps + (1 - eps) t (theory.elbo's loss then weights by 1/s) and its weight 1/p(t);
:func:`theory.variance.decompose` gives the exact mean, A, B, C (theory/variance.py).

* **standard**: t ~ U[0, 1], m ~ Bernoulli(s)^L.
* **P-POTS** [paper code]: t ~ p(t), weight 1/p(t). The variance-optimal density is p*(t) ∝ sqrt(m2(t)),
  m2(t) = E[loss^2 | t] (Cauchy-Schwarz: int m2/p >= (int sqrt(m2))^2, equality iff p ∝ sqrt(m2)), so
  the minimum total variance is (int_0^1 sqrt(m2(t)) dt)^2 - (E loss)^2 (:func:`cauchy_schwarz_minimum`).
  Samplable proposals are histograms in u = sqrt(t) (:class:`Proposal`): density p_u / (2 sqrt t), which
  behaves like t^(-1/2) at 0 exactly as p* does at eps = 0 (m2 ~ c_1/t), so P-POTS stays finite unclipped.
  The paper's parametric fit [papers.md; our reading]: a few pilot losses on a t-grid give the conditional
  variance and mean of the loss, fitted by v(t) = a t^r + b (1-t)^q and g(t) = A exp(k t^m); then
  p(t) ∝ sqrt(v(t) + g(t)^2) (= sqrt of the fitted second moment) (:func:`fit_proposal`).
* **MIRROR** [paper code]: one U_i ~ U[0, 1] per token; m1 = {U_i < s}, m2 = {U_i > 1 - s}; the loss is
  the average of the two (two denoiser calls). Each mask alone is Bernoulli(s)^L; per token the two
  indicators are antithetic.
* **StraTS** [recalled]: the batch's t are stratified, t_b ~ U[(b-1)/K, b/K) (K = batch size). We report
  K x Var(batch mean), which removes the between-strata variance of E[loss | t]; A and C are unchanged.
* **EMA** [recalled: a per-t-bin control variate]: loss - c(t) + E_t c(t) with c(t) the mean loss in
  t's bin (an EMA of it in practice; the exact analysis uses the ideal bin means). Same variance as
  StraTS over the same bins (both remove Var_bins E[est | bin]). A baseline on the loss value does not
  change the gradient: as a gradient estimator EMA needs a gradient baseline (the exact analysis of a
  gradient table applies the ideal per-bin gradient baseline; synthetic.train has no such hook).
* **ISAD** [recalled: token-level importance sampling of the mask]: each token masked with a rate
  r(s) (common or per position) instead of s, weight = likelihood ratio prod_i (s/r)^{m_i}
  ((1-s)/(1-r))^{1-m_i}. :func:`optimal_token_rate` gives the common rate minimising E[est^2 | s]
  (r*(0) = 1/L > 0: finite variance at eps = 0). The hook returns (mask, weight): synthetic.train
  multiplies the example weight by it.
* **P-POTS + MIRROR**: p* of the MIRROR estimator's m2 with MIRROR masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from .variance import (
    BernoulliMask,
    MomentTables,
    UniformT,
    _coefficients,
    bernoulli_probs,
    check_eps,
    decompose,
    quadrature,
    rate,
)


# ================================ t-laws ==============================================================
class Proposal:
    """A t-density that is a histogram in u = sqrt(t): bin b = [e_b, e_{b+1}) of u has probability probs[b].

    p(t) = probs[b] / (e_{b+1} - e_b) / (2 sqrt t). ``probs`` must be > 0 and sum to 1 (a proposal that
    vanishes where the loss does not is biased). Build one from any positive function with
    :meth:`from_function`.
    """

    name = "proposal"
    finite_at_zero = True

    def __init__(self, edges, probs):
        e = np.asarray(edges, dtype=np.float64)
        p = np.asarray(probs, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or e[0] != 0.0 or e[-1] != 1.0 or np.any(np.diff(e) <= 0):
            raise ValueError("Proposal edges must increase strictly from 0 to 1 (they are u = sqrt(t) values).")
        if p.shape != (e.size - 1,):
            raise ValueError(f"Proposal needs one probability per bin: {e.size - 1} bins, got {p.shape}.")
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError("Proposal probabilities must be finite and >= 0.")
        if abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(
                f"the proposal does not integrate to one (bin probabilities sum to {p.sum():.12g}); normalise "
                "it, or build it with Proposal.from_function(f) (which normalises)."
            )
        if np.any(p == 0):
            raise ValueError(
                "the proposal vanishes on a bin, where the loss does not (E[loss^2 | t] > 0 for every t in (0, 1] "
                "unless the loss is identically 0): the importance-weighted estimator would be biased."
            )
        self.edges, self.probs = e, p / p.sum()
        self.density_u = self.probs / np.diff(e)

    def pdf(self, t):
        u = np.sqrt(np.asarray(t, dtype=np.float64))
        b = np.clip(np.searchsorted(self.edges, u, side="right") - 1, 0, self.probs.size - 1)
        return self.density_u[b] / (2.0 * u)

    def breakpoints_t(self):
        return tuple(self.edges[1:-1] ** 2)

    @classmethod
    def from_function(cls, f: Callable, edges=None, eps: float = 0.0, bins: int = 128) -> Proposal:
        """The histogram (in u) of the normalised density ∝ f(t): bin probabilities int_bin f dt (quadrature).

        ``edges`` default: ``bins`` bins, half uniform in u and half geometric toward u = sqrt(eps)/8.
        """
        e = default_edges(eps, bins) if edges is None else np.asarray(edges, dtype=np.float64)
        quad = quadrature(eps, e[1:-1] ** 2)
        vals = np.asarray(f(quad.t), dtype=np.float64)
        if np.any(~np.isfinite(vals)) or np.any(vals < 0):
            raise ValueError("the proposal's function must be finite and >= 0 on (0, 1).")
        b = np.clip(np.searchsorted(e, np.sqrt(quad.t), side="right") - 1, 0, e.size - 2)
        mass = np.bincount(b, weights=quad.w * vals, minlength=e.size - 1)
        if mass.sum() <= 0:
            raise ValueError("the proposal's function integrates to 0.")
        return cls(e, mass / mass.sum())

    def sample(self, key, n: int):
        """(t (n,), weight 1/p(t) (n,)) in float64."""
        kb, ku = jax.random.split(key)
        cdf = jnp.asarray(np.cumsum(self.probs))
        b = jnp.minimum(jnp.searchsorted(cdf, jax.random.uniform(kb, (n,), jnp.float64) * cdf[-1]), self.probs.size - 1)
        lo, hi = jnp.asarray(self.edges[:-1])[b], jnp.asarray(self.edges[1:])[b]
        u = lo + (hi - lo) * (1.0 - jax.random.uniform(ku, (n,), jnp.float64))  # (lo, hi]: never u = 0
        return u * u, 2.0 * u / jnp.asarray(self.density_u)[b]


def default_edges(eps: float, bins: int = 128) -> np.ndarray:
    """u-edges: half the bins uniform on [0, 1], half geometric from sqrt(eps)/8 (or 1e-3) to 1."""
    lo = max(math.sqrt(eps) / 8.0, 1e-6) if eps > 0 else 1e-3
    e = np.concatenate([[0.0, 1.0], np.linspace(0, 1, bins // 2 + 1), np.geomspace(lo, 1.0, bins - bins // 2)])
    return np.unique(e)


class ContinuousProposal:
    """A t-density given by a function (exact analysis only, no sampler): e.g. p* itself or a Beta density.

    ``finite_at_zero``: whether int_0 dt / (t p(t)) < infinity (p ~ t^(a-1) with a < 1), i.e. whether the
    estimator keeps a finite variance at eps = 0. The density must integrate to one (checked).
    """

    name = "continuous proposal"

    def __init__(self, pdf: Callable, finite_at_zero: bool, breakpoints=(), eps: float = 0.0):
        self._pdf, self.finite_at_zero, self._bps = pdf, bool(finite_at_zero), tuple(breakpoints)
        quad = quadrature(eps, self._bps)
        z = float(quad.w @ np.asarray(pdf(quad.t), dtype=np.float64))
        if abs(z - 1.0) > 1e-6:
            raise ValueError(f"the proposal density integrates to {z:.9g}, not 1: normalise it.")

    def pdf(self, t):
        return np.asarray(self._pdf(np.asarray(t, dtype=np.float64)), dtype=np.float64)

    def breakpoints_t(self):
        return self._bps


class Stratified:
    """K strata of t ~ U[0, 1], one draw each per batch of K (the hook uses the batch size as K)."""

    name = "stratified"
    finite_at_zero = False

    def __init__(self, strata: int):
        if isinstance(strata, bool) or not isinstance(strata, (int, np.integer)) or strata < 1:
            raise ValueError(f"the number of strata must be a positive int, got {strata!r}.")
        self.K = int(strata)
        self.strata = np.linspace(0.0, 1.0, self.K + 1)

    def pdf(self, t):
        return np.ones_like(np.asarray(t, dtype=np.float64))

    def breakpoints_t(self):
        return tuple(self.strata[1:-1])


class BinnedControlVariate(Stratified):
    """t ~ U[0, 1] with a per-bin control variate over K equal bins (exact analysis: ideal bin means)."""

    name = "control variate"


# ================================ mask laws ==========================================================
def _mirror_joint(s, masks):
    """P(m1, m2 | s) for the MIRROR pair, (n, M, M): per token (in m1, in m2) has probabilities
    s <= 1/2: (0,0) 1-2s, (1,0) s, (0,1) s, (1,1) 0;  s > 1/2: (0,0) 0, (1,0) 1-s, (0,1) 1-s, (1,1) 2s-1."""
    s = np.asarray(s, dtype=np.float64)
    lo = s <= 0.5
    K = np.empty(s.shape + (2, 2))
    K[:, 0, 0] = np.where(lo, 1.0 - 2.0 * s, 0.0)
    K[:, 1, 0] = np.where(lo, s, 1.0 - s)
    K[:, 0, 1] = K[:, 1, 0]
    K[:, 1, 1] = np.where(lo, 0.0, 2.0 * s - 1.0)
    mi = masks.astype(np.int64)
    P = np.ones((s.size, masks.shape[0], masks.shape[0]))
    for i in range(masks.shape[1]):
        P *= K[:, mi[:, i][:, None], mi[:, i][None, :]]
    return P


class MirrorMask:
    """MIRROR: two antithetic masks from one uniform per token (two denoiser calls)."""

    name = "mirror"
    evaluations = 2

    def breakpoints_s(self):
        return (0.5,)

    def first(self, s, masks):
        s = np.asarray(s, dtype=np.float64)
        P = _mirror_joint(s, masks)
        coef = (P.sum(2) + P.sum(1)) / (2.0 * s[:, None])  # marginals of m1 and m2, each / s, averaged
        return np.where(masks.sum(1)[None] > 0, coef, 0.0)

    def second(self, s, tables: MomentTables):
        s = np.asarray(s, dtype=np.float64)
        P = _mirror_joint(s, tables.masks)
        G = tables.gram
        diag = (P.sum(2) + P.sum(1)) @ np.diag(G)
        cross = np.einsum("nab,ab->n", P, G)
        return (diag + 2.0 * cross) / (4.0 * s * s)

    def cross(self, s, tables: MomentTables):
        """E_x E[G(m1) G(m2) | s] / s^2 (n,): the product term of the pair."""
        s = np.asarray(s, dtype=np.float64)
        return np.einsum("nab,ab->n", _mirror_joint(s, tables.masks), tables.gram) / (s * s)

    def singular(self, tables):
        from .variance import S_TINY

        return float(S_TINY * self.second(np.array([S_TINY]), tables)[0])

    def sampler(self):
        def mask_sampler(key, t, shape):
            u = jax.random.uniform(key, shape, dtype=jnp.float32)  # (B, L): one uniform per token
            s = t.astype(jnp.float32)[:, None]
            return jnp.stack([u < s, u > 1.0 - s])  # (2, B, L)

        return mask_sampler


class TokenISMask:
    """ISAD: token i masked with rate r_i(s) (linear interpolation of a table over knots in s), weighted
    by the likelihood ratio of the mask. ``rates`` (K,) common or (K, L) per position, strictly in (0, 1)."""

    name = "token IS"
    evaluations = 1

    def __init__(self, knots, rates):
        k = np.asarray(knots, dtype=np.float64)
        r = np.asarray(rates, dtype=np.float64)
        if k.ndim != 1 or k.size < 2 or np.any(np.diff(k) <= 0) or k[0] > 0 or k[-1] < 1:
            raise ValueError("the rate table's knots must increase strictly and cover [0, 1].")
        if r.shape[0] != k.size or r.ndim not in (1, 2):
            raise ValueError(f"rates must be (K,) or (K, L) with K = {k.size} knots, got {r.shape}.")
        if not np.all((r > 0) & (r < 1)):
            raise ValueError(
                "token-level proposal rates must lie strictly in (0, 1): a rate of 0 or 1 never draws some masks "
                "that the loss does not vanish on, and the weighted estimator would be biased."
            )
        self.knots, self.rates = k, r

    def breakpoints_s(self):
        return tuple(self.knots[1:-1])

    def rate_of(self, s):
        s = np.asarray(s, dtype=np.float64)
        if self.rates.ndim == 1:
            return np.interp(s, self.knots, self.rates)
        return np.stack([np.interp(s, self.knots, self.rates[:, i]) for i in range(self.rates.shape[1])], -1)

    def _lr(self, s, masks):
        s = np.asarray(s, dtype=np.float64)
        r = self.rate_of(s)
        r = np.broadcast_to(r[:, None] if r.ndim == 1 else r, (s.size, masks.shape[1]))
        with np.errstate(divide="ignore"):
            lm = np.log(s)[:, None] - np.log(r)
            lu = np.log1p(-s)[:, None] - np.log1p(-r)
        log_lr = np.where(masks[None], lm[:, None, :], lu[:, None, :]).sum(-1)  # (n, M)
        return bernoulli_probs(r, masks), np.exp(log_lr)

    def first(self, s, masks):
        P_r, lr = self._lr(s, masks)
        return np.where(masks.sum(1)[None] > 0, P_r * lr / np.asarray(s)[:, None], 0.0)

    def second(self, s, tables: MomentTables):
        s = np.asarray(s, dtype=np.float64)
        P_r, lr = self._lr(s, tables.masks)
        return (P_r * lr * lr) @ np.diag(tables.gram) / (s * s)

    def singular(self, tables):
        from .variance import S_TINY

        return float(S_TINY * self.second(np.array([S_TINY]), tables)[0])

    def sampler(self):
        knots, rates = jnp.asarray(self.knots), jnp.asarray(self.rates)
        per_position = self.rates.ndim == 2

        def mask_sampler(key, t, shape):
            if len(shape) != 2:
                raise ValueError("token-level IS draws one mask per example: shape (B, L).")
            s = t.astype(jnp.float64)
            if per_position:
                r = jnp.stack([jnp.interp(s, knots, rates[:, i]) for i in range(shape[1])], -1)  # (B, L)
            else:
                r = jnp.broadcast_to(jnp.interp(s, knots, rates)[:, None], shape)
            m = jax.random.uniform(key, shape, dtype=jnp.float64) < r
            log_lr = jnp.where(m, jnp.log(s)[:, None] - jnp.log(r), jnp.log1p(-s)[:, None] - jnp.log1p(-r))
            return m, jnp.exp(jnp.sum(log_lr, -1)).astype(jnp.float32)  # (B, L), (B,)

        return mask_sampler


def _bernoulli_sampler():
    def mask_sampler(key, t, shape):
        return jax.random.uniform(key, shape, dtype=jnp.float32) < t.astype(jnp.float32)[:, None]

    return mask_sampler


# ================================ estimators =========================================================
@dataclass(frozen=True, eq=False)
class Estimator:
    """A t-law and a mask law; ``t_sampler(eps)`` and ``mask_sampler()`` are synthetic.train's hooks."""

    name: str
    t_law: Any
    mask_law: Any

    @property
    def evaluations(self) -> int:
        return int(self.mask_law.evaluations)

    def decompose(self, tables: MomentTables, eps: float = 0.0):
        return decompose(tables, self, eps)

    def t_sampler(self, eps: float = 0.0) -> Callable:
        return self._t_samplers(check_eps(eps))

    def mask_sampler(self) -> Callable:
        return self._mask_sampler

    @cached_property
    def _mask_sampler(self):
        return self.mask_law.sampler() if hasattr(self.mask_law, "sampler") else _bernoulli_sampler()

    def _t_samplers(self, eps: float):
        cache = self.__dict__.setdefault("_t_cache", {})
        if eps not in cache:
            cache[eps] = _make_t_sampler(self.t_law, eps)
        return cache[eps]


def _make_t_sampler(t_law, eps: float):
    """(key, B) -> (rate s (B,), weight 1/p(t) (B,)), float32 (as theory.elbo.uniform_t)."""
    if isinstance(t_law, Proposal):

        def t_sampler(key, batch):
            t, w = t_law.sample(key, batch)
            return rate(eps, t).astype(jnp.float32), w.astype(jnp.float32)

    elif isinstance(t_law, Stratified) and not isinstance(t_law, BinnedControlVariate):

        def t_sampler(key, batch):
            kp, ku = jax.random.split(key)
            b = jax.random.permutation(kp, batch)
            t = (b + 1.0 - jax.random.uniform(ku, (batch,), jnp.float64)) / batch  # stratum b, never t = 0
            return rate(eps, t).astype(jnp.float32), jnp.ones((batch,), jnp.float32)

    elif isinstance(t_law, UniformT | BinnedControlVariate):

        def t_sampler(key, batch):
            t = 1.0 - jax.random.uniform(key, (batch,), jnp.float64)
            return rate(eps, t).astype(jnp.float32), jnp.ones((batch,), jnp.float32)

    else:
        raise TypeError(f"{type(t_law).__name__} has no sampler (a ContinuousProposal is for exact analysis only).")
    return t_sampler


def standard() -> Estimator:
    return Estimator("standard", UniformT(), BernoulliMask())


def ppots(proposal, name: str = "P-POTS") -> Estimator:
    return Estimator(name, proposal, BernoulliMask())


def mirror() -> Estimator:
    return Estimator("MIRROR", UniformT(), MirrorMask())


def ppots_mirror(proposal, name: str = "P-POTS+MIRROR") -> Estimator:
    return Estimator(name, proposal, MirrorMask())


def strats(strata: int) -> Estimator:
    return Estimator("StraTS", Stratified(strata), BernoulliMask())


def ema(bins: int) -> Estimator:
    return Estimator("EMA", BinnedControlVariate(bins), BernoulliMask())


def isad(knots, rates) -> Estimator:
    return Estimator("ISAD", UniformT(), TokenISMask(knots, rates))


# ================================ optimal proposals =================================================
def _sqrt_m2(tables, eps, mask_law):
    return lambda t: np.sqrt(np.maximum(mask_law.second(rate(eps, np.asarray(t, dtype=np.float64)), tables), 0.0))


def cauchy_schwarz_minimum(tables: MomentTables, eps: float = 0.0, mask_law=None) -> dict:
    """Jia2025's P-POTS optimum: Z = int_0^1 sqrt(m2(t)) dt; the least total variance over all t-densities
    is Z^2 - (E est)^2, attained by p* = sqrt(m2)/Z. Returns Z, the minimum and p*'s exact decomposition."""
    eps = check_eps(eps)
    mask_law = mask_law or BernoulliMask()
    f = _sqrt_m2(tables, eps, mask_law)
    bps = [(b - eps) / (1.0 - eps) for b in mask_law.breakpoints_s() if eps < b < 1.0]
    quad = quadrature(eps, bps)
    Z = float(quad.w @ f(quad.t))
    if Z <= 0:  # the loss is identically 0: every proposal is optimal
        return {"Z": 0.0, "minimum": 0.0, "decomposition": decompose(tables, standard(), eps)}
    law = ContinuousProposal(lambda t: f(t) / Z, True, bps, eps)
    dec = decompose(tables, Estimator("P-POTS (p*)", law, mask_law), eps)
    mean2 = float(dec.extra["beta"] @ tables.mean_gram @ dec.extra["beta"])
    return {"Z": Z, "minimum": Z * Z - mean2, "decomposition": dec, "pdf": lambda t: f(t) / Z}


def optimal_proposal(tables: MomentTables, eps: float = 0.0, mask_law=None, bins: int = 128) -> Proposal:
    """The samplable histogram (in u = sqrt(t)) of p* ∝ sqrt(m2(t)) (uniform if the loss is identically 0)."""
    eps = check_eps(eps)
    f = _sqrt_m2(tables, eps, mask_law or BernoulliMask())
    e = default_edges(eps, bins)
    quad = quadrature(eps, e[1:-1] ** 2)
    if float(quad.w @ f(quad.t)) <= 0:
        return Proposal.from_function(lambda t: np.ones_like(t), e, eps)
    return Proposal.from_function(f, e, eps)


def optimal_token_rate(tables: MomentTables, eps: float = 0.0, knots=None) -> tuple[np.ndarray, np.ndarray]:
    """The common token rate r*(s) minimising E[est^2 | s] = sum_k P_s(k)^2 / P_r(k) D_k / s^2 (D_k =
    sum_{|m|=k} gram[m, m], P_s(k) = s^k (1-s)^(L-k) per mask), on ``knots`` in s; (knots, rates)."""
    check_eps(eps)
    L = tables.length
    D = tables.class_sums()
    k = np.arange(L + 1)
    knots = np.linspace(0.0, 1.0, 33) if knots is None else np.asarray(knots, dtype=np.float64)
    rates = []
    for s in knots:
        s_ = min(max(s, 1e-9), 1.0 - 1e-9)
        logPs = k * math.log(s_) + (L - k) * math.log1p(-s_)
        pos = D > 0

        def f(z, logPs=logPs, pos=pos):
            r = 1.0 / (1.0 + math.exp(-z))
            logPr = k * math.log(r) + (L - k) * math.log1p(-r)
            return float(np.log(np.sum(D[pos] * np.exp(2 * logPs[pos] - logPr[pos]))))

        if not pos.any():
            rates.append(min(max(s_, 1e-3), 1 - 1e-3))
            continue
        z = optimize.minimize_scalar(f, bounds=(-20.0, 20.0), method="bounded", options={"xatol": 1e-10}).x
        rates.append(1.0 / (1.0 + math.exp(-z)))
    return knots, np.clip(np.asarray(rates), 1e-9, 1 - 1e-9)


# ================================ the paper's parametric fit =========================================
def pilot_moments(key, sample_fn: Callable, log_probs: Callable, vocab_size: int, grid, per_point: int, eps=0.0):
    """Pilot losses on a t-grid (the paper estimates before training): for each t in ``grid`` draw
    ``per_point`` sequences (``sample_fn(key, n) -> (n, L)``, one call for the whole grid) and Bernoulli(s)
    masks (s = eps + (1 - eps) t); returns the sample mean and variance of the loss at each t, (G,) each."""
    from .elbo import per_example_loss
    from .schedules import linear

    grid = np.asarray(grid, dtype=np.float64)
    G = grid.size
    kx, km = jax.random.split(key)
    x = jnp.asarray(sample_fn(kx, G * per_point)).astype(jnp.int32)  # one call for the whole grid
    s = jnp.repeat(jnp.asarray(rate(eps, grid)), per_point)
    m = jax.random.uniform(km, x.shape, dtype=jnp.float64) < s[:, None]
    ell = np.asarray(per_example_loss(log_probs, x, s, jnp.ones_like(s), m, linear(), vocab_size), np.float64)
    ell = ell.reshape(G, per_point)
    return ell.mean(1), ell.var(1, ddof=1)


def _positive_points(t, y, what: str):
    """The (t, y) pairs with finite y > 0 (a pilot mean or variance can be exactly 0 at small t: no token was
    masked); the log-space fits need at least 3 of them."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0) & (t > 0) & (t <= 1)
    if ok.sum() < 3:
        raise ValueError(
            f"the fit needs at least 3 grid points with positive pilot {what} (got {int(ok.sum())}); draw more "
            "pilot samples per point or move the grid away from t = 0."
        )
    return t[ok], y[ok]


def fit_power(t, v):
    """Least squares in log space of v(t) = a t^r + b (1-t)^q (a, b >= 0) [Jia2025's variance family]; points
    with v = 0 are dropped."""
    t, v = _positive_points(t, v, "variances")

    def model(th, t):
        la, r, lb, q = th
        return np.exp(la) * t**r + np.exp(lb) * (1.0 - t) ** q

    th0 = np.array([math.log(v[0] * t[0] + 1e-12), -1.0, math.log(v.mean() + 1e-12), 1.0])
    res = optimize.least_squares(
        lambda th: np.log(model(th, t)) - np.log(v), th0, bounds=([-50, -3, -50, 0], [50, 3, 50, 20])
    )
    la, r, lb, q = res.x
    return {"a": math.exp(la), "r": r, "b": math.exp(lb), "q": q, "fn": lambda x: model(res.x, np.asarray(x))}


def fit_exp(t, g):
    """Least squares in log space of g(t) = A exp(k t^m) (A > 0, m > 0) [Jia2025's mean family]; points with
    g = 0 are dropped; |log A|, |k| <= 50, m in [e^-5, e^3]."""
    t, g = _positive_points(t, g, "means")

    def logmodel(th, t):
        lA, k, lm = th
        return lA + k * t ** math.exp(lm)

    res = optimize.least_squares(
        lambda th: logmodel(th, t) - np.log(g),
        np.array([math.log(g.mean()), 0.0, 0.0]),
        bounds=([-50.0, -50.0, -5.0], [50.0, 50.0, 3.0]),
    )
    lA, k, lm = res.x
    return {"A": math.exp(lA), "k": k, "m": math.exp(lm), "fn": lambda x: np.exp(logmodel(res.x, np.asarray(x)))}


def fit_proposal(grid, means, variances, eps: float = 0.0, bins: int = 128) -> tuple[Proposal, dict]:
    """P-POTS's fitted proposal: p(t) ∝ sqrt(v(t) + g(t)^2), v fitted to the pilot variances (power family),
    g to the pilot means (exponential family). Returns (Proposal, {"v": ..., "g": ...})."""
    v = fit_power(grid, variances)
    g = fit_exp(grid, means)
    prop = Proposal.from_function(lambda t: np.sqrt(v["fn"](t) + g["fn"](t) ** 2), eps=eps, bins=bins)
    return prop, {"v": v, "g": g}


# ================================ MIRROR's covariance ===============================================
def mirror_covariance(tables: MomentTables, eps: float = 0.0) -> float:
    """E_{x,t} Cov(loss(m1), loss(m2) | x, t) for MIRROR's pair under t ~ U[0, 1] (finite at every eps):
    A_MIRROR = A_standard / 2 + (this) / 2, so MIRROR beats two independent masks iff it is < 0."""
    eps = check_eps(eps)
    law = MirrorMask()
    quad = quadrature(eps, [(0.5 - eps) / (1.0 - eps)] if eps < 0.5 else [])
    s = rate(eps, quad.t)
    a = _coefficients(s, tables.masks)
    return float(quad.w @ (law.cross(s, tables) - np.einsum("nm,mk,nk->n", a, tables.gram, a)))


def exact_bin_means(tables: MomentTables, eps: float, bins: int) -> np.ndarray:
    """The ideal per-bin baselines c_b = E[loss | t in bin b] (loss tables only), (bins,)."""
    if tables.mean_vector is None:
        raise ValueError("bin means of the loss need loss tables (loss_moments).")
    edges = np.linspace(0, 1, bins + 1)
    quad = quadrature(check_eps(eps), edges[1:-1])
    a = _coefficients(rate(eps, quad.t), tables.masks)
    b = np.clip(np.searchsorted(edges, quad.t, side="right") - 1, 0, bins - 1)
    return np.array([(quad.w[b == k] @ a[b == k]) @ tables.mean_vector * bins for k in range(bins)])
