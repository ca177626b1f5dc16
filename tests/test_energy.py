"""Chen2025's energies (theory.energy) and the schedule additions (theory.schedules: Chen's time, Beta weights,
the sine baseline), checked exactly.

* Q_tau generates p_tau (Kolmogorov forward equation, derivative by jax.jvp) and the conditional rate averaged
  over the posterior is Q_tau (Eq. 6), to 1e-10, on random tables including adversarial ones (V <= 3, L <= 4);
* E_k / E_c and E_c / E_g are the same for every schedule and weight, E_c / E_g = 2^(L-1) (Thm 3.2) and
  E_k / E_c = kinetic_constant(q), which is ((V+1)/2)^(L-1) for full support (Thm 3.1: depends on (n, d) only),
  to 1e-8; without full support it depends on the support (pinned: the Fig. 4 toy targets, a point mass);
* one token: E_k = E_c = E_g = J; alpha* = sin^2((pi/2) gamma) attains pi^2 for every drawn gamma, no drawn
  alternative (Beta-parameterised with the closed form, monotone Bernstein curves) goes below it, a numerical
  minimiser over Bernstein curves recovers alpha*;
* the quadrature's reported error bounds its distance to closed forms (Beta energies, generic schedules);
* the discrete N-step energy converges to J (rate measured), equal spacing in gamma along the geodesic beats
  every drawn discretisation of a uniform gamma grid, and on a free grid steps collapse (pinned finding);
* schedules: pinned values of Chen's sine baseline and the Beta weights, Beta(0.5, 0.5) -> linear and
  Beta(1, 1) -> squared sine to 1e-12, the time conversion, hashing by value;
* bad input raises ValueError with a message.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import beta as B

from theory import energy, schedules
from theory.joint import Joint
from theory.states import all_sequences, all_states

from conftest import assert_close, load_script, run_quick
from strategies import beta_params, beta_weights, chen_schedule_list, energy_joints, joint_of_kind

PI2 = np.pi**2
taus = st.sampled_from([0.03, 0.2, 0.5, 0.77, 0.96])  # few distinct values: one compilation per shape
paths_st = st.sampled_from(chen_schedule_list())
# test grids share the shape of schedules.validate's grid and theory.energy's padded quadrature nodes (2049): eager
# JAX compiles once per primitive and shape
GRID = np.linspace(0.0, 1.0, schedules._GRID)


# ================================ schedules: Chen's time, sine baseline, Beta weights ================
def test_chen_sine_pinned():
    """alpha_C(tau) = sin(pi tau / 2), i.e. alpha(t) = cos(pi t / 2): values and derivatives by hand."""
    s = schedules.chen_sine()
    r2 = np.sqrt(2.0) / 2
    for t, a, d in [(0.0, 1.0, 0.0), (0.5, r2, -np.pi / 2 * r2), (1.0, 0.0, -np.pi / 2)]:
        assert_close(float(s.alpha(t)), a, atol=1e-15)
        assert_close(float(s.dalpha(t)), d, atol=1e-15)
    # Chen's time: alpha_C(tau) = sin(pi tau / 2), alpha_C' = (pi/2) cos(pi tau / 2)
    assert_close(float(schedules.chen_alpha(s, 1 / 3)), 0.5, rtol=1e-14)  # sin(pi/6)
    assert_close(float(schedules.chen_dalpha(s, 1 / 3)), np.pi / 2 * np.sqrt(3) / 2, rtol=1e-14)
    schedules.validate(s)


def test_time_conversion():
    lin = schedules.linear()
    assert float(schedules.chen_time(0.25)) == 0.75 and float(schedules.toolkit_time(0.75)) == 0.25
    assert_close(float(schedules.chen_alpha(lin, 0.3)), 0.3, rtol=1e-15)  # alpha_C(tau) = tau for linear
    assert_close(float(schedules.chen_dalpha(lin, 0.3)), 1.0, rtol=1e-15)
    assert_close(float(schedules.chen_alpha(schedules.cosine_squared(), 1 / 3)), 0.25, rtol=1e-14)  # sin^2(pi/6)
    # sin2_beta in Chen's time is sin^2((pi/2) I_tau(a, b)): at tau where I = 1/3, alpha_C = sin^2(pi/6) = 1/4
    from scipy.special import betaincinv

    tau = float(betaincinv(0.9, 0.3, 1 / 3))
    assert_close(float(schedules.chen_alpha(schedules.sin2_beta(0.9, 0.3), tau)), 0.25, rtol=1e-12)


@pytest.mark.parametrize(
    "a, b, g_half, dg_half",
    [
        (1.0, 1.0, 0.5, 1.0),
        (2.0, 2.0, 0.5, 1.5),  # 3 tau^2 - 2 tau^3, derivative 6 tau (1 - tau)
        (0.5, 0.5, 0.5, 2 / np.pi),  # (2/pi) arcsin sqrt(tau), derivative 1 / (pi sqrt(tau (1 - tau)))
        (1.0, 2.0, 0.75, 1.0),  # 1 - (1 - tau)^2, derivative 2 (1 - tau)
    ],
)
def test_beta_weight_pinned(a, b, g_half, dg_half):
    w = schedules.beta_weight(a, b)
    assert_close(float(w.gamma(0.0)), 0.0, atol=1e-15)
    assert_close(float(w.gamma(1.0)), 1.0, atol=1e-15)
    assert_close(float(w.gamma(0.5)), g_half, rtol=1e-13)
    assert_close(float(w.dgamma(0.5)), dg_half, rtol=1e-13)
    assert_close(float(w.cgamma(0.5)), 1 - g_half, rtol=1e-13)
    g = jax.grad(lambda x: w.gamma(x))(jnp.float64(0.3))
    assert_close(float(w.dgamma(0.3)), float(g), rtol=1e-10)


def test_beta_weight_accurate_at_both_ends():
    """With the exact complement sigma the Beta weight is resolved 1e-200 from either end."""
    w = schedules.beta_weight(0.5, 0.5)
    s = 1e-200
    assert_close(float(w.cgamma(1.0, s)), 2 / np.pi * np.sqrt(s), rtol=1e-12)  # 1 - gamma ~ (2/pi) sqrt(sigma)
    assert_close(float(w.gamma(s)), 2 / np.pi * np.sqrt(s), rtol=1e-12)
    assert_close(float(w.dgamma(1.0, s)), 1 / (np.pi * np.sqrt(s)), rtol=1e-12)


def test_beta_families_exact():
    """Chen2025: Beta(0.5, 0.5) gives the linear schedule and Beta(1, 1) the squared sine, to 1e-12."""
    t = GRID
    tau = 1 - t
    lin = energy.optimal_path(schedules.beta_weight(0.5, 0.5))
    assert_close(np.asarray(lin.alpha(tau)), tau, atol=1e-12)
    assert_close(np.asarray(lin.dalpha(tau))[1:-1], np.ones(len(t) - 2), rtol=1e-12)
    sq = energy.optimal_path(schedules.beta_weight(1.0, 1.0))
    assert_close(np.asarray(sq.alpha(tau)), np.sin(np.pi * tau / 2) ** 2, atol=1e-12)
    # the toolkit schedules: optimal_schedule(Beta weight) is sin2_beta, = linear / cosine_squared
    s = energy.optimal_schedule(schedules.beta_weight(0.5, 0.5))
    assert s == schedules.sin2_beta(0.5, 0.5) and hash(s) == hash(schedules.sin2_beta(0.5, 0.5))
    assert_close(np.asarray(s.alpha(t)), 1 - t, atol=1e-12)
    # the closed-form Beta(0.5, 0.5) and Beta(1, 1) weights are the regularised incomplete beta
    for a in (0.5, 1.0):
        ref = np.asarray(jax.scipy.special.betainc(a, a, jnp.asarray(t)))
        assert_close(np.asarray(schedules.beta_weight(a, a).gamma(t)), ref, atol=1e-13)
    s1 = energy.optimal_schedule(schedules.beta_weight(1.0, 1.0))
    assert_close(np.asarray(s1.alpha(t)), np.asarray(schedules.cosine_squared().alpha(t)), atol=1e-12)
    assert_close(np.asarray(s1.dalpha(t)), np.asarray(schedules.cosine_squared().dalpha(t)), atol=1e-12)


def test_weights_hash_by_value():
    assert schedules.beta_weight(0.9, 0.3) == schedules.beta_weight(0.9, 0.3)
    assert len({schedules.beta_weight(1, 1), schedules.linear_weight(), schedules.beta_weight(1.0, 1.0)}) == 1
    assert schedules.beta_weight(0.9, 0.3) != schedules.beta_weight(0.3, 0.9)


def test_as_path_matches_the_conversion():
    """The closed forms in Chen's time equal the toolkit schedules through chen_alpha / chen_dalpha."""
    tau, inner = GRID, slice(21, -21)  # compare on 0.01 <= tau <= 0.99
    for s in chen_schedule_list():
        p = energy.as_path(s)
        a, a_ref = np.asarray(p.alpha(tau))[inner], np.asarray(schedules.chen_alpha(s, tau))[inner]
        d, d_ref = np.asarray(p.dalpha(tau))[inner], np.asarray(schedules.chen_dalpha(s, tau))[inner]
        assert_close(a, a_ref, atol=1e-13, err_msg=repr(s))
        assert_close(d, d_ref, rtol=1e-11, err_msg=repr(s))


def test_weight_for_inverts_optimal():
    """Every schedule is optimal for exactly one gamma = (2/pi) arcsin sqrt(alpha_C): linear <-> Beta(0.5, 0.5)."""
    tau = GRID
    w = energy.weight_for(schedules.linear())
    assert_close(np.asarray(w.gamma(tau)), np.asarray(schedules.beta_weight(0.5, 0.5).gamma(tau)), atol=1e-13)
    for s in (schedules.cosine(), schedules.chen_sine(), schedules.polynomial(2.0)):
        back = energy.optimal_path(energy.weight_for(s))
        assert_close(np.asarray(back.alpha(tau)), np.asarray(energy.as_path(s).alpha(tau)), atol=1e-13)
        assert_close(float(energy.one_token_energy(s, energy.weight_for(s)).value), PI2, rtol=1e-12)


# ================================ paths and rates =====================================================
def _check_rates_generate_the_path(q, alpha, tau):
    fc = energy.forward_equation(q, alpha, tau)
    assert fc.residual <= 1e-10 * fc.scale, (fc.residual, fc.scale)
    assert_close(fc.dp.sum(), 0.0, atol=1e-12 * fc.scale)  # mass is conserved


@settings(max_examples=3)
@given(energy_joints(), paths_st, taus)
def test_rates_generate_the_path(q, alpha, tau):
    """Kolmogorov forward: d/dtau p_tau (jax.jvp) = Q_tau^T p_tau, to 1e-10 of the terms that cancel."""
    _check_rates_generate_the_path(q, alpha, tau)


@pytest.mark.slow
@settings(max_examples=80)
@given(energy_joints(), paths_st, taus)
def test_rates_generate_the_path_many(q, alpha, tau):
    _check_rates_generate_the_path(q, alpha, tau)


def _check_conditional_rates_average(q, alpha, tau):
    Q = np.asarray(energy.unmasking_rates(q, alpha, tau))
    avg = np.asarray(energy.averaged_conditional_rates(q, alpha, tau))
    p = np.asarray(energy.marginal_path(q, alpha, tau))
    live = p > 0
    assert_close(avg[live], Q[live], rtol=1e-10, atol=1e-12 * np.abs(Q).max())
    assert_close(p.sum(), 1.0, rtol=1e-12)  # the path is a distribution


@settings(max_examples=6)
@given(energy_joints(max_length=3), paths_st, taus)
def test_conditional_rates_average_to_marginal(q, alpha, tau):
    """Chen2025 Eq. 6: sum_x1 q(x1 | z) Q_{tau|1}(z, x | x1) = Q_tau(z, x) wherever p_tau(z) > 0 (1e-10)."""
    _check_conditional_rates_average(q, alpha, tau)


@pytest.mark.slow
@settings(max_examples=60)
@given(energy_joints(), paths_st, taus)
def test_conditional_rates_average_to_marginal_many(q, alpha, tau):
    _check_conditional_rates_average(q, alpha, tau)


def test_path_and_rates_pinned_one_token():
    """One token, V = 2, q = (0.3, 0.7), linear alpha_C = tau: p_tau = (0.3 tau, 0.7 tau, 1 - tau) over (0, 1, M);
    Q_tau(M -> v) = q(v) / (1 - tau) (derived by hand)."""
    q = Joint(np.array([0.3, 0.7]), 2, 1)
    tau = 0.25
    assert_close(np.asarray(energy.marginal_path(q, schedules.linear(), tau)), np.array([0.075, 0.175, 0.75]))
    Q = np.asarray(energy.unmasking_rates(q, schedules.linear(), tau))
    assert_close(Q[2, 0], np.array([0.4, 0.7 / 0.75]), rtol=1e-13)
    assert_close(Q[:2], np.zeros((2, 1, 2)))


# ================================ the integrands, by explicit sums with the public functions ========
def _explicit_integrands(q, alpha, tau):
    """(K, C, G) at tau: the three energies' integrands (times gamma') summed explicitly over every partial state
    z and every unmasking move z -> x, with marginal_path / unmasking_rates and, for each x1 in q's support,
    conditional_path / conditional_rates; G from d/dtau sqrt(alpha_C) and sqrt(1 - alpha_C) by jax.jvp."""
    V, L = q.vocab_size, q.length
    st = all_states(V, L)
    moves = [(z, i, v) for z in range(len(st)) for i in range(L) if st[z, i] == V for v in range(V)]
    child = []
    for z, i, v in moves:
        x = st[z].copy()
        x[i] = v
        child.append(np.ravel_multi_index(tuple(x), (V + 1,) * L))

    def kinetic_sum(p, Q):
        out = 0.0
        for (z, i, v), c in zip(moves, child):
            if p[z] * Q[z, i, v] > 0:
                out += p[z] * Q[z, i, v] ** 2 / p[c]
        return out

    K = kinetic_sum(np.asarray(energy.marginal_path(q, alpha, tau)), np.asarray(energy.unmasking_rates(q, alpha, tau)))
    C = 0.0
    for x1, w in zip(q.sequences(), np.asarray(q.probs)):
        if w > 0:
            C += w * kinetic_sum(
                energy.conditional_path(x1, alpha, tau, V), energy.conditional_rates(x1, alpha, tau, V)
            )
    path = energy.as_path(alpha)
    t0 = jnp.float64(tau)
    _, d1 = jax.jvp(lambda t: jnp.sqrt(path.alpha(t)), (t0,), (jnp.ones_like(t0),))
    _, d2 = jax.jvp(lambda t: jnp.sqrt(path.masked(t)), (t0,), (jnp.ones_like(t0),))
    G = energy.GEODESIC_C * L * float(d1**2 + d2**2)  # the same token law at every position, for every x1
    return K, C, G


@settings(max_examples=4)
@given(energy_joints(max_length=3), paths_st, st.sampled_from([0.2, 0.7]))
def test_integrands_are_explicit_sums(q, alpha, tau):
    """The module's vectorised integrands (and its shortcut for E_c: the same sum for every x1) equal the explicit
    sums over states and moves built from the public path and rate functions; pointwise K / C = kinetic_constant(q)
    and C / G = 2^(L-1)."""
    _check_integrands(q, alpha, tau)


@pytest.mark.slow
@settings(max_examples=40)
@given(energy_joints(), paths_st, st.sampled_from([0.03, 0.2, 0.7, 0.96]))
def test_integrands_are_explicit_sums_many(q, alpha, tau):
    _check_integrands(q, alpha, tau)


def _check_integrands(q, alpha, tau):
    K, C, G = _explicit_integrands(q, alpha, tau)
    s = energy._structure(q)
    la, lm, lda, _ = energy._log_angles(energy.as_path(alpha), np.array([tau]), np.array([1 - tau]))
    assert_close(energy._kinetic_sum(s, la, lm, lda)[0], K, rtol=1e-11)
    assert_close(energy._conditional_sum(q, s, la, lm, lda)[0], C, rtol=1e-11)
    path = energy.as_path(alpha)
    assert_close(energy._geodesic_sum(path, q.length, np.array([tau]), np.array([1 - tau]))[0], G, rtol=1e-11)
    assert_close(K / C, energy.kinetic_constant(q), rtol=1e-11)
    assert_close(C / G, 2.0 ** (q.length - 1), rtol=1e-11)


# ================================ the three energies =================================================
def _check_energy_ratios(q, a1, b1, gamma2, alpha2):
    # finite and away from the divergence at a_g = 2 a1 (there tau^(2 a1 - a_g - 1) leaves a tail the quadrature
    # only estimates): a_g = 1.5 a1, b_g = 1.5 b1
    gamma1 = schedules.beta_weight(1.5 * a1, 1.5 * b1)
    e1 = energy.energies(q, schedules.sin2_beta(a1, b1), gamma1)
    e2 = energy.energies(q, alpha2, gamma2)
    assume(np.isfinite(e2.one_token.value))
    c1, c2 = energy.kinetic_constant(q), energy.geodesic_constant(q.length)
    for e in (e1, e2):
        assert_close(e.c1, c1, rtol=1e-8)
        assert_close(e.c2, c2, rtol=1e-8)
        # and the closed forms of the module docstring: E_g = L J
        assert_close(e.geodesic.value, q.length * e.one_token.value, rtol=1e-8)
    closed = energy.beta_energy(a1, b1, *gamma1.params.values())
    assert abs(e1.one_token.value - closed) <= e1.one_token.error + 1e-12 * closed
    assert_close(e1.one_token.value, closed, rtol=1e-10)


@settings(max_examples=6)
@given(energy_joints(), beta_params, beta_params, beta_weights(), paths_st)
def test_energy_ratios_are_constant(q, a1, b1, gamma2, alpha2):
    """E_k / E_c = kinetic_constant(q) and E_c / E_g = 2^(L-1) for every (alpha, gamma) (Thm 3.1, 3.2), 1e-8."""
    _check_energy_ratios(q, a1, b1, gamma2, alpha2)


@pytest.mark.slow
@settings(max_examples=60)
@given(energy_joints(), beta_params, beta_params, beta_weights(), paths_st)
def test_energy_ratios_are_constant_many(q, a1, b1, gamma2, alpha2):
    _check_energy_ratios(q, a1, b1, gamma2, alpha2)


@settings(max_examples=5)
@given(energy_joints(full_support=True), beta_weights())
def test_full_support_constant_depends_on_V_L_only(q, gamma):
    """Full support: C_1 = ((V+1)/2)^(L-1), whatever the table (Chen2025 Thm 3.1: C_1 depends on (n, d) only)."""
    V, L = q.vocab_size, q.length
    e = energy.energies(q, energy.optimal_path(gamma), gamma)
    assert_close(e.c1, ((V + 1) / 2) ** (L - 1), rtol=1e-8)
    assert_close(energy.kinetic_constant(q), energy.full_support_kinetic_constant(V, L), rtol=1e-14)
    assert_close(e.one_token.value, PI2, rtol=1e-11)


def test_kinetic_constant_without_full_support_pinned():
    """C_1 counts the masked positions of the partial states q can reach: n_q / (L 2^(L-1)) (by hand below).

    Fig. 4 toy, V = 2, L = 5 (a = 0, b = 1). Target A, uniform on {aaaaa, bbbbb}: reachable states are the all-mask
    state (5 masks) and, per sequence, its 2^5 - 1 other maskings; n_q = 5 + 2 (5 * 2^4 - 5) = 155, C_1 = 155/80.
    Target B, 2 or 3 a's: a state with j visible a's and k visible b's is reachable iff j <= 3 and k <= 3;
    the excluded ones with a mask are (j, k) = (4, 0) and (0, 4), 5 states of 1 mask each, so
    n_q = L (V+1)^(L-1) - 10 = 405 - 10 = 395, C_1 = 395/80. A point mass: C_1 = 1.
    """
    A = Joint.from_support([[0] * 5, [1] * 5], 2, 5)
    X = all_sequences(2, 5)
    Bq = Joint.from_support(X[np.isin((X == 0).sum(1), [2, 3])], 2, 5)
    assert energy.kinetic_constant(A) == 155 / 80
    assert energy.kinetic_constant(Bq) == 395 / 80
    assert energy.kinetic_constant(Joint.from_support([[1, 0, 1]], 2, 3)) == 1.0
    e = energy.energies(A, schedules.sin2_beta(0.9, 0.3), schedules.beta_weight(0.5, 0.5))
    assert_close(e.c1, 155 / 80, rtol=1e-10)
    assert_close(e.c2, 16.0, rtol=1e-10)
    # weights do not matter, only the support
    Bw = Joint.from_support(X[np.isin((X == 0).sum(1), [2, 3])], 2, 5, weights=np.arange(1, 21))
    assert energy.kinetic_constant(Bw) == 395 / 80


@settings(max_examples=5)
@given(energy_joints(max_length=1), beta_weights(), paths_st)
def test_one_token_energies_coincide(q, gamma, alpha):
    """One token: E_k = E_c = E_g = int alpha'^2 / (alpha (1 - alpha) gamma') dtau (Chen2025), 1e-10."""
    e = energy.energies(q, alpha, gamma)
    assume(np.isfinite(e.one_token.value))
    J = e.one_token.value
    for part in (e.kinetic, e.conditional, e.geodesic):
        assert_close(part.value, J, rtol=1e-10)


# ================================ optimality ==========================================================
@settings(max_examples=8)
@given(st.one_of(beta_weights(), st.lists(st.floats(0.05, 1.0), min_size=2, max_size=6)))
def test_optimal_schedule_attains_pi_squared(w):
    """alpha* = sin^2((pi/2) gamma) has J = pi^2 for every gamma (Beta and Bernstein weights), within the
    quadrature's reported error (and 1e-11)."""
    if isinstance(w, list):
        c = np.concatenate([[0.0], np.cumsum(w)])
        w = energy.bernstein_weight(c / c[-1])
    J = energy.one_token_energy(energy.optimal_path(w), w)
    assert abs(J.value - PI2) <= max(J.error, 1e-11 * PI2), (J.value - PI2, J.error)
    assert J.error < 1e-11 * PI2


@settings(max_examples=12)
@given(beta_params, beta_params, beta_params, beta_params)
def test_beta_alternatives_never_beat_pi_squared(a1, b1, a, b):
    """Beta-parameterised alternatives: J = pi^2 (1 + chi^2) >= pi^2, the quadrature equals the closed form
    [ours] within its reported error, and the minimum is at (a1, b1) = (a, b)."""
    closed = energy.beta_energy(a1, b1, a, b)
    assert closed >= PI2 * (1 - 1e-15)
    if (a1, b1) == (a, b):
        assert_close(closed, PI2, rtol=1e-13)
    if np.isfinite(closed) and min(2 * a1 - a, 2 * b1 - b) >= 0.1:  # away from the divergence boundary
        J = energy.one_token_energy(schedules.sin2_beta(a1, b1), schedules.beta_weight(a, b))
        assert abs(J.value - closed) <= J.error + 1e-13 * closed, (J.value, closed, J.error)
        assert J.error <= 1e-9 * closed
    if not np.isfinite(closed):
        assert np.isinf(energy.one_token_energy(schedules.sin2_beta(a1, b1), schedules.beta_weight(a, b)).value)


@settings(max_examples=5)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=7), beta_weights())
def test_bernstein_alternatives_never_beat_pi_squared(incs, gamma):
    """Random monotone Bezier (Bernstein) paths: J >= pi^2 - reported error, for Beta weights."""
    d = np.asarray(incs) + 1e-3
    c = np.concatenate([[0.0], np.cumsum(d)])
    J = energy.one_token_energy(energy.bernstein_path(c / c[-1]), gamma)
    assert J.value >= PI2 - J.error


def test_minimiser_recovers_the_optimal_schedule():
    """A numerical minimiser (BFGS on softmax increments) over degree-5 Bernstein paths recovers alpha* for a
    cubic weight (alpha* is in the family): sup |alpha - alpha*| <= 1e-8 and J = pi^2 to 1e-12."""
    w = energy.bernstein_weight([0.0, 0.4, 0.5, 1.0])
    fit = energy.minimise_bernstein(w, 5, seed=1)
    tau = GRID
    gap = np.abs(np.asarray(fit.path.alpha(tau)) - np.asarray(energy.optimal_path(w).alpha(tau)))
    assert gap.max() <= 1e-8
    assert_close(fit.energy, PI2, rtol=1e-12)
    # degree elevation of (0, .4, .5, 1) to degree 5 by hand: (0, .24, .39, .52, .7, 1)
    assert_close(fit.coeffs, np.array([0.0, 0.24, 0.39, 0.52, 0.7, 1.0]), atol=1e-7)


# ================================ quadrature ==========================================================
def test_quadrature_error_bounds_generic_schedules():
    """Schedules without a closed form in Chen's time lose the ends (1 - alpha rounds); the reported error still
    bounds the distance to the exact value. alpha(t) = (1-t)^3 (alpha_C = tau^3) with a Beta(a, b) weight:
    J = 9 B(a, b) int tau^(2-a) (1-tau)^(-b) / (1 + tau + tau^2) (scipy's algebraic-weight quad);
    alpha(t) = cos^2(pi t / 2): J = pi^2 B(a, b) B(2 - a, 2 - b)."""
    from scipy.integrate import quad

    cubic = schedules.from_function(lambda t: (1 - t) ** 3, name="cubic")
    cos2 = schedules.from_function(lambda t: jnp.cos(jnp.pi * t / 2) ** 2, name="cos2")
    for a, b in [(0.5, 0.5), (0.3, 0.3), (0.9, 0.3)]:
        ref = 9 * B(a, b) * quad(lambda x: 1 / (1 + x + x * x), 0, 1, weight="alg", wvar=(2 - a, -b), epsrel=1e-13)[0]
        J = energy.one_token_energy(cubic, schedules.beta_weight(a, b))
        assert abs(J.value - ref) <= J.error, (a, b, J.value - ref, J.error)
        assert J.error < 1e-4 * ref
    for a, b in [(1.0, 1.0), (0.9, 0.3), (1.5, 1.2)]:
        ref = PI2 * B(a, b) * B(2 - a, 2 - b)
        J = energy.one_token_energy(cos2, schedules.beta_weight(a, b))
        assert abs(J.value - ref) <= J.error, (a, b, J.value - ref, J.error)
        exact = energy.one_token_energy(schedules.cosine_squared(), schedules.beta_weight(a, b))
        assert abs(exact.value - ref) <= exact.error and exact.error < 1e-12 * ref


def test_quadrature_detects_divergence():
    """linear alpha with the linear weight: J = int 1/(tau (1 - tau)) = inf; tau^(-1/2) integrates to 2."""
    assert np.isinf(energy.one_token_energy(schedules.linear(), schedules.linear_weight()).value)
    I = energy.tanh_sinh(lambda t, s: 1 / np.sqrt(t))
    assert abs(I.value - 2.0) <= I.error and I.error < 1e-12
    I = energy.tanh_sinh(lambda t, s: t**-0.9)  # int = 10; truncation at 1e-275 leaves 10 * 1e-27.5
    assert abs(I.value - 10.0) <= I.error and I.error < 1e-11


# ================================ discrete energy =====================================================
def test_discrete_energy_pinned():
    """N equal steps along the geodesic: 4 * sum 4 sin^2(pi/(4N)) / (1/N) = 16 N^2 sin^2(pi / (4N)) < pi^2.
    N = 1: 16 sin^2(pi/4) = 8; N = 2: 64 sin^2(pi/8) = 32 (1 - sqrt(2)/2)."""
    assert_close(energy.discrete_energy([0.0, 1.0], [0.0, 1.0]), 8.0, rtol=1e-15)
    assert_close(energy.discrete_optimum(2), 32 * (1 - np.sqrt(2) / 2), rtol=1e-14)
    g = np.linspace(0, 1, 3)
    assert_close(energy.discrete_energy(np.sin(np.pi / 2 * g) ** 2, g), 32 * (1 - np.sqrt(2) / 2), rtol=1e-14)
    assert_close(energy.optimal_discrete_alphas(g), np.sin(np.pi / 2 * g) ** 2, atol=1e-15)


def test_discrete_energy_converges():
    """E_N -> J on the uniform tau grid. Measured rates (log-log slope of |E_N - J|, N = 16..256): 2 when the
    integrand is smooth on [0, 1] (smooth paths, weights with gamma' > 0 at both ends); 1.5 for the linear schedule
    under the arcsine weight Beta(0.5, 0.5) (its optimum, J = pi^2: the integrand ~ tau^(-1/2) at the ends), and
    slower still near the divergence (sin2_beta(0.9, 0.3) under Beta(0.5, 0.5): integrand ~ sigma^(-0.9), rate ~0.1).
    Only weights and paths with finite J are used (chen_sine or linear have J = inf under gamma' > 0 at the ends)."""
    Ns = np.array([16, 32, 64, 128, 256])

    def slope(alpha, w):
        J = energy.one_token_energy(alpha, w).value
        err = np.array([abs(energy.discrete_energy_on_grid(alpha, w, int(N)) - J) for N in Ns])
        return -np.polyfit(np.log(Ns), np.log(err), 1)[0]

    for w in (energy.bernstein_weight([0.0, 0.2, 0.9, 1.0]), schedules.linear_weight()):
        for alpha in (schedules.cosine_squared(), energy.bernstein_path([0.0, 0.1, 0.8, 1.0])):
            assert 1.9 <= slope(alpha, w) <= 2.1, (alpha, w)
    assert 1.4 <= slope(schedules.linear(), schedules.beta_weight(0.5, 0.5)) <= 1.6
    assert slope(schedules.sin2_beta(0.9, 0.3), schedules.beta_weight(0.5, 0.5)) < 0.3


@settings(max_examples=10)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_equal_spacing_beats_drawn_discretisations(N, seed):
    """With gammas equally spaced, points equally spaced in gamma along the geodesic (alpha_j = sin^2(pi j/(2N)))
    minimise c sum chord^2 / Delta gamma: every drawn set of points (uniform random, Beta-schedule points) is
    higher. For an unequal gamma grid the minimiser is sin(Delta phi_j) proportional to Delta gamma_j [ours],
    which beats sin^2((pi/2) gamma_j)."""
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 1, N + 1)
    best = energy.discrete_energy(np.sin(np.pi / 2 * g) ** 2, g)
    assert_close(best, energy.discrete_optimum(N), rtol=1e-13)
    for _ in range(20):
        a = np.concatenate([[0.0], np.sort(rng.random(N - 1)), [1.0]])
        assert energy.discrete_energy(a, g) >= best - 1e-12
    for a1, b1 in rng.choice([0.2, 0.5, 0.9, 1.0, 1.5], size=(5, 2)):
        a, _ = energy.grid_points(schedules.sin2_beta(a1, b1), schedules.linear_weight(), N)
        assert energy.discrete_energy(a, g) >= best - 1e-12
    # an unequal gamma grid
    gu = np.concatenate([[0.0], np.sort(rng.random(N - 1)), [1.0]])
    assume(np.all(np.diff(gu) > 1e-6))
    opt = energy.optimal_discrete_alphas(gu)
    e_opt = energy.discrete_energy(opt, gu)
    assert e_opt <= energy.discrete_energy(np.sin(np.pi / 2 * gu) ** 2, gu) + 1e-12
    for _ in range(10):
        a = np.concatenate([[0.0], np.sort(rng.random(N - 1)), [1.0]])
        assert energy.discrete_energy(a, gu) >= e_opt - 1e-12


def test_free_grid_collapses():
    """Finding [ours]: if the gamma grid is free too, sum chord^2 / Delta gamma has infimum c * (chord of the whole
    path)^2 = 4 * 2 = 8 for every N (triangle inequality + Cauchy-Schwarz), approached by collapsing all steps into
    one; so the discrete optimum needs the gamma grid fixed.
    N = 2: (alpha_1, gamma_1) = (0, eps) gives 8 / (1 - eps)."""
    eps = 1e-6
    assert_close(energy.discrete_energy([0.0, 0.0, 1.0], [0.0, eps, 1.0]), 8.0 / (1 - eps), rtol=1e-12)
    assert energy.discrete_energy([0.0, 0.0, 1.0], [0.0, eps, 1.0]) < energy.discrete_optimum(2)


# ================================ bad input ===========================================================
def test_bad_input():
    q = Joint.from_support([[0, 1]], 2, 2)
    with pytest.raises(ValueError, match="not increasing"):
        schedules.weight_from_function(lambda t: t + 0.3 * jnp.sin(6 * jnp.pi * t))
    with pytest.raises(ValueError, match="gamma\\(1\\) = 1"):
        schedules.weight_from_function(lambda t: 0.5 * t)
    wrong = schedules.Schedule(lambda t: 1.0 - t, lambda t: jnp.ones_like(t), "wrong_sign")
    with pytest.raises(ValueError, match="alpha'"):
        energy.energies(q, wrong, schedules.linear_weight())
    big = joint_of_kind("uniform", 3, 8, 0)
    with pytest.raises(ValueError, match="closed forms"):
        energy.energies(big, schedules.linear(), schedules.linear_weight(), max_bytes=1e6)
    with pytest.raises(TypeError, match="Weight"):
        energy.one_token_energy(schedules.linear(), schedules.linear())
    with pytest.raises(ValueError, match="increase strictly"):
        energy.discrete_energy([0.0, 0.5, 1.0], [0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="rise from 0 to 1"):
        energy.discrete_energy([0.0, 0.7, 0.5], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="tau must lie"):
        energy.forward_equation(q, schedules.linear(), 1.0)
    with pytest.raises(ValueError, match="Beta"):
        schedules.beta_weight(0.0, 1.0)
    with pytest.raises(ValueError, match="coefficients"):
        energy.bernstein_path([0.0, 0.6, 0.4, 1.0])


def test_energies_largest_test_instance():
    """The explicit sums over L = 4, V = 3 (256 states, 768 moves) converge to 1e-10 relative."""
    q = joint_of_kind("dirichlet", 3, 4, 1)
    e = energy.energies(q, schedules.sin2_beta(0.9, 0.3), schedules.beta_weight(0.5, 0.5))
    assert np.isfinite(e.kinetic.value) and e.kinetic.error < 1e-10 * e.kinetic.value


# ================================ the script: experiments/energy_schedules.py ========================
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_quick(load_script("energy_schedules"), tmp_path_factory)


def _first_batch_law(probs, L=5):
    """P(K = k) for K = size of the first non-empty reveal batch (Bernoulli reveal probabilities ``probs``), by
    hand: sum_n P(nothing revealed before step n) P(Bin(L, r_n) = k)."""
    from scipy.stats import binom

    out, none = np.zeros(L + 1), 1.0
    for r in probs:
        out[1:] += none * binom.pmf(np.arange(1, L + 1), L, r)
        none *= (1 - r) ** L
    return out


def _tv_target_A(row):
    """Target A (uniform on aaaaa, bbbbb), exact denoiser, derived by hand: the output is on the support iff the
    first non-empty reveal batch (k tokens drawn independently, a or b with probability 1/2 each) agrees, with
    probability 2^(1 - k); afterwards the denoiser is deterministic. By symmetry the mass on the support splits
    equally, so TV = 1 - E[2^(1 - K)] and, for fixed counts, KL = (k - 1) log 2 with k the first nonzero count."""
    if row["reveal"] == "fixed":
        k = next(int(c) for c in str(row["counts"]).split("-") if int(c) > 0)
        return 1 - 2.0 ** (1 - k), (k - 1) * np.log(2)
    pk = _first_batch_law(np.asarray(schedules.reveal_probs(schedules.sin2_beta(row["a"], row["b"]), row["steps"])))
    ks = np.arange(6)
    return 1 - float((pk[1:] * 2.0 ** (1 - ks[1:])).sum()), None


def _check_toy_frame(frame, rows_to_recompute, bernoulli_every=1):
    from theory import metrics
    from theory.sampling import exact_law

    targets = energy.toy_targets()
    A = frame[frame.target == "A"]
    A = pd.concat([A[A.reveal == "fixed"], A[A.reveal == "bernoulli"].iloc[::bernoulli_every]])
    for _, r in A.iterrows():  # target-A rows against the hand derivation (all fixed-count rows)
        tv, kl = _tv_target_A(r)
        assert_close(r["tv"], tv, rtol=1e-10, atol=1e-12)
        if kl is not None:
            assert_close(r["kl"], kl, rtol=1e-10, atol=1e-12)
    for _, r in frame.iloc[rows_to_recompute].iterrows():  # recomputed through the library
        s = schedules.sin2_beta(r["a"], r["b"])
        q = targets[r["target"]]
        law = exact_law(q, None, int(r["steps"]), reveal=r["reveal"], schedule=s)
        assert_close(r["kl"], metrics.kl(q.probs, law.probs), rtol=1e-10, atol=1e-12)
        assert_close(r["tv"], metrics.tv(q.probs, law.probs), rtol=1e-10, atol=1e-12)
        assert_close(r["energy"], energy.beta_energy(r["a"], r["b"], 1.0, 1.0), rtol=1e-12)
        counts = "-".join(str(int(k)) for k in schedules.fixed_counts(s, int(r["steps"]), 5))
        assert r["counts"] == counts


def test_script_quick_outputs(quick):
    out, res = quick
    for name in ("", "_landscape", "_laws", "_corr"):
        assert (out / f"energy_schedules{name}.csv").exists() and (out / f"energy_schedules{name}.png").exists()
    meta = json.loads((out / "energy_schedules.json").read_text())
    assert meta["steps"] == 3 and meta["reveals"] == ["fixed", "bernoulli"]
    frame = pd.read_csv(out / "energy_schedules.csv", keep_default_na=False, na_values=[""])
    # every code path of the default run: both targets, both reveal modes, several N, a step revealing nothing
    assert set(frame.target) == {"A", "B"} and set(frame.reveal) == {"fixed", "bernoulli"}
    assert set(frame.steps) == {2, 3} and (frame.zero_steps > 0).any()
    _check_toy_frame(frame, [0, 5, len(frame) - 1])


def test_script_quick_landscape(quick):
    """(a): the quadrature equals the closed form within its reported error; J = pi^2 exactly at the weight's own
    parameters and nowhere lower; inf exactly where 2a <= a_g or 2b <= b_g."""
    out, _ = quick
    land = pd.read_csv(out / "energy_schedules_landscape.csv")
    fin = np.isfinite(land.energy_closed)
    assert (fin == ((2 * land.a > land.a_gamma) & (2 * land.b > land.b_gamma))).all()
    assert np.isinf(land.energy_quad[~fin]).all()
    near = fin & (2 * land.a - land.a_gamma >= 0.1) & (2 * land.b - land.b_gamma >= 0.1)
    assert (np.abs(land.energy_quad - land.energy_closed)[near] <= land.quad_error[near] + 1e-9).all()
    assert (land.energy_closed[fin] >= PI2 * (1 - 1e-14)).all()
    own = land[(land.a == land.a_gamma) & (land.b == land.b_gamma)]
    assert len(own) >= 1
    assert_close(own.energy_closed.to_numpy(), np.full(len(own), PI2), rtol=1e-12)


def test_script_quick_best_and_correlations(quick):
    """The best schedules and Spearman correlations are recomputed from the CSV (scipy), the laws sum to 1 and
    the target rows are the targets."""
    from scipy.stats import spearmanr

    out, res = quick
    frame = pd.read_csv(out / "energy_schedules.csv", keep_default_na=False, na_values=[""])
    corr = pd.read_csv(out / "energy_schedules_corr.csv")
    assert set(corr.target) == {"A", "B", "markov", "copy_pairs", "sudoku"}
    for _, c in corr[corr.target.isin(["A", "B"])].iterrows():
        g = frame[(frame.target == c.target) & (frame.reveal == c.reveal) & (frame.steps == c.steps)]
        ties = [np.array([float(f"{v:.10g}") if abs(v) >= 1e-12 else 0.0 for v in x]) for x in (g[c.energy_kind], g.kl)]
        assert_close(c.spearman, spearmanr(*ties)[0], rtol=1e-9)
    best = res["best"]
    for _, b in best.iterrows():
        g = frame[(frame.target == b.target) & (frame.reveal == b.reveal) & (frame.steps == 3)]
        assert abs(b.kl - g.kl.min()) <= 1e-10
        assert b.ties == (g.kl <= g.kl.min() + 1e-10).sum()
    laws = pd.read_csv(out / "energy_schedules_laws.csv")
    for (_, _), g in laws.groupby(["target", "law"]):
        assert_close(g.prob.sum(), 1.0, rtol=1e-12)
        assert len(g) == 32
    t = laws[(laws.target == "A") & (laws.law == "target")].set_index("sequence").prob
    assert t["aaaaa"] == 0.5 and t["bbbbb"] == 0.5 and t.sum() == 1.0


def test_committed_figures_recompute():
    """The committed figures/energy_schedules.csv is what the default run writes: every target-A row against the
    hand derivation and a few rows recomputed through the library."""
    path = ROOT / "figures" / "energy_schedules.csv"
    if not path.exists():
        pytest.skip("figures/energy_schedules.csv not generated yet")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert len(frame) == 10 * 10 * 4 * 2 * 2
    _check_toy_frame(frame, [0, 777, len(frame) - 1], bernoulli_every=20)
    land = pd.read_csv(ROOT / "figures" / "energy_schedules_landscape.csv")
    assert len(land) == 3 * 20 * 20
    for i in (0, 421, 1000, len(land) - 1):
        r = land.iloc[i]
        assert_close(r.energy_closed, energy.beta_energy(r.a, r.b, r.a_gamma, r.b_gamma), rtol=1e-11)
    tf = pd.read_csv(ROOT / "figures" / "energy_schedules_tasks.csv", keep_default_na=False, na_values=[""])
    _check_speedups(tf, pd.read_csv(ROOT / "figures" / "energy_schedules_speedup.csv"))


def test_script_quick_tasks(quick):
    """(c): a task row recomputed through the library; copy pairs L = 4 with counts 2-2, by hand: the first two
    positions form a pair with probability 1/3 (then both pairs agree with probability 1/4), otherwise the result is
    always valid and, by symmetry, uniform: p = 3/16 on each of the 4 sequences, KL = log(4/3); one token per step
    is exact (KL = 0). The speed-up table is recomputed from the CSV."""
    from synthetic import tasks
    from theory import metrics
    from theory.sampling import exact_law

    out, res = quick
    tf = pd.read_csv(out / "energy_schedules_tasks.csv", keep_default_na=False, na_values=[""])
    assert set(tf.family) == {"markov", "copy_pairs", "sudoku"} and set(tf.split) == {"tune", "eval"}
    assert {"linear", "chen_sine", "cosine_squared", "beta"} <= set(tf.schedule)
    cp = tf[(tf.task == "copy_pairs(L=4)") & (tf.counts == "2-2")]
    assert len(cp) > 0
    assert_close(cp.kl.to_numpy(), np.full(len(cp), np.log(4 / 3)), rtol=1e-10)
    single = tf[tf.counts.map(lambda c: set(c.split("-")) == {"1"})]
    assert (np.abs(single.kl) < 1e-12).all()
    r = tf[(tf.family == "sudoku") & (tf.split == "eval") & (tf.schedule == "chen_sine")].iloc[0]
    task = tasks.sudoku_task(num_blanks=4, seed=11, min_solutions=2)
    q = task.joint()
    s = schedules.chen_sine()
    counts = [int(k) for k in schedules.fixed_counts(s, int(r.steps), q.length)]
    assert "-".join(map(str, counts)) == r.counts
    assert_close(r.kl, metrics.kl(q.probs, exact_law(q, None, int(r.steps), reveal="fixed", counts=counts).probs))
    _check_speedups(tf, pd.read_csv(out / "energy_schedules_speedup.csv"))


def _check_speedups(tf, sp):
    """The speed-up table against the task rows: tuned (a, b) = least mean tuning KL, its held-out KL, and the
    fewest steps linear needs to reach it."""
    assert len(sp) > 0
    for _, row in sp.iterrows():
        g = tf[(tf.family == row.family) & (tf.steps == row.steps)]
        tune = g[(g.split == "tune") & (g.schedule == "beta")].groupby(["a", "b"]).kl.mean()
        assert tune[(row.best_a, row.best_b)] <= tune.min() + 1e-10
        ev = g[g.split == "eval"]
        assert_close(row.beta_kl, ev[(ev.a == row.best_a) & (ev.b == row.best_b)].kl.mean(), rtol=1e-9, atol=1e-12)
        lin = tf[(tf.family == row.family) & (tf.split == "eval") & (tf.schedule == "linear")]
        lin = lin.groupby("steps").kl.mean()
        reach = lin[lin <= row.beta_kl + 1e-10]
        if len(reach):
            assert row.linear_steps_needed == reach.index.min()
            assert_close(row.saving, reach.index.min() / row.steps)
