"""Jia2025: the exact variance of the MDM loss and its gradient (theory/variance.py) and the estimators
(theory/estimators.py).

* A, B, C of :func:`decompose` equal a plain law-of-total-variance over an explicit (x, t, mask) table
  (values and probabilities built here, independently: MIRROR's pair law by interval lengths, ISAD's
  likelihood ratio, per-example gradients by jax.grad) on random tables incl. the adversarial ``joints``;
* the quadrature equals the incomplete-beta closed form of the standard estimator; the mean is theory.elbo's
  ELBO / L; the unclipped 1/t weight diverges like c_1 log(1/eps) and which estimators stay finite;
* pinned cases derived by hand: the uniform denoiser (mean log V, B = C = 0, A and the P-POTS minimum in
  closed form, MIRROR's covariance), MIRROR's positive correlation (pointwise at L = 2, integrated at L = 3);
* every estimator is unbiased; P-POTS with p* attains the Cauchy-Schwarz minimum and no drawn proposal
  beats it; the hooks' Monte-Carlo variance matches the exact one within 5 standard errors;
* the paper's fitted families are recovered from noiseless curves; the pilot's means are unbiased;
* bad input raises.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from synthetic.models import init_denoiser
from theory import elbo, schedules
from theory import estimators as Es
from theory import variance as Vr
from theory.denoiser import FunctionDenoiser, TabularDenoiser, smoothed
from theory.joint import Joint

from conftest import assert_close
from strategies import joints, seeds

MAX_STATES = 4**4  # V = 2: L <= 5; V = 3: L <= 4; V = 4: L <= 3


def _random_tabular(q, seed, conc=1.0):
    V, L = q.vocab_size, q.length
    t = np.random.default_rng(seed).dirichlet(np.full(V, conc), size=((V + 1) ** L, L))
    t = np.maximum(t, 1e-12)
    return TabularDenoiser(t / t.sum(-1, keepdims=True), V, L)


def _uniform(V, L):
    return FunctionDenoiser(lambda s: jnp.full(s.shape + (V,), 1.0 / V), V, L)


@st.composite
def instances(draw, max_states=MAX_STATES):
    """(joint, denoiser, name): exact, a smoothed exact, or a random tabular denoiser (adversarial tables too)."""
    q = draw(joints(max_states=max_states))
    kind = draw(st.sampled_from(["exact", "smoothed", "random"]))
    if kind == "exact":
        return q, q.denoiser(), kind
    if kind == "smoothed":
        return q, smoothed(q.denoiser(), draw(st.sampled_from([0.01, 0.3]))), kind
    return q, _random_tabular(q, draw(seeds), draw(st.sampled_from([0.1, 1.0]))), kind


eps_st = st.sampled_from([0.0, 1e-6, 1e-3, 0.05, 0.4])


# ---------------------------------------------------------------- brute force (shares nothing with decompose)
def _mirror_pair_probs(s, masks):
    """P(m1, m2 | s) by interval lengths of {U < s} and {U > 1 - s} per token."""

    def length(a, b):  # |[a, b)| within [0, 1]
        return max(0.0, min(b, 1.0) - max(a, 0.0))

    both, only1 = length(1 - s, s), length(0, min(s, 1 - s))
    only2, neither = length(max(s, 1 - s), 1), length(s, 1 - s)
    table = {(1, 1): both, (1, 0): only1, (0, 1): only2, (0, 0): neither}
    M = len(masks)
    P = np.ones((M, M))
    for a in range(M):
        for b in range(M):
            for i in range(masks.shape[1]):
                P[a, b] *= table[(int(masks[a, i]), int(masks[b, i]))]
    return P


def _brute(S, px, t_nodes, t_probs, t_weight, eps, law, rates=None):
    """values[x, j, outcome] and probabilities for the standard / mirror / ISAD estimator on a discrete t-law."""
    N, M = S.shape[:2]
    masks = Vr.all_masks(int(round(math.log2(M))))
    L = masks.shape[1]
    k = masks.sum(1)
    vals, probs = [], []
    for t, w in zip(t_nodes, t_weight):
        s = eps + (1 - eps) * t
        if law == "standard":
            P = s**k * (1 - s) ** (L - k)
            vals.append(S * (w / s))
            probs.append(P)
        elif law == "isad":
            r = np.interp(s, *rates)
            P_r = r**k * (1 - r) ** (L - k)
            lr = (s / r) ** k * ((1 - s) / (1 - r)) ** (L - k)
            vals.append(S * (lr * w / s).reshape((1, M) + (1,) * (S.ndim - 2)))
            probs.append(P_r)
        else:  # mirror
            P = _mirror_pair_probs(s, masks)
            pair = (S[:, :, None] + S[:, None, :]) / 2.0  # (N, M, M, ...)
            vals.append(pair.reshape((N, M * M) + S.shape[2:]) * (w / s))
            probs.append(P.reshape(-1))
    v = np.stack(vals, 1)  # (N, T, outcomes, ...)
    pm = np.stack(probs, 0)[None]  # (1, T, outcomes)
    return Vr.law_of_total_variance(v, px, t_probs, pm)


class _DiscreteT:
    """A t-law on given nodes: probability pi_j at node j, as a density pi_j / w_j against the rule's weights."""

    finite_at_zero = True

    def __init__(self, nodes, pi, w):
        self.nodes, self.ratio = np.asarray(nodes), np.asarray(pi) / np.asarray(w)

    def pdf(self, t):
        return self.ratio[np.searchsorted(self.nodes, t)]

    def breakpoints_t(self):
        return ()


@settings(max_examples=12)
@given(inst=instances(), eps=eps_st, law=st.sampled_from(["standard", "mirror", "isad"]), data=st.data())
def test_decomposition_equals_brute_force(inst, eps, law, data):
    """decompose's A, B, C, mean and total (through the M x M statistics) equal the law of total variance on the
    explicit table of values, with a random discrete t-law and importance weights (P-POTS), to 1e-10."""
    q, den, _ = inst
    S = Vr.loss_table(q, den)
    n = data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(seeds))
    nodes = np.sort(rng.uniform(0.01, 1.0, n))
    w = rng.dirichlet(np.ones(n))  # the target t-law on the nodes
    pi = rng.dirichlet(np.ones(n)) if data.draw(st.booleans()) else w  # the proposal (P-POTS) or the target
    rates = (np.linspace(0, 1, 5), rng.uniform(0.05, 0.95, 5))
    tables = Vr.tables_from_values(S, q.probs, Vr.all_masks(q.length), q.vocab_size)
    mask_law = {"standard": Vr.BernoulliMask(), "mirror": Es.MirrorMask(), "isad": Es.TokenISMask(*rates)}[law]
    est = Es.Estimator(law, _DiscreteT(nodes, pi, w), mask_law)
    got = Vr.decompose(tables, est, eps, quad=Vr.Quadrature(nodes, w))
    want = _brute(S, q.probs, nodes, pi, w / pi, eps, law, rates)
    scale = max(want["total"], abs(want["mean"]) ** 2, 1e-300)
    for key in ("A", "B", "C", "total"):
        assert abs(getattr(got, key) - want[key]) <= 1e-10 * scale, (key, getattr(got, key), want[key])
    assert abs(got.mean - want["mean"]) <= 1e-10 * max(abs(want["mean"]), 1e-300)
    assert min(got.A, got.B, got.C) >= -1e-12 * scale


@pytest.fixture(scope="module")
def q34():
    from synthetic import languages

    return languages.dirichlet(jax.random.PRNGKey(0), 3, 4, 0.5)


def _per_example_grads(model, q):
    """grad_theta S(x, m) for every (x, m), (N, M, P): written here with jax.grad, one pair at a time (vmapped)."""
    import equinox as eqx
    from jax.flatten_util import ravel_pytree

    from synthetic.models import network_logits

    V, L = q.vocab_size, q.length
    net = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model.net)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def S(p, x, m):
        logits = network_logits(eqx.combine(unravel(p), static), jnp.where(m, V, x)[None])[0]
        lp = jax.nn.log_softmax(logits, -1)
        return jnp.sum(jnp.where(m, -lp[jnp.arange(L), x], 0.0)) / L

    X = np.indices((V,) * L).reshape(L, -1).T
    Ms = Vr.all_masks(L)
    xs = jnp.asarray(np.repeat(X, len(Ms), 0))
    ms = jnp.asarray(np.tile(Ms, (len(X), 1)))
    g = jax.jit(jax.vmap(jax.grad(S), in_axes=(None, 0, 0)))(flat, xs, ms)
    return np.asarray(g).reshape(len(X), len(Ms), -1)


@pytest.mark.parametrize("kind", ["lowrank", pytest.param("transformer", marks=pytest.mark.slow), "tabular"])
def test_gradient_decomposition_equals_brute_force(kind):
    """Trace of the gradient covariance: gradient_moments + decompose vs per-coordinate brute force (1e-10)."""
    from synthetic import languages

    q = languages.dirichlet(jax.random.PRNGKey(4), 2, 3, 0.5)
    model = init_denoiser(kind, 2, 3, key=jax.random.PRNGKey(3), d_model=8, num_layers=1, num_heads=2, d_ff=16, rank=2)
    G = _per_example_grads(model, q)
    tables = Vr.gradient_moments(q, model)
    nodes, w = np.array([0.05, 0.5, 0.9]), np.array([0.2, 0.3, 0.5])
    for law, mask_law in (("standard", Vr.BernoulliMask()), ("mirror", Es.MirrorMask())):
        est = Es.Estimator(law, _DiscreteT(nodes, w, w), mask_law)
        got = Vr.decompose(tables, est, 0.01, quad=Vr.Quadrature(nodes, w))
        want = _brute(G, q.probs, nodes, w, np.ones(3), 0.01, law)
        for key in ("A", "B", "C", "total"):
            assert_close(getattr(got, key), want[key], rtol=1e-10, err_msg=key)
        assert_close(got.mean, float(np.linalg.norm(want["mean"])), rtol=1e-10)


# ---------------------------------------------------------------- closed forms, ELBO, AR, divergence
@settings(max_examples=10)
@given(inst=instances(), eps=st.sampled_from([1e-9, 1e-4, 1e-2, 0.3]))
def test_quadrature_equals_closed_form(inst, eps):
    """Standard estimator: composite Gauss-Legendre in sqrt(t) == incomplete beta closed forms (1e-10)."""
    q, den, _ = inst
    tables = Vr.loss_moments(q, den)
    got, want = Vr.decompose(tables, eps=eps), Vr.standard_closed_form(tables, eps)
    scale = max(want.total, want.mean**2, 1e-300)
    for key in ("mean", "A", "B", "C", "total"):
        assert abs(getattr(got, key) - getattr(want, key)) <= 1e-10 * scale, key


def _mean_is_theory_elbo(inst):
    q, den, _ = inst
    tables = Vr.loss_moments(q, den)
    d = Vr.decompose(tables, eps=0.0)
    assert_close(d.mean, elbo.exact_evaluation(q)(den)["elbo_per_token"], rtol=1e-10, atol=1e-14)
    assert math.isfinite(d.B) and math.isfinite(d.C)
    assert (d.A == math.inf) == (Vr.divergence_coefficient(tables) > 1e-30 * np.trace(tables.gram))


@settings(max_examples=1)  # each shape compiles theory.elbo's exact evaluation (~1-2 s): more in the slow twin
@given(inst=instances())
def test_mean_is_theory_elbo(inst):
    """eps = 0: the exact mean is theory.elbo's ELBO / L (another code path); B, C finite; A infinite unless c_1 = 0."""
    _mean_is_theory_elbo(inst)


@pytest.mark.slow
@settings(max_examples=20)
@given(inst=instances())
def test_mean_is_theory_elbo_many(inst):
    _mean_is_theory_elbo(inst)


@settings(max_examples=8)
@given(inst=instances())
def test_ar_loss_has_only_the_data_term(inst):
    q, den, _ = inst
    r = Vr.ar_decomposition(q, den)
    v = Vr.ar_loss_table(q, den)
    p = np.asarray(q.probs)
    scale = float(p @ v**2)
    assert abs(r["A"]) <= 1e-13 * scale and abs(r["B"]) <= 1e-13 * scale  # zero up to rounding of E[v^2] - E[v]^2
    assert_close(r["C"], p @ v**2 - (p @ v) ** 2, rtol=1e-10, atol=1e-15)


def test_uniform_denoiser_pinned():
    """By hand: S(x, m) = |m| log V / L, so E[loss | x, s] = log V for every s (B = C = 0), E[loss^2 | s] =
    (log V)^2 (1 + (1-s)/(L s)), A = (log V)^2 / L * (log(1/eps) - (1 - eps)) / (1 - eps); P-POTS's minimum
    at eps = 0 is (log V)^2 [(1 + asinh(sqrt(L-1)) / sqrt(L (L-1)))^2 - 1]; MIRROR's E Cov = (log V)^2 / L *
    int (max(0, 2s-1) - s^2) / s^2 ds = (log V)^2 / L (2 log 2 - 2)."""
    for V, L in ((2, 1), (2, 3), (3, 4)):
        q = Joint(np.full(V**L, 1.0 / V**L), V, L)
        tables = Vr.loss_moments(q, _uniform(V, L))
        lv = math.log(V)
        for eps in (1e-7, 0.01, 0.5):
            d = Vr.decompose(tables, eps=eps)
            assert_close(d.mean, lv, rtol=1e-12)
            assert abs(d.B) < 1e-12 and abs(d.C) < 1e-12
            assert_close(d.A, lv**2 / L * (-math.log(eps) - (1 - eps)) / (1 - eps), rtol=1e-11)
        cs = Es.cauchy_schwarz_minimum(tables, 0.0)
        z = 1.0 + (math.asinh(math.sqrt(L - 1)) / math.sqrt(L * (L - 1)) if L > 1 else 1.0)
        assert_close(cs["minimum"], lv**2 * (z * z - 1.0), rtol=1e-10)
        assert_close(Es.mirror_covariance(tables, 0.0), lv**2 / L * (2 * math.log(2) - 2), rtol=1e-10)


def test_unclipped_weight_diverges_like_log_eps(q34):
    """A(eps) = c_1 log(1/eps) + O(1): the increment from eps = 1e-7 to 1e-10 is c_1 log(1000) up to O(1e-7);
    MIRROR's coefficient is c_1 / 2. At eps = 0: standard, MIRROR, StraTS, EMA infinite; P-POTS (histogram in
    sqrt t) and ISAD with r*(0) = 1/L finite."""
    for den in (q34.denoiser(), smoothed(q34.denoiser(), 0.3)):
        tables = Vr.loss_moments(q34, den)
        c1 = Vr.divergence_coefficient(tables)
        assert c1 > 0
        for est, coef in ((Es.standard(), 1.0), (Es.mirror(), 0.5), (Es.strats(8), 1.0), (Es.ema(4), 1.0)):
            a1, a2 = (est.decompose(tables, e).A for e in (1e-7, 1e-10))
            assert_close(a2 - a1, coef * c1 * math.log(1000.0), rtol=1e-5)
            d0 = est.decompose(tables, 0.0)
            assert d0.A == math.inf and d0.total == math.inf and math.isfinite(d0.B) and math.isfinite(d0.C)
        knots, r = Es.optimal_token_rate(tables, 0.0)
        assert_close(r[0], 1.0 / q34.length, rtol=1e-6)  # argmin_r D_1 / (r (1-r)^(L-1)) = 1/L
        for est in (Es.ppots(Es.optimal_proposal(tables, 0.0)), Es.isad(knots, r)):
            d0 = est.decompose(tables, 0.0)
            assert math.isfinite(d0.total)
            assert_close(d0.total, est.decompose(tables, 1e-12).total, rtol=1e-4)


# ---------------------------------------------------------------- estimators: unbiased, P-POTS optimal
def _all_estimators(tables, eps, rng):
    knots, rates = Es.optimal_token_rate(tables, eps, np.linspace(0, 1, 9))
    return [
        Es.standard(),
        Es.ppots(Es.optimal_proposal(tables, eps, bins=32)),
        Es.ppots(Es.Proposal(np.linspace(0, 1, 6), rng.dirichlet(np.ones(5))), "P-POTS (random)"),
        Es.mirror(),
        Es.strats(int(rng.integers(1, 9))),
        Es.ema(int(rng.integers(1, 9))),
        Es.isad(knots, rates),
        Es.isad(np.linspace(0, 1, 3), rng.uniform(0.05, 0.95, (3, tables.length))),
        Es.ppots_mirror(Es.optimal_proposal(tables, eps, Es.MirrorMask(), bins=32)),
    ]


@settings(max_examples=10)
@given(inst=instances(), eps=st.sampled_from([1e-6, 1e-3, 0.2]), seed=seeds)
def test_every_estimator_is_unbiased(inst, eps, seed):
    """Each estimator's exact mean (from its own t- and mask-law) equals the standard mean to 1e-10; MIRROR never
    does worse than one mask (A_MIRROR <= A) and its pattern term obeys A_MIRROR = A / 2 + E Cov / 2."""
    q, den, _ = inst
    tables = Vr.loss_moments(q, den)
    ref = Vr.decompose(tables, eps=eps)
    for est in _all_estimators(tables, eps, np.random.default_rng(seed)):
        d = est.decompose(tables, eps)
        assert abs(d.mean - ref.mean) <= 1e-10 * max(abs(ref.mean), 1e-300), est.name
        assert_close(d.A + d.B + d.C, d.total, rtol=1e-10, atol=1e-300)
        assert d.C == pytest.approx(ref.C, rel=1e-9, abs=1e-14)  # the data term is the estimator's invariant
    mir = Es.mirror().decompose(tables, eps)
    assert mir.A <= ref.A * (1 + 1e-12) + 1e-300
    assert_close(mir.A, ref.A / 2 + Es.mirror_covariance(tables, eps) / 2, rtol=1e-9, atol=1e-14)


@settings(max_examples=8)
@given(inst=instances(), eps=st.sampled_from([0.0, 1e-3, 0.1]), seed=seeds)
def test_ppots_attains_cauchy_schwarz_and_nothing_beats_it(inst, eps, seed):
    """p* ∝ sqrt(m2) attains (int sqrt m2)^2 - mean^2; its histogram comes within 1%; random histograms, Beta
    densities and the uniform law never go below it (relative slack 1e-10)."""
    q, den, _ = inst
    tables = Vr.loss_moments(q, den)
    for law in (None, Es.MirrorMask()):
        cs = Es.cauchy_schwarz_minimum(tables, eps, law)
        low = cs["minimum"]
        assert_close(cs["decomposition"].total, low, rtol=1e-10, atol=1e-300)
        rng = np.random.default_rng(seed)
        hist = Es.Estimator("p* hist", Es.optimal_proposal(tables, eps, law), law or Vr.BernoulliMask())
        h = hist.decompose(tables, eps).total
        assert low * (1 - 1e-10) - 1e-300 <= h <= low * 1.01 + 1e-300
        drawn = [Es.Proposal(np.sqrt(np.linspace(0, 1, 9)), rng.dirichlet(np.ones(8))), Vr.UniformT()]
        for a in (0.5, 1.0):  # Beta(1/2, b) ~ t^(-1/2) at 0 (finite unclipped); Beta(1, b) bounded (infinite)
            b = float(rng.integers(1, 4))  # integer b: no kink at t = 1
            drawn.append(Es.ContinuousProposal(lambda t, a=a, b=b: stats.beta.pdf(t, a, b), a < 1, (), eps))
        for tl in drawn:
            tot = Es.Estimator("drawn", tl, law or Vr.BernoulliMask()).decompose(tables, eps).total
            assert tot >= low * (1 - 1e-10) - 1e-300


def test_ema_equals_strats_and_bin_means(q34):
    """The ideal per-bin control variate and stratification over the same bins remove the same amount,
    Var_bins E[loss | bin]; the bin means average to the mean."""
    tables = Vr.loss_moments(q34, smoothed(q34.denoiser(), 0.1))
    for K in (1, 4, 16):
        e, s = Es.ema(K).decompose(tables, 1e-3), Es.strats(K).decompose(tables, 1e-3)
        assert_close(e.total, s.total, rtol=1e-12)
        c = Es.exact_bin_means(tables, 1e-3, K)
        assert_close(c.mean(), e.mean, rtol=1e-12)
        ref = Vr.decompose(tables, eps=1e-3)
        assert_close(ref.B - e.B, np.mean(c**2) - e.mean**2, rtol=1e-9)


# ---------------------------------------------------------------- MIRROR: what always holds, counter-examples
@settings(max_examples=15)
@given(L=st.integers(1, 4), seed=seeds, s=st.floats(0.01, 0.99))
def test_mirror_monotone_loss_is_antithetic(L, seed, s):
    """Harris' inequality: if S(m) is increasing in the mask, m1 (decreasing in U) and m2 (increasing in U)
    give Cov(loss1, loss2 | s) <= 0 at every s."""
    rng = np.random.default_rng(seed)
    masks = Vr.all_masks(L)
    w = rng.exponential(size=L)
    g = np.cumsum(rng.exponential(size=L + 1))  # increasing in |m|
    S = (masks @ w + g[masks.sum(1)] - g[0])[None]  # increasing under inclusion, S(empty) = 0
    tables = Vr.tables_from_values(S, [1.0], masks, 2)
    law = Es.MirrorMask()
    a = Vr._coefficients(np.array([s]), masks)[0]
    cov = law.cross(np.array([s]), tables)[0] - a @ tables.gram @ a
    assert cov <= 1e-12 * max(1.0, float(S.max()) ** 2 / s**2)


def test_mirror_positive_correlation_pinned():
    """Counter-examples to 'MIRROR's copies are negatively correlated' (derived by hand).

    (i) Pointwise, L = 2, q = point mass, S({0}) = S({1}) = a, S({0,1}) = 0 (a denoiser that is right with no
    context and wrong with one visible token): Cov(s) = a^2 (2 - 4 (1-s)^2) for s <= 1/2 and 2 a^2 (1-s)^2
    (1/s^2 - 2) above, > 0 for s in (1 - 1/sqrt 2, 1/sqrt 2); integrated over U[0, 1] it is a^2 (8/3 - 4 log 2) < 0.
    (ii) Integrated, L = 3, S({0}) = 1, S({1,2}) = 3 (a complementary pair), else 0: E_t Cov = 12.7 - 18 log 2
    = 0.2234 > 0, so A_MIRROR > A / 2: worse than two independent masks. Built as a real (V = 2) denoiser."""
    law = Es.MirrorMask()
    masks2 = Vr.all_masks(2)
    a = 0.7
    S2 = np.array([[0.0, a, a, 0.0]])
    t2 = Vr.tables_from_values(S2, [1.0], masks2, 2)
    for s in (0.1, 0.3, 0.45, 0.6, 0.8):
        co = Vr._coefficients(np.array([s]), masks2)[0]
        cov = law.cross(np.array([s]), t2)[0] - co @ t2.gram @ co
        want = a * a * (2 - 4 * (1 - s) ** 2) if s <= 0.5 else 2 * a * a * (1 - s) ** 2 * (1 / s**2 - 2)
        assert_close(cov, want, rtol=1e-12)
        assert (cov > 0) == (1 - 1 / math.sqrt(2) < s < 1 / math.sqrt(2))
    assert_close(Es.mirror_covariance(t2, 0.0), a * a * (8 / 3 - 4 * math.log(2)), rtol=1e-10)
    # (ii) as a denoiser: q = delta_000; p(x_0 = 0 | M00) = e^-3, p(x_i = 0 | 0MM) = e^-4.5, else certain
    V, L = 2, 3
    q = Joint(np.eye(V**L)[0], V, L)
    table = np.zeros(((V + 1) ** L, L, V))
    table[..., 0] = 1.0
    for state, pos, p0 in (((2, 0, 0), (0,), math.exp(-3)), ((0, 2, 2), (1, 2), math.exp(-4.5))):
        idx = int(np.ravel_multi_index(state, (V + 1,) * L))
        for i in pos:
            table[idx, i] = [p0, 1 - p0]
    tables = Vr.loss_moments(q, TabularDenoiser(table, V, L))
    assert_close(Es.mirror_covariance(tables, 0.0), 12.7 - 18 * math.log(2), rtol=1e-10)
    for eps in (1e-6, 1e-3, 0.05):  # (at eps = 0 both A are infinite)
        std, mir = Vr.decompose(tables, eps=eps), Es.mirror().decompose(tables, eps)
        assert mir.A > std.A / 2 and mir.A <= std.A


# ---------------------------------------------------------------- the hooks: Monte Carlo vs exact
@pytest.fixture(scope="module")
def mc_setup():
    """V = 2, L = 3 Dirichlet table, a smoothed denoiser, eps = 0.05 (light tails), one sample of x."""
    from synthetic import languages

    q = languages.dirichlet(jax.random.PRNGKey(7), 2, 3, 0.5)
    den = smoothed(q.denoiser(), 0.2)
    tables = Vr.loss_moments(q, den)
    X = jnp.asarray(q.sample(jax.random.PRNGKey(8), 24000))
    return q, den, tables, X


def _mc_losses(est, eps, den, X, key, batch):
    ts, ms = est.t_sampler(eps), est.mask_sampler()
    kt, km = jax.random.split(key)
    n = X.shape[0]
    s, w = jax.vmap(lambda k: ts(k, batch))(jax.random.split(kt, n // batch))
    s, w = s.reshape(-1), w.reshape(-1)
    m = ms(km, s, X.shape)
    if isinstance(m, tuple):
        m, mw = m
        w = w * mw
    lp = lambda z: jnp.log(den.marginals(z))  # noqa: E731
    return np.asarray(elbo.per_example_loss(lp, X, s, w, m, schedules.linear(), den.vocab_size), np.float64)


MC_ESTIMATORS = [  # the default run covers the proposal, mirror and token-IS hooks; slow adds the rest. (Every hook
    # also trains through synthetic.train in tests/test_variance_reduction.py's --quick run.)
    pytest.param("standard", marks=pytest.mark.slow),
    pytest.param("P-POTS", marks=pytest.mark.slow),
    pytest.param("MIRROR", marks=pytest.mark.slow),
    pytest.param("StraTS", marks=pytest.mark.slow),
    "ISAD",
    "P-POTS+MIRROR",
]


@pytest.mark.parametrize("name", MC_ESTIMATORS)
def test_hooks_monte_carlo_matches_exact(mc_setup, name):
    """Each estimator through its synthetic.train hooks and theory.elbo.per_example_loss: the sample mean within
    5 SE of the exact mean and the sample variance within 5 SE of the exact variance (SE of a variance:
    sd((X - mean)^2) / sqrt(n)); StraTS on batches of 16 (16 x Var of the batch mean)."""
    q, den, tables, X = mc_setup
    eps = 0.05
    make = {
        "standard": Es.standard,
        "P-POTS": lambda: Es.ppots(Es.optimal_proposal(tables, eps)),
        "MIRROR": Es.mirror,
        "StraTS": lambda: Es.strats(16),
        "ISAD": lambda: Es.isad(*Es.optimal_token_rate(tables, eps)),
        "P-POTS+MIRROR": lambda: Es.ppots_mirror(Es.optimal_proposal(tables, eps, Es.MirrorMask())),
    }
    est, i = make[name](), list(make).index(name)
    ell = _mc_losses(est, eps, den, X, jax.random.PRNGKey(100 + i), 16)
    exact = est.decompose(tables, eps)
    if est.name == "StraTS":
        ell = ell.reshape(-1, 16).mean(1)
        scale = 16
    else:
        scale = 1
    n = ell.size
    dev = (ell - ell.mean()) ** 2 * scale
    assert abs(ell.mean() - exact.mean) <= 5 * ell.std() / math.sqrt(n), est.name
    assert abs(dev.mean() - exact.total) <= 5 * dev.std() / math.sqrt(n), (est.name, dev.mean(), exact.total)


def test_control_variate_monte_carlo(mc_setup):
    """loss - c(bin) + mean(c) with the exact bin means: variance within 5 SE of the EMA estimator's exact one."""
    q, den, tables, X = mc_setup
    eps, K = 0.05, 4
    ell = _mc_losses(Es.standard(), eps, den, X, jax.random.PRNGKey(9), 16)
    ts = Es.standard().t_sampler(eps)  # redraw the rates exactly as _mc_losses did (same keys)
    kt, _ = jax.random.split(jax.random.PRNGKey(9))
    svals = np.asarray(jax.vmap(lambda k: ts(k, 16))(jax.random.split(kt, X.shape[0] // 16))[0]).reshape(-1)
    t = (svals.astype(np.float64) - eps) / (1 - eps)
    c = Es.exact_bin_means(tables, eps, K)
    cv = ell - c[np.clip((t * K).astype(int), 0, K - 1)] + c.mean()
    exact = Es.ema(K).decompose(tables, eps)
    dev = (cv - cv.mean()) ** 2
    assert abs(dev.mean() - exact.total) <= 5 * dev.std() / math.sqrt(cv.size)
    assert exact.total < Vr.decompose(tables, eps=eps).total


def test_samplers_draw_their_laws():
    """Proposal.sample follows its bin probabilities (chi-square, level 1e-4) and weight = 1/pdf; StraTS puts one
    t in each stratum; MIRROR's masks are each Bernoulli(s)."""
    prop = Es.Proposal(np.sqrt([0, 0.1, 0.3, 1.0]), [0.5, 0.2, 0.3])
    t, w = prop.sample(jax.random.PRNGKey(0), 20000)
    t, w = np.asarray(t), np.asarray(w)
    counts = np.bincount(np.searchsorted(prop.edges, np.sqrt(t), side="right") - 1, minlength=3)
    assert stats.chisquare(counts, 20000 * prop.probs).pvalue > 1e-4
    assert_close(w, 1.0 / prop.pdf(t), rtol=1e-12)
    s, _ = Es.strats(8).t_sampler(0.0)(jax.random.PRNGKey(1), 8)
    assert sorted(np.floor(np.asarray(s, np.float64) * 8).astype(int).tolist()) == list(range(8))
    m = np.asarray(Es.MirrorMask().sampler()(jax.random.PRNGKey(2), jnp.full((20000,), 0.3), (20000, 2)))
    assert m.shape == (2, 20000, 2)
    for k in range(2):
        assert abs(m[k].mean() - 0.3) < 5 * math.sqrt(0.21 / 40000)
    assert not np.any(m[0] & m[1])  # s <= 1/2: disjoint


# ---------------------------------------------------------------- the paper's parametric P-POTS fit
def test_fits_recover_the_paper_families_and_the_pilot_is_unbiased(mc_setup):
    """fit_power / fit_exp recover (a, r, b, q) and (A, k, m) from noiseless curves (exact zeros dropped);
    pilot_moments' means are within 5 SE of the exact E[loss | t] (float32 loss weights: 1e-6 slack)."""
    t = np.geomspace(1e-3, 0.95, 30)
    v = 0.3 * t**-0.8 + 2.0 * (1 - t) ** 1.5
    v[3] = 0.0  # a pilot point where no token was masked
    fp = Es.fit_power(t, v)
    assert_close(np.array([fp["a"], fp["r"], fp["b"], fp["q"]]), np.array([0.3, -0.8, 2.0, 1.5]), rtol=1e-6)
    fe = Es.fit_exp(t, 1.7 * np.exp(-0.9 * t**1.3))
    assert_close(np.array([fe["A"], fe["k"], fe["m"]]), np.array([1.7, -0.9, 1.3]), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 3"):
        Es.fit_power(t[:4], np.array([1.0, 0.0, 0.0, 2.0]))
    q, den, tables, X = mc_setup  # 3 x 8000 pilot losses: the Monte-Carlo tests' shape (no new compilations)
    eps, n = 0.05, X.shape[0] // 3
    grid = np.array([0.1, 0.5, 0.9])
    lp = lambda z: jnp.log(den.marginals(z))  # noqa: E731
    means, varis = Es.pilot_moments(jax.random.PRNGKey(5), q.sample, lp, 2, grid, n, eps)
    exact = Vr.BernoulliMask().first(Vr.rate(eps, grid), tables.masks) @ tables.mean_vector
    assert np.all(np.abs(means - exact) <= 5 * np.sqrt(varis / n) + 1e-6 * exact)
    exact_var = Vr.second_moment_curve(tables, grid, eps) - exact**2
    assert np.all(varis > 0) and np.all(np.abs(np.log(varis / exact_var)) < 0.5)  # a loose sanity band
    prop, fits = Es.fit_proposal(np.array([0.01, 0.1, 0.3, 0.6, 0.9]), np.array([1.0, 1.1, 1.2, 1.3, 1.4]),
                                 np.array([50.0, 5.0, 2.0, 1.0, 0.5]), eps)  # fmt: skip
    assert_close(prop.probs.sum(), 1.0, rtol=1e-12) and set(fits) == {"v", "g"}
    d = Es.ppots(prop).decompose(tables, eps)
    assert_close(d.mean, Vr.decompose(tables, eps=eps).mean, rtol=1e-10)


# ---------------------------------------------------------------- bad input
def test_bad_input(q34):
    tables = Vr.loss_moments(q34, q34.denoiser())
    for eps in (-0.1, 1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            Vr.decompose(tables, eps=eps)
    with pytest.raises(TypeError, match="eps"):
        Vr.decompose(tables, eps=True)
    with pytest.raises(ValueError, match="integrate to one"):
        Es.Proposal([0, 0.5, 1], [0.5, 0.6])
    with pytest.raises(ValueError, match="vanishes"):
        Es.Proposal([0, 0.5, 1], [1.0, 0.0])
    with pytest.raises(ValueError, match="integrates to"):
        Es.ContinuousProposal(lambda t: 2.0 * np.ones_like(t), True)
    half = Es.ContinuousProposal(lambda t: np.where(t < 0.5, 2.0, 0.0), True, (0.5,))
    with pytest.raises(ValueError, match="vanishes"):
        Es.ppots(half).decompose(tables, 1e-3)
    with pytest.raises(ValueError, match="strictly in"):
        Es.TokenISMask([0, 1], [0.0, 0.5])
    with pytest.raises(ValueError, match="strictly in"):
        Es.TokenISMask([0, 1], [0.5, 1.0])
    bad = np.zeros(((4) ** 4, 4, 3))
    bad[..., 1] = 1.0  # gives token 0 probability 0
    with pytest.raises(ValueError, match="probability 0"):
        Vr.loss_table(q34, TabularDenoiser(bad, 3, 4))
    with pytest.raises(TypeError, match="MomentTables"):
        Vr.decompose(np.eye(2))
    with pytest.raises(TypeError, match="parameters"):
        Vr.gradient_moments(q34, q34.denoiser())
