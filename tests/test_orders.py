"""Garg2025: the MDM ELBO is an expected any-order AR loss; per-position schedules learn the order (theory/orders.py).

* Prop. 3.1: the ELBO by quadrature over t (exact sums over masks and sequences) equals sum_d P(d) AR(d) to
  1e-8 for random tables (smooth and adversarial), random *non-exact* denoisers and random per-position
  schedules (polynomial, mixed families, shared, user functions);
* the order law: sums to 1; 1/L! for a shared schedule (and the same ELBO for every shared schedule, equal
  to the RADD form and to theory.elbo's closed form); Plackett-Luce for 1 - t**w to 1e-10; the sampler's
  frequencies match P(d) (chi-square at level 1e-3);
* the exact denoiser: every order's AR loss and the ELBO equal H(q), for every schedule;
* gradients in w: exact (jax.grad of the closed form) = central differences (1e-6) of the closed form and of
  the quadrature; the two RLOO estimators' means match it within Bonferroni-corrected normal quantiles of
  their standard errors (level 1e-3);
* hand-derived cases (two positions, the Eq. 8 integrand) and bad input.
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

from theory import orders as O
from theory import schedules
from theory.denoiser import TabularDenoiser, smoothed, tempered
from theory.elbo import exact_evaluation, mc_evaluation
from theory.joint import Joint
from theory.sampling import exact_law

from conftest import assert_close, load_script, run_quick
from strategies import JOINT_KINDS, joint_of_kind, log_weights, per_position_schedules, schedule_list, seeds

#: Shapes (V, L) of the property tests: few shapes, so the denoisers' jitted marginals compile few times.
SHAPES = [(2, 5), (3, 3), (4, 2)]
LEVEL = 1e-3  # statistical tests: family-wise level


@st.composite
def instances(draw):
    """(joint, denoiser): a random table of any kind (smooth or adversarial) and a random denoiser (exact,
    Dirichlet table, smoothed or tempered exact)."""
    V, L = draw(st.sampled_from(SHAPES))
    seed = draw(seeds)
    q = joint_of_kind(draw(st.sampled_from(JOINT_KINDS)), V, L, seed)
    kind = draw(st.sampled_from(["exact", "random", "smoothed", "tempered"]))  # tempered: p ~ q**2 (overconfident)
    if kind == "exact":
        return q, q.denoiser(), kind
    if kind == "random":
        t = np.random.default_rng(seed).dirichlet(np.ones(V), size=((V + 1) ** L, L))
        return q, TabularDenoiser(t, V, L), kind
    if kind == "smoothed":
        return q, smoothed(q.denoiser(), 0.2), kind
    return q, tempered(smoothed(q.denoiser(), 0.05), 0.5), kind


def _rel(a, b):
    return abs(a - b) / max(1.0, abs(b))


# ---------------------------------------------------------------- Prop. 3.1 and the exact denoiser
@settings(max_examples=2)
@given(inst=instances(), data=st.data())
def test_elbo_is_expected_ar_loss(inst, data):
    """Garg2025, Prop. 3.1: int_0^1 E[loss_t] dt = sum_d P(d) AR(d) (decoding order), to 1e-8, any denoiser.
    With the exact denoiser every AR(d) and the ELBO equal H(q)."""
    q, den, kind = inst
    sched = data.draw(per_position_schedules(q.length))
    d = O.ar_decomposition(q, den, sched)
    assert abs(d.order_probs.sum() - 1.0) < 1e-10
    assert d.order_error < 1e-8 and d.elbo_error < 1e-8
    assert _rel(d.elbo, d.expected_ar) < 1e-8, (d.elbo, d.expected_ar, sched)
    assert_close(d.ar_losses, d.terms.sum(1), rtol=1e-12)
    if kind == "exact":
        H = q.entropy()
        assert np.max(np.abs(d.ar_losses - H)) < 1e-9 * max(1.0, H)
        assert _rel(d.elbo, H) < 1e-8


def _edge_tolerance(s, lt, value):
    """Relative error allowed by float64 near t = 1 (theory.orders docstring): a schedule whose density is
    singular there, Beta-CDF(a, b) with b < 1 (density ~ (1 - t)**(b - 1)), puts mass
    delta**b / (b B(a, b)) within delta = 2**-53 of t = 1, where float64 cannot place t; that mass may be
    misplaced between loss terms, each at most max G: relative error <= 2 * mass * max G / value."""
    from scipy.special import beta

    if s.name != "beta_cdf" or s.params["b"] >= 1:
        return 0.0
    a, b = s.params["a"], s.params["b"]
    mass = (2.0**-53) ** b / (b * beta(a, b))
    return 2.0 * mass * float(np.max(lt.table)) / value


@settings(max_examples=1)
@given(inst=instances())
def test_shared_schedule_invariance_and_radd(inst):
    """One shared schedule: P(d) = 1/L! and the ELBO is the same for every schedule family; it equals the RADD
    form sum_k E_{|M|=k}[(1/k) sum_{i in M} -log p(x_i | x_{M^c})] and theory.elbo's closed-form weights."""
    q, den, _ = inst
    L = q.length
    lt = O.loss_table(q, den)
    radd = O.radd_loss(lt)
    for s in schedule_list():
        law = O.order_probabilities(s, L)
        assert np.max(np.abs(law.probs - 1.0 / math.factorial(L))) < 1e-12
        assert _rel(O.elbo_quadrature(lt, s).value, radd) < max(1e-10, _edge_tolerance(s, lt, radd)), s
    assert _rel(exact_evaluation(q)(den)["elbo"], radd) < 1e-10


@settings(max_examples=3)
@given(L=st.integers(1, 5), data=st.data())
def test_polynomial_family_is_plackett_luce(L, data):
    """alpha_{t,l} = 1 - t**w_l: the quadrature order law is Plackett-Luce(w) in the decoding direction (1e-10);
    so are the pairwise probabilities w_l / (w_l + w_l') and the subset weights W[A, l]."""
    w = np.exp([data.draw(log_weights) for _ in range(L)])
    fam = O.PolynomialFamily(w)
    user = O.from_functions(lambda t: 1.0 - jnp.asarray(t)[..., None] ** w, L)  # the same family, no closed form
    quad = O.order_probabilities(user)
    pl = O.order_probabilities(fam)
    assert quad.method == "quadrature" and pl.method == "plackett_luce"
    assert np.max(np.abs(quad.probs - pl.probs)) < 1e-10
    assert_close(O.pairwise_order_probabilities(user), O.pairwise_order_probabilities(fam), rtol=0, atol=1e-10)
    assert_close(O.elbo_weights(user), O.elbo_weights(fam), rtol=0, atol=1e-10)


def test_plackett_luce_direction_pinned():
    """Larger w_l = masked later = decoded EARLIER: w = (10, 0.1, 1) gives P(0 first) = 10 / 11.1, and by hand
    P(T_0 > T_1) = int_0^1 10 t**9 t**0.1 dt = 10 / 10.1."""
    fam = O.PolynomialFamily([10.0, 0.1, 1.0])
    law = O.order_probabilities(fam, method="quadrature")
    assert abs(law.prob([0, 2, 1]) - (10 / 11.1) * (1 / 1.1)) < 1e-12
    assert abs(law.probs[law.orders[:, 0] == 0].sum() - 10 / 11.1) < 1e-12
    assert abs(O.pairwise_order_probabilities(fam)[0, 1] - 10 / 10.1) < 1e-15


# ---------------------------------------------------------------- hand-derived cases
def _copy_pair():
    """q uniform on {00, 11}; a hand denoiser: p(x_0) = p(x_1) = (1/2, 1/2) at the all-mask state,
    p(x_1 = x_0 | x_0) = 0.9, p(x_0 = x_1 | x_1) = 0.6. States z = (z_0, z_1) in base 3 (mask = 2)."""
    q = Joint(np.array([0.5, 0.0, 0.0, 0.5]), 2, 2)
    t = np.full((9, 2, 2), 0.5)
    t[3 * 0 + 2, 1] = [0.9, 0.1]  # (0, M)
    t[3 * 1 + 2, 1] = [0.1, 0.9]  # (1, M)
    t[3 * 2 + 0, 0] = [0.6, 0.4]  # (M, 0)
    t[3 * 2 + 1, 0] = [0.4, 0.6]  # (M, 1)
    return q, TabularDenoiser(t, 2, 2)


def test_two_positions_by_hand():
    """AR(0 then 1) = log 2 - log 0.9, AR(1 then 0) = log 2 - log 0.6; w = (3, 1): P(0 first) = 3/4, so
    ELBO = log 2 - (3/4) log 0.9 - (1/4) log 0.6 and dELBO/dw = (w_1, -w_0) / (w_0 + w_1)**2 (log 0.6 - log 0.9)."""
    q, den = _copy_pair()
    a0, a1 = np.log(2) - np.log(0.9), np.log(2) - np.log(0.6)
    assert abs(O.ar_loss(q, den, [0, 1]).total - a0) < 1e-14
    assert_close(O.ar_loss(q, den, [1, 0]).terms, np.array([np.log(2), -np.log(0.6)]), rtol=1e-14)
    want = 0.75 * a0 + 0.25 * a1
    fam = O.PolynomialFamily([3.0, 1.0])
    lt = O.loss_table(q, den)
    assert abs(O.elbo(q, den, fam).value - want) < 1e-12
    assert abs(float(O.plackett_luce_elbo(lt, fam.weights)) - want) < 1e-14
    g = np.array([1.0, -3.0]) / 16 * (np.log(0.6) - np.log(0.9))
    assert_close(O.nll_bound_gradient(lt, [3.0, 1.0]), g, rtol=1e-12)
    assert abs(O.elbo(q, q.denoiser(), fam).value - np.log(2)) < 1e-12  # exact denoiser: H(q) = log 2


def test_time_loss_pinned():
    """L = 1, alpha = 1 - t**2: the Eq. 8 integrand is P(masked) * (-alpha'/(1 - alpha)) * G = t**2 * (2/t) * G,
    at t = 1/4: G / 2, with G = E_q[-log p] = -(1/2) log 0.8 - (1/2) log 0.2 for q = (1/2, 1/2), p = (0.8, 0.2)."""
    q = Joint(np.array([0.5, 0.5]), 2, 1)
    den = TabularDenoiser(np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.8, 0.2]]]), 2, 1)
    G = -0.5 * np.log(0.8) - 0.5 * np.log(0.2)
    lt = O.loss_table(q, den)
    assert_close(O.time_loss(lt, O.PolynomialFamily([2.0]), [0.25]), np.array([G / 2]), rtol=1e-14)
    assert abs(O.elbo_quadrature(lt, O.PolynomialFamily([2.0])).value - G) < 1e-13


def test_quadrature_pinned():
    """int_0^1 w t**(w-1) dt = 1 for w in [0.05, 20] and int_0^1 t**k dt = 1/(k+1); the running integral of the
    density of 1 - t**w at the nodes is t**w (the panel integration matrices)."""
    quad = O.quadrature()
    for w in (0.05, 0.3, 1.0, 4.0, 20.0):
        assert abs(quad.integrate(w * quad.t ** (w - 1)) - 1.0) < 1e-13
        cum, tot = quad.cumulative((w * quad.t**w * quad.dtds / quad.t)[None])
        assert np.max(np.abs(cum[0] - quad.t**w)) < 1e-13 and abs(tot[0] - 1.0) < 1e-13
    for k in range(5):
        assert abs(quad.integrate(quad.t**k) - 1.0 / (k + 1)) < 1e-14


# more examples of the property tests above (slow)
@pytest.mark.slow
@settings(max_examples=40)
@given(inst=instances(), data=st.data())
def test_elbo_is_expected_ar_loss_many(inst, data):
    test_elbo_is_expected_ar_loss.hypothesis.inner_test(inst, data)


@pytest.mark.slow
@settings(max_examples=15)
@given(inst=instances())
def test_shared_schedule_invariance_and_radd_many(inst):
    test_shared_schedule_invariance_and_radd.hypothesis.inner_test(inst)


@pytest.mark.slow
@settings(max_examples=20)
@given(L=st.integers(1, 5), data=st.data())
def test_polynomial_family_is_plackett_luce_many(L, data):
    test_polynomial_family_is_plackett_luce.hypothesis.inner_test(L, data)


# ---------------------------------------------------------------- the order sampler
@pytest.mark.parametrize(
    "sched",
    [
        O.PolynomialFamily([0.3, 2.0, 1.0, 5.0]),
        pytest.param(
            schedules.PerPosition((schedules.cosine(), schedules.polynomial(0.5), schedules.beta_cdf(2.0, 0.5))),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["polynomial", "mixed-bisection"],
)
def test_order_sampler_matches_order_law(sched):
    """Independent unmask times sorted by decreasing time: order frequencies vs P(d), chi-square at level 1e-3
    (cells with expected count < 5 pooled)."""
    n = 20000
    law = O.order_probabilities(sched)
    d = np.asarray(O.sample_orders(jax.random.PRNGKey(3), sched, n))
    L = d.shape[1]
    rank = np.zeros(n, dtype=np.int64)
    for i in range(L):  # lexicographic rank of each sampled permutation
        rest = np.sum(d[:, i + 1 :] < d[:, i : i + 1], axis=1)
        rank += rest * math.factorial(L - 1 - i)
    counts = np.bincount(rank, minlength=law.probs.size)
    exp = n * law.probs
    big = exp >= 5
    obs = np.append(counts[big], counts[~big].sum())
    ex = np.append(exp[big], exp[~big].sum())
    if ex[-1] == 0:
        obs, ex = obs[:-1], ex[:-1]
    assert stats.chisquare(obs, ex).pvalue > LEVEL


# ---------------------------------------------------------------- gradients in w
@settings(max_examples=2)
@given(inst=instances(), data=st.data())
def test_exact_gradient_matches_finite_differences(inst, data):
    """jax.grad of the closed-form NLL bound = central differences (h = 1e-5) of the closed form and of the
    quadrature of the same family given as a user function (no closed form), relative 1e-6."""
    q, den, _ = inst
    L = q.length
    w = np.exp([data.draw(log_weights) for _ in range(L)])
    lt = O.loss_table(q, den)
    g = O.nll_bound_gradient(lt, w)
    h = 1e-5
    fd, fdq = np.zeros(L), np.zeros(L)
    for i in range(L):
        e = np.zeros(L)
        e[i] = h * w[i]
        fd[i] = (float(O.plackett_luce_elbo(lt, w + e)) - float(O.plackett_luce_elbo(lt, w - e))) / (2 * e[i])
        vals = []
        for ww in (w + e, w - e):  # a user family (validated in test_polynomial_family_is_plackett_luce)
            fam = O.FunctionFamily(
                lambda t, ww=ww: 1.0 - t[..., None] ** ww, lambda t, ww=ww: -ww * t[..., None] ** (ww - 1.0), L
            )
            vals.append(O.elbo_quadrature(lt, fam).value)
        fdq[i] = (vals[0] - vals[1]) / (2 * e[i])
    scale = max(1.0, np.max(np.abs(g)))
    assert np.max(np.abs(fd - g)) < 1e-6 * scale, (fd, g)
    assert np.max(np.abs(fdq - g)) < 1e-6 * scale, (fdq, g)


@pytest.mark.slow
@settings(max_examples=12)
@given(inst=instances(), data=st.data())
def test_exact_gradient_matches_finite_differences_many(inst, data):
    test_exact_gradient_matches_finite_differences.hypothesis.inner_test(inst, data)


@pytest.fixture(scope="module")
def rloo_case():
    rng = np.random.default_rng(0)
    V, L = 2, 5
    q = Joint(rng.dirichlet(np.ones(V**L)), V, L)
    den = TabularDenoiser(rng.dirichlet(np.ones(V), size=((V + 1) ** L, L)), V, L)
    lt = O.loss_table(q, den)
    w = np.array([0.3, 1.0, 2.5, 0.7, 1.5])
    return lt, w, O.nll_bound_gradient(lt, w), float(O.plackett_luce_elbo(lt, w))


@pytest.mark.parametrize("form", ["orders", "masks"])
def test_rloo_mean_matches_exact_gradient(rloo_case, form):
    """Both RLOO estimators are unbiased: per coordinate |mean - exact| <= z * SE with z the two-sided normal
    quantile at level 1e-3 / (L + 1) (Bonferroni over the L gradient coordinates and the loss). The mask form
    draws t ~ Beta(min(w)/4, 1) (finite fourth moment, module docstring)."""
    lt, w, g, elbo = rloo_case
    n = 40000
    fn = O.rloo_order_gradient if form == "orders" else O.rloo_mask_gradient
    est, ell = fn(jax.random.PRNGKey(11), lt, w, num=n, samples=4)
    est, ell = np.asarray(est), np.asarray(ell)
    z = stats.norm.ppf(1 - LEVEL / (2 * (w.size + 1)))
    se = est.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(est.mean(0) - g) <= z * se), (est.mean(0), g, se)
    assert abs(ell.mean() - elbo) <= z * ell.std(ddof=1) / np.sqrt(n)
    tiny = w.copy()
    tiny[1] = 1e-3  # t ~ Beta(w_min / 4, 1) underflows to 0 for most draws: the estimates stay finite
    assert np.all(np.isfinite(np.asarray(fn(jax.random.PRNGKey(1), lt, tiny, num=n, samples=4)[0])))


@pytest.mark.parametrize("form", ["orders", pytest.param("masks", marks=pytest.mark.slow)])
def test_rloo_surrogates_give_the_estimators(rloo_case, form):
    """jax.grad of the RLOO surrogates in w = the mean of the RLOO estimators on the same draws (same key), to
    1e-10; their loss outputs agree too."""
    lt, w, _, _ = rloo_case
    nll, q = jnp.asarray(lt.nll), lt.enum.q
    key = jax.random.PRNGKey(4)
    pairs = {
        "orders": (O.rloo_order_surrogate, O.rloo_order_gradient),
        "masks": (O.rloo_mask_surrogate, O.rloo_mask_gradient),
    }
    for sur, est in (pairs[form],):
        g_sur, loss = jax.grad(lambda ww, sur=sur: sur(key, nll, q, ww, num=64, samples=3), has_aux=True)(
            jnp.asarray(w)
        )
        g, ell = est(key, lt, w, num=64, samples=3)
        assert_close(np.asarray(g_sur), np.asarray(g).mean(0), rtol=1e-10, atol=1e-12)
        assert abs(float(loss) - float(np.mean(ell))) < 1e-10


def _table_log_probs(params, states):
    """A free-logit model over the enumerated states (fit_order's model function): params (S, L, V)."""
    return jax.nn.log_softmax(params, axis=-1)


@pytest.mark.slow  # (the default suite checks fit_order through experiments/learned_order.py --quick below)
@pytest.mark.parametrize("method", O.FIT_METHODS)
def test_fit_order_records_exact_bounds(rloo_case, method):
    """fit_order: the recorded bounds are theory.orders' exact ones (plackett_luce_elbo of the final model's loss
    table, and the RADD form at w = 1); the exact method lowers the bound; learn_weights=False keeps w = 1."""
    lt, _, _, _ = rloo_case
    enum = lt.enum
    V, L = enum.vocab_size, enum.length
    p0 = jnp.zeros(((V + 1) ** L, L, V))
    fit = O.fit_order(_table_log_probs, p0, enum, key=jax.random.PRNGKey(0), method=method, steps=5, lr=0.1,
                      batch=16, record=(0, 5))  # fmt: skip
    final = O.loss_table_from_log_probs(enum, _table_log_probs(fit.params, enum.states))
    h = fit.history[-1]
    assert abs(h["elbo"] - float(O.plackett_luce_elbo(final, np.exp(fit.log_weights)))) < 1e-10
    assert abs(h["uniform_elbo"] - O.radd_loss(np.asarray(final))) < 1e-10
    assert_close(h["weights"], np.exp(fit.log_weights), rtol=1e-14)
    if method == "exact":
        assert h["elbo"] < fit.history[0]["elbo"]
        base = O.fit_order(_table_log_probs, p0, enum, key=jax.random.PRNGKey(0), steps=3, learn_weights=False)
        assert np.all(base.log_weights == 0)


@pytest.mark.slow
def test_mc_loss_with_polynomial_family():
    """theory.elbo's Monte-Carlo ELBO (t ~ U[0, 1]) with the per-position family 1 - t**w agrees with the closed
    form within 4 SE; w > 1 everywhere, where its variance is finite (module docstring of theory.orders)."""
    rng = np.random.default_rng(5)
    V, L = 2, 5
    q = Joint(rng.dirichlet(np.ones(V**L)), V, L)
    den = TabularDenoiser(rng.dirichlet(np.ones(V), size=((V + 1) ** L, L)), V, L)
    fam = O.PolynomialFamily([1.5, 3.0, 2.0, 1.2, 4.0])
    exact = float(O.plackett_luce_elbo(O.loss_table(q, den), fam.weights))
    mc = mc_evaluation(q.sample(jax.random.PRNGKey(1), 8192), key=jax.random.PRNGKey(2), vocab_size=V, schedule=fam)(
        den
    )
    assert abs(mc["elbo"] - exact) < 4 * mc["elbo_se"]


# ---------------------------------------------------------------- the learned order as a sampling policy
@pytest.mark.parametrize("reveal", ["fixed", pytest.param("bernoulli", marks=pytest.mark.slow)])
def test_plackett_luce_policy_exact_law(reveal):
    """exact_law with the PlackettLuceOrder policy (per-step reveal sets) = the mixture over orders
    sum_d PL(d) exact_law(FixedOrder(d)) (one order per sample), to 1e-12."""
    q = joint_of_kind("dirichlet", 2, 3, 7)
    w = (2.0, 0.5, 4.0)
    law = O.order_probabilities(O.PolynomialFamily(w))
    a = exact_law(q, O.PlackettLuceOrder(w), 2, reveal=reveal)
    b = O.order_mixture_law(q, law, 2, reveal=reveal)
    assert_close(np.asarray(a.probs), np.asarray(b.probs), rtol=0, atol=1e-12)
    assert abs(a.expected_nfe - b.expected_nfe) < 1e-12


@pytest.mark.slow
def test_plackett_luce_policy_monte_carlo():
    """THE Monte-Carlo sampler with PlackettLuceOrder (static-order fast path) vs its exact law: chi-square."""
    from theory.sampling import sample

    q = joint_of_kind("dirichlet", 2, 4, 7)
    pol = O.PlackettLuceOrder((2.0, 0.5, 1.0, 4.0))
    exact = np.asarray(exact_law(q, pol, 2).probs)
    s = np.asarray(sample(jax.random.PRNGKey(0), q.denoiser(), pol, 2, num=40000).tokens)
    idx = s @ (2 ** np.arange(3, -1, -1))
    counts = np.bincount(idx, minlength=16)
    big = exact * 40000 >= 5
    assert (
        stats.chisquare(counts[big], exact[big] * 40000 * counts[big].sum() / (exact[big] * 40000).sum()).pvalue > LEVEL
    )


# ---------------------------------------------------------------- bad input
def _wiggly(t):
    """Position 1: 1 - t**2 + 0.3 sin(6 pi t) t (1 - t), right endpoints but not monotone."""
    t = jnp.asarray(t)
    return jnp.stack([1 - t, 1 - t**2 + 0.3 * jnp.sin(6 * jnp.pi * t) * t * (1 - t)], -1)


def _poly12(t):
    return 1 - jnp.asarray(t)[..., None] ** jnp.array([1.0, 2.0])


def test_bad_input():
    with pytest.raises(ValueError, match="not non-increasing"):
        O.from_functions(_wiggly, 2)
    with pytest.raises(ValueError, match="alpha_"):
        O.from_functions(lambda t: jnp.asarray(t)[..., None] * jnp.ones(2), 2)  # alpha(0) = 0: the wrong way round
    with pytest.raises(ValueError, match="derivative"):
        O.from_functions(_poly12, 2, lambda t: -jnp.ones(jnp.shape(t) + (2,)))
    for bad in ([1.0, 0.0], [1.0, -2.0], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="> 0"):
            O.PolynomialFamily(bad)
        with pytest.raises(ValueError, match="> 0"):
            O.PlackettLuceOrder(tuple(bad))
    big = O.PolynomialFamily(np.ones(9))
    with pytest.raises(ValueError, match="sample_orders"):
        O.order_probabilities(big)
    assert O.sample_orders(jax.random.PRNGKey(0), big, 3).shape == (3, 9)  # the sampler still works
    assert O.pairwise_order_probabilities(big).shape == (9, 9)
    with pytest.raises(ValueError, match="plackett_luce"):
        O.order_probabilities(schedules.cosine(), 3, method="plackett_luce")
    with pytest.raises(ValueError, match="length"):
        O.order_probabilities(schedules.cosine())
    q, den = _copy_pair()
    with pytest.raises(ValueError, match="permutation"):
        O.ar_loss(q, den, [0, 0])
    with pytest.raises(ValueError, match="samples >= 2"):
        O.rloo_order_gradient(jax.random.PRNGKey(0), O.loss_table(q, den), [1.0, 1.0], num=4, samples=1)
    with pytest.raises(ValueError, match="method"):
        O.fit_order(_table_log_probs, jnp.zeros((9, 2, 2)), O.enumeration(q), key=jax.random.PRNGKey(0), method="sgd")


# ---------------------------------------------------------------- experiments/learned_order.py
@pytest.fixture(scope="module")
def lo():
    return load_script("learned_order")


@pytest.fixture(scope="module")
def lo_quick(lo, tmp_path_factory):
    """Run ``learned_order.py --quick`` once for the module, in-process (no progress bars)."""
    out, (train, samp, summary) = run_quick(lo, tmp_path_factory)
    return out, train, samp, summary


def test_learned_order_quick_files_and_coverage(lo, lo_quick):
    """Every file is written; every language x method x seed x recorded step and every sampling case is a row;
    the uniform baseline keeps w = 1 and its bound is the uniform-order bound (shared-schedule invariance);
    the exact denoiser with N = L steps samples q exactly under both policies."""
    import json

    out, train, samp, _ = lo_quick
    for f in ("learned_order.csv", "learned_order.png", "learned_order.json", "learned_order_sampling.csv",
              "learned_order_sampling.png"):  # fmt: skip
        assert (out / f).exists(), f
    meta = json.loads((out / "learned_order.json").read_text())
    assert meta["quick"] is True and meta["dtype"] == "float64"
    steps = sorted(train.step.unique())
    assert steps == list(range(0, lo.STEPS_QUICK + 1, lo.RECORD_QUICK))
    assert len(train) == len(lo.LANGUAGES) * len(lo.METHODS) * lo.SEEDS_QUICK * len(steps)
    u = train[train.method == "uniform"]
    assert np.all(u[[f"w_{i}" for i in range(lo.L)]].to_numpy() == 1.0)
    assert_close(u.elbo.to_numpy(), u.uniform_elbo.to_numpy(), rtol=1e-12)
    learned = train[(train.method != "uniform") & (train.step > 0)]
    assert np.all(np.isfinite(learned[["grad_var_orders", "grad_var_masks"]].to_numpy()))
    # 3 models x policies (uniform-trained: RandomOrder only) x N, per language and seed
    assert len(samp) == len(lo.LANGUAGES) * lo.SEEDS_QUICK * 5 * len(lo.STEP_COUNTS_QUICK)
    full = samp[(samp.model == "exact_denoiser") & (samp.steps == lo.L)]
    assert np.all(np.abs(full.kl.to_numpy()) < 1e-12)


def test_learned_order_quick_numbers_are_the_library(lo, lo_quick):
    """A quick training run recomputed with its key through theory.orders.fit_order (identical history, and the
    final bound = plackett_luce_elbo of the final network's loss table), and its sampling rows recomputed with
    exact_law + metrics.kl (1e-10)."""
    from theory import metrics, policies
    from theory.sampling import exact_law

    _, train, samp, _ = lo_quick
    name, li, seed = "key_payload", 1, 0
    q = lo.language(name, seed)
    record = tuple(range(0, lo.STEPS_QUICK + 1, lo.RECORD_QUICK))
    fit = lo.fit(q, seed, li, "exact", lo.STEPS_QUICK, record, lo.VARIANCE_NUM_QUICK)
    rows = train[(train.language == name) & (train.method == "exact") & (train.seed == seed)]
    assert_close(rows.elbo.to_numpy(), np.array([h["elbo"] for h in fit.history]), rtol=1e-10)
    assert_close(rows.grad_var_orders.to_numpy()[1:], np.array([h["grad_var_orders"] for h in fit.history])[1:],
                 rtol=1e-10)  # fmt: skip
    enum = O.enumeration(q)
    G = O.loss_table_from_log_probs(enum, lo.log_probs(fit.params, enum.states))
    w = np.exp(fit.log_weights)
    assert abs(rows.elbo.to_numpy()[-1] - float(O.plackett_luce_elbo(G, w))) < 1e-10 * rows.elbo.to_numpy()[-1]
    assert abs(rows.uniform_elbo.to_numpy()[-1] - O.radd_loss(np.asarray(G))) < 1e-10 * rows.elbo.to_numpy()[-1]
    assert_close(rows[[f"w_{i}" for i in range(lo.L)]].to_numpy()[-1], w, rtol=1e-10)
    den = lo.learned_denoiser(fit.params)
    s = samp[(samp.language == name) & (samp.seed == seed) & (samp.model == "learned_order")]
    for pname, pol in (("PlackettLuce", O.PlackettLuceOrder(tuple(w))), ("RandomOrder", policies.RandomOrder())):
        r = s[(s.policy == pname) & (s.steps == 2)].iloc[0]
        law = exact_law(q, pol, 2, denoiser=den)
        assert abs(r.kl - float(metrics.kl(q.probs, law.probs))) < 1e-10 * max(1.0, r.kl)


@pytest.fixture(scope="module")
def lo_committed():
    import json
    from pathlib import Path

    import pandas as pd

    fig = Path(__file__).resolve().parent.parent / "figures"
    if not (fig / "learned_order.json").exists():
        pytest.skip("figures/learned_order.* not generated yet (python experiments/learned_order.py)")
    meta = json.loads((fig / "learned_order.json").read_text())
    assert meta["quick"] is False
    return pd.read_csv(fig / "learned_order.csv"), pd.read_csv(fig / "learned_order_sampling.csv"), meta


def test_learned_order_committed_rows(lo, lo_committed):
    """Committed default run: >= 5 seeds; exact-denoiser KL rows recomputed from the committed learned weights
    (exact_law with PlackettLuceOrder and RandomOrder, 1e-8: the CSV keeps 12 digits of w)."""
    from theory import metrics, policies
    from theory.sampling import exact_law

    train, samp, meta = lo_committed
    assert train.seed.nunique() >= 5 and meta["seeds"] >= 5
    name, seed = "reversed_markov", int(meta["seed"])
    q = lo.language(name, seed)
    last = train[(train.language == name) & (train.method == "exact") & (train.seed == seed)]
    w = tuple(float(x) for x in last[last.step == last.step.max()][[f"w_{i}" for i in range(lo.L)]].to_numpy()[0])
    s = samp[(samp.language == name) & (samp.seed == seed) & (samp.model == "exact_denoiser") & (samp.steps == 2)]
    for pname, pol in (("PlackettLuce", O.PlackettLuceOrder(w)), ("RandomOrder", policies.RandomOrder())):
        r = s[s.policy == pname].iloc[0]
        kl = float(metrics.kl(q.probs, exact_law(q, pol, 2).probs))
        assert abs(r.kl - kl) < 1e-8 * max(1.0, kl), pname
