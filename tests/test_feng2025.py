"""Feng2025 (issue 4): SER closed forms of the copy-pairs worst case, TER bounds, steps vs length."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import languages as la
from synthetic import steps_length as sl
from synthetic import worst_case as wc
from theory import bounds as B
from theory import metrics, policies
from theory import schedules as S
from theory.denoiser import smoothed, smoothing_kl_bound
from theory.sampling import exact_law, sample

from conftest import assert_close, load_script, one_row, run_quick
from strategies import entropy_ngrams, schedules_st

even_lengths = st.sampled_from([2, 4, 6])


def _exact_ser(L, N=None, reveal="bernoulli", schedule=None, counts=None):
    q = wc.copy_pairs(L).joint()
    law = exact_law(q, policies.RandomOrder(), N, reveal=reveal, schedule=schedule, counts=counts)
    return metrics.sequence_error_rate(np.asarray(law.probs), q)


# ---- SER closed forms == enumeration ------------------------------------------------------------------
@settings(max_examples=15)
@given(L=even_lengths, N=st.integers(1, 7), sched=schedules_st)
def test_copy_pairs_ser_bernoulli_equals_enumeration(L, N, sched):
    closed = B.copy_pairs_ser_bernoulli(L, S.reveal_probs(sched, N))
    assert abs(closed - _exact_ser(L, N, "bernoulli", sched)) <= 1e-12


@settings(max_examples=15)
@given(L=even_lengths, N=st.integers(1, 7), sched=schedules_st)
def test_copy_pairs_ser_fixed_equals_enumeration(L, N, sched):
    closed = B.copy_pairs_ser_fixed(L, S.fixed_counts(sched, N, L))
    assert abs(closed - _exact_ser(L, N, "fixed", sched)) <= 1e-12


@settings(max_examples=15)
@given(L=even_lengths, data=st.data())
def test_copy_pairs_ser_fixed_arbitrary_counts(L, data):
    N = data.draw(st.integers(1, 5))
    cuts = sorted(data.draw(st.lists(st.integers(0, L), min_size=N - 1, max_size=N - 1)))
    counts = np.diff(np.array([0] + cuts + [L], dtype=np.int64))
    assert abs(B.copy_pairs_ser_fixed(L, counts) - _exact_ser(L, reveal="fixed", counts=counts)) <= 1e-12


def test_copy_pairs_pinned_values():
    # independent hand derivations (see theory/bounds.py docstrings)
    lin = S.linear()
    assert_close(B.copy_pairs_ser_bernoulli(4, S.reveal_probs(lin, 2)), 7 / 16, rtol=0, atol=1e-15)  # pi=(1/2,1/2)
    assert_close(B.copy_pairs_ser_bernoulli(4, S.reveal_probs(lin, 1)), 3 / 4, rtol=0, atol=1e-15)
    # counts (2, 2): 6 equally likely step-1 sets; 2 of them collide both blocks -> E 2^-C = 2/6/4 + 4/6
    assert_close(B.copy_pairs_ser_fixed(4, np.array([2, 2])), 1 / 4, rtol=0, atol=1e-15)
    assert_close(B.copy_pairs_ser_fixed(4, np.array([4])), 3 / 4, rtol=0, atol=1e-15)
    assert_close(B.unconditional_reveal_probs(S.reveal_probs(lin, 4)), np.full(4, 0.25), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        B.copy_pairs_ser_bernoulli(5, S.reveal_probs(lin, 2))
    with pytest.raises(ValueError):
        B.unconditional_reveal_probs([0.5, 0.5])  # tokens left masked
    with pytest.raises(ValueError):
        B.copy_pairs_ser_fixed(4, np.array([1, 2]))


@pytest.mark.slow  # the committed figure's copy-pairs MC rows (L <= 1024) get the same check in test_committed_rows_*
@pytest.mark.parametrize("reveal", ["bernoulli", "fixed"])
def test_copy_pairs_mc_ser_large_L_within_4_se(reveal):
    L, N, num = 512, 128, 400
    lin = S.linear()
    closed = (
        B.copy_pairs_ser_bernoulli(L, S.reveal_probs(lin, N))
        if reveal == "bernoulli"
        else B.copy_pairs_ser_fixed(L, S.fixed_counts(lin, N, L))
    )
    m = sl.mc_metrics(jax.random.PRNGKey(7), wc.copy_pairs(L), N, num=num, reveal=reveal, schedule=lin)
    se = math.sqrt(closed * (1 - closed) / num)  # binomial SE at the exact value
    assert abs(m["ser"] - closed) <= 4 * se


def test_block_product_law_matches_enumeration():
    lang = wc.noisy_copy_pairs(6, 0.2)
    for N in (1, 2, 3):
        e = sl.exact_metrics(lang, N, reveal="bernoulli")
        b = wc.block_bernoulli_metrics(lang, N)
        assert_close(b["ter_gap"], e["ter_gap"], rtol=1e-10)
    cp = wc.copy_pairs(6)
    assert_close(wc.block_bernoulli_metrics(cp, 3)["ser"], _exact_ser(6, 3), rtol=1e-12)


# ---- KL <= summed dependence; TER gap within the locality bound -------------------------------------------
@settings(max_examples=12)
@given(lang=entropy_ngrams(max_states=4**4), N=st.integers(1, 5), reveal=st.sampled_from(["bernoulli", "fixed"]))
def test_kl_below_dependence_and_ter_gap_within_bound(lang, N, reveal):
    q = lang.joint()
    dec = B.dependence_kl_bound(q, policies.RandomOrder(), N, reveal=reveal)
    assert dec.kl <= dec.dependence + 1e-10
    law = exact_law(q, policies.RandomOrder(), N, reveal=reveal)
    res = B.ter_gap_locality_bound(np.asarray(law.probs), lang)
    gap = metrics.log_ter(np.asarray(law.probs), q) - q.entropy() / q.length
    assert_close(res["ter_gap"], gap, rtol=1e-9, atol=1e-12)
    assert abs(gap) <= res["bound"] + 1e-12


@settings(max_examples=8)
@given(lang=entropy_ngrams(max_states=4**4), N=st.integers(1, 4), lam=st.sampled_from([0.01, 0.1, 0.3]))
def test_learning_error_kl_rate_bound_and_ter_move(lang, N, lam):
    q = lang.joint()
    d = smoothed(q.denoiser(), lam)
    dec = B.dependence_kl_bound(q, policies.RandomOrder(), N, denoiser=d, reveal="bernoulli")
    assert dec.kl <= dec.model_error + dec.dependence + 1e-10
    assert dec.model_error <= q.length * smoothing_kl_bound(lam) + 1e-12  # each token once, KL <= eps
    p0 = np.asarray(exact_law(q, policies.RandomOrder(), N, reveal="bernoulli").probs)
    p1 = np.asarray(exact_law(q, policies.RandomOrder(), N, reveal="bernoulli", denoiser=d).probs)
    mv = B.ter_gap_locality_bound(p1, lang, reference=p0)
    assert abs(mv["ter_gap"]) <= mv["bound"] + 1e-12


# ---- N = L, one token per step: exact --------------------------------------------------------------------
@settings(max_examples=8)
@given(lang=entropy_ngrams(max_states=4**4))
def test_one_token_per_step_is_exact(lang):
    q = lang.joint()
    L = q.length
    law = exact_law(q, policies.RandomOrder(), L, reveal="fixed")  # linear counts: all ones at N = L
    assert_close(S.fixed_counts(S.linear(), L, L), np.ones(L, dtype=np.int64))
    p = np.asarray(law.probs)
    assert metrics.sequence_error_rate(p, q) == 0.0
    assert abs(metrics.log_ter(p, q) - q.entropy() / L) <= 1e-12
    assert metrics.kl(np.asarray(q.probs), p) <= 1e-12


@pytest.mark.parametrize("L", [4, 64, 1024])
def test_copy_pairs_one_token_per_step_ser_zero(L):
    assert B.copy_pairs_ser_fixed(L, np.ones(L, dtype=np.int64)) == 0.0
    if L <= 6:
        assert _exact_ser(L, counts=np.ones(L, dtype=np.int64), reveal="fixed") == 0.0


def test_additive_ngram_one_token_per_step_ser_zero():
    a = wc.additive_ngram(2, 6).joint()
    law = exact_law(a, policies.RandomOrder(), 6, reveal="fixed")
    assert metrics.sequence_error_rate(np.asarray(law.probs), a) == 0.0
    law1 = exact_law(a, policies.RandomOrder(), 1, reveal="fixed")  # all at once: only 4 of 64 sequences valid
    assert_close(metrics.sequence_error_rate(np.asarray(law1.probs), a), 1 - 4 / 64, rtol=1e-12)


# ---- flat in L (TER) / linear in L (SER) ------------------------------------------------------------------
@pytest.mark.slow  # test_committed_noisy_pairs_flat_in_L makes the same check on the committed rows (L = 16..1024)
def test_ter_gap_L_vs_4L_agree():
    """Noisy copy pairs, Bernoulli reveal: the exact gap is the same at every L (product of block laws, see
    synthetic/worst_case.py), so the finite-L term is 0 and the tolerance is 4 combined standard errors.
    (L = 16 is the quick run's length: the same cached language object, no new compilation.)"""
    N, num = 8, 2000
    a, b = sl.feng_language("noisy copy pairs", 16), sl.feng_language("noisy copy pairs", 64)
    assert_close(wc.block_bernoulli_metrics(a, N)["ter_gap"], wc.block_bernoulli_metrics(b, N)["ter_gap"], rtol=1e-12)
    ma = sl.mc_metrics(jax.random.PRNGKey(1), a, N, num=num, batch_size=sl.MC_BATCH)
    mb = sl.mc_metrics(jax.random.PRNGKey(2), b, N, num=num, batch_size=sl.MC_BATCH)
    tol = 4 * math.hypot(ma["ter_gap_se"], mb["ter_gap_se"])
    assert abs(ma["ter_gap"] - mb["ter_gap"]) <= tol
    exact = wc.block_bernoulli_metrics(a, N)["ter_gap"]
    assert abs(ma["ter_gap"] - exact) <= 4 * ma["ter_gap_se"]


def test_committed_noisy_pairs_flat_in_L():
    """Noisy copy pairs: the exact gap is c/N at every L (product of block laws), and the committed Monte-Carlo
    rows at L = 16..1024 agree with it within 4 SE and with each other (L vs 4L) within 4 combined SE."""
    ter = _csv(FIG, "ter")
    d = ter[ter.language == "noisy copy pairs"]
    ex = d[d.method == "exact (block product)"].set_index(["length", "steps"]).ter_gap
    mc = d[d.method == "mc"].set_index(["length", "steps"])
    assert set(mc.index) == set(ex.index) and len(ex) == 28
    assert np.all(np.abs(mc.ter_gap - ex.loc[mc.index]) <= 4 * mc.ter_gap_se)
    for L in (16, 64, 256):
        a, b = mc.loc[L], mc.loc[4 * L]
        assert np.all(np.abs(a.ter_gap - b.ter_gap) <= 4 * np.hypot(a.ter_gap_se, b.ter_gap_se))


@pytest.mark.parametrize("delta", [0.1, 0.5, 0.9])
def test_worst_case_steps_grow_linearly(delta):
    """SER >= 1 - exp(-L/(4N)) for every Bernoulli schedule, so SER <= delta needs N >= L / (4 ln(1/(1-delta)))."""
    c = 1 / (4 * math.log(1 / (1 - delta)))
    prev = 0
    for L in [16, 32, 64, 128, 256, 512, 1024]:
        n_lin = B.copy_pairs_min_steps_linear(L, delta)
        assert n_lin >= c * L
        assert n_lin >= prev
        prev = n_lin
        for N in (n_lin - 1, n_lin):
            if N >= 1:  # the closed-form minimum is exactly the threshold
                ok = B.copy_pairs_ser_bernoulli(L, S.reveal_probs(S.linear(), N)) <= delta
                assert ok == (N == n_lin)


# ---- languages -----------------------------------------------------------------------------------------
def test_entropy_ngram_rows_and_stationarity():
    g = la.entropy_ngram(jax.random.PRNGKey(3), 3, 3, 12, 0.5)
    rows = g.cond.reshape(-1, 3)
    assert np.all(rows > 0)
    h = -(rows * np.log(rows)).sum(1)
    assert_close(h, np.full(9, 0.5), rtol=1e-10)
    T = np.zeros((9, 9))
    for ctx in range(9):
        for b in range(3):
            T[ctx, (ctx * 3) % 9 + b] = rows[ctx, b]
    assert_close(g.init @ T, g.init, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        la.entropy_ngram(jax.random.PRNGKey(0), 2, 2, 8, 0.9)  # > log 2


def test_additive_ngram_marginals_uniform_joint_deterministic():
    q = wc.additive_ngram(2, 8).joint()
    assert_close(np.asarray(q.marginals()), np.full((8, 2), 0.5), rtol=0, atol=1e-15)
    assert_close(q.entropy(), 2 * math.log(2), rtol=1e-12)


SMALL_NGRAM = ("trigram V=2 h=0.35", 5)  # one cached object: the two tests below share its compilations


@pytest.mark.slow  # fast-path law vs exact law is in test_chains (chi-square); n-gram conditionals are exact there
@pytest.mark.parametrize("reveal", ["bernoulli", "fixed"])
def test_ngram_sampler_matches_exact_law(reveal):
    """The core sampler with the n-gram's forward–backward conditionals (marginals_at) draws the exact law."""
    lang = sl.feng_language(*SMALL_NGRAM)
    e = sl.exact_metrics(lang, 2, reveal=reveal)
    toks = np.asarray(
        sample(
            jax.random.PRNGKey(0),
            lang.denoiser(),
            policies.RandomOrder(),
            2,
            num=4000,
            reveal=reveal,
            batch_size=sl.MC_BATCH,
        ).tokens
    )
    emp = metrics.empirical_law(toks, 2)
    p = e["law"]
    # chi-square goodness of fit on cells with expected count >= 5 (level 1e-4)
    from scipy.stats import chisquare

    keep = p * 4000 >= 5
    obs = np.append(emp[keep] * 4000, emp[~keep].sum() * 4000)
    exp_ = np.append(p[keep] * 4000, p[~keep].sum() * 4000)
    if exp_[-1] == 0:
        obs, exp_ = obs[:-1], exp_[:-1]
    assert chisquare(obs, exp_).pvalue > 1e-4


def test_fixed_counts_min_steps_is_the_first_crossing():
    lin = S.linear()
    for L, delta in ((16, 0.5), (64, 0.5), (32, 0.1)):
        n = B.copy_pairs_min_steps(L, delta, reveal="fixed")
        sers = [B.copy_pairs_ser_fixed(L, S.fixed_counts(lin, N, L)) for N in range(1, n + 1)]
        assert sers[-1] <= delta and all(s > delta for s in sers[:-1])
        assert n <= L  # one token per step (N = L) always has SER = 0


@pytest.mark.slow  # MC vs exact on chains stays default in tests/test_chains.py
def test_ngram_mc_matches_exact():
    lang = sl.feng_language(*SMALL_NGRAM)
    for N in (1, 3):
        e = sl.exact_metrics(lang, N)
        m = sl.mc_metrics(jax.random.PRNGKey(N), lang, N, num=2000, batch_size=sl.MC_BATCH)
        assert abs(m["ter_gap"] - e["ter_gap"]) <= 4 * m["ter_gap_se"]


@settings(max_examples=15)
@given(sched=schedules_st, N=st.integers(1, 40))
def test_unconditional_reveal_probs_are_alpha_increments(sched, N):
    """pi_s = r_s prod_{u<s}(1 - r_u) telescopes to alpha(s_s) - alpha(t_s) (docstring derivation)."""
    pi = B.unconditional_reveal_probs(S.reveal_probs(sched, N))
    assert_close(pi, np.diff(S.alphas_on_grid(sched, N)), rtol=0, atol=1e-12)
    assert abs(pi.sum() - 1) <= 1e-12


# ---- Feng2025's TER statement at the eps implied by N ---------------------------------------------------
@pytest.mark.parametrize("order", [2, 3, 4])
def test_feng2025_eps_inverts_the_step_count(order):
    """N = ceil((n-1)/eps^n) at eps = ((n-1)/N)^(1/n) is N, and no smaller eps gives N (the tightest bound)."""
    for N in list(range(1, 130)) + [1000, 4096, 10**6]:
        eps = B.feng2025_eps(order, N)
        assert B.feng2025_steps(order, eps) == N
        assert B.feng2025_steps(order, eps * (1 - 1e-9)) > N
        assert_close(eps, ((order - 1) / N) ** (1 / order), rtol=1e-14)
    assert B.feng2025_steps(order, B.feng2025_eps(order, 50, constant=3.0), constant=3.0) == 50
    with pytest.raises(ValueError):
        B.feng2025_eps(1, 4)


def test_feng_bound_columns_hand_values():
    # bigram V=3 at N=4: eps = (1/4)^(1/2) = 1/2, bound = eps_l + 4 * 1/2 * log 3; trigram V=2 at N=16: eps = 1/2
    bi, tri = sl.feng_language("bigram V=3 h=0.6", 4), sl.feng_language("trigram V=2 h=0.35", 4)
    c = sl.feng_bound_columns(bi, 4, eps_learning=0.1)
    assert_close(c["feng_eps"], 0.5, rtol=1e-15)
    assert c["feng_steps"] == 4
    assert_close(c["feng_bound"], 0.1 + 2 * math.log(3), rtol=1e-14)
    c = sl.feng_bound_columns(tri, 16)
    assert_close(c["feng_eps"], 0.5, rtol=1e-15)
    assert_close(c["feng_bound"], 2 * math.log(2), rtol=1e-14)
    assert math.isnan(sl.feng_bound_columns(sl.feng_language("noisy copy pairs", 4), 4)["feng_bound"])


# ---- Figure 3: minimum-steps searches -------------------------------------------------------------------
def _noisy_pairs_gap_constant(flip=0.1):
    """Noisy copy pairs, linear Bernoulli schedule: gap(N) = c / N. A block is sampled exactly unless both
    tokens are revealed in the same step (probability sum_s pi_s^2 = 1/N); then they are independent
    uniform draws, whose cross-entropy under q_block exceeds H(block) by
    [-(1/2) log((1-f)/2) - (1/2) log(f/2)] - H(block); per token that is halved."""
    f = flip
    ce = -0.5 * math.log((1 - f) / 2) - 0.5 * math.log(f / 2)
    h = -(1 - f) * math.log((1 - f) / 2) - f * math.log(f / 2)
    return (ce - h) / 2


def test_min_steps_grid_search_is_the_first_crossing():
    assert sl.min_steps([8, 1, 4, 2], [0.1, 0.9, 0.3, 0.5], 0.3) == 4  # unsorted input
    assert sl.min_steps([1, 2, 4], [0.9, 0.2, 0.1], 0.05) is None
    assert sl.min_steps([1, 2, 4], [0.5, 0.2, 0.1], 0.3, se=[0.0, 0.1, 0.0], z=2.0) == 4  # 0.2 + 2*0.1 > 0.3
    assert sl.first_step_reaching(lambda N: 1.0 / N, 0.3) == 4
    assert sl.first_step_reaching(lambda N: 1.0, 0.3, max_steps=10) is None


def test_min_steps_rows_derived_expectations():
    """Every kind of row of Figure 3 on hand-made measurements, against derived values."""
    eps, delta = 0.05, 0.5
    c = _noisy_pairs_gap_constant()
    ter = [  # an MC curve on a grid, whose first point below eps is N = 8 (point estimate)
        {"language": "bigram V=3 h=0.6", "length": 64, "method": "mc", "steps": N, "ter_gap": g}
        for N, g in ((1, 0.9), (2, 0.3), (4, 0.06), (8, 0.049), (16, 0.051))
    ] + [  # block product: exact search over every N, not the grid; its MC curve is skipped
        {"language": "noisy copy pairs", "length": 256, "method": m, "steps": N, "ter_gap": c / N}
        for m in ("exact (block product)", "mc")
        for N in (1, 16)
    ]
    ser = [
        {"language": "additive 3-gram V=2", "length": 64, "method": "mc", "reveal": "bernoulli", "steps": N, "ser": v}
        for N, v in ((8, 0.9), (16, 0.7), (32, 0.45), (64, 0.2))
    ] + [{"language": "copy pairs", "length": 64, "method": "mc", "reveal": "bernoulli", "steps": 4, "ser": 0.9}]
    rows = sl.min_steps_rows(ter, ser, eps=eps, delta=delta, lengths=[16, 64], fixed_max_length=16)
    got = {(r["language"], r["length"], r["reveal"], r["method"]): r["min_steps"] for r in rows}
    assert got[("bigram V=3 h=0.6", 64, "bernoulli", "mc (grid)")] == 8
    assert got[("noisy copy pairs", 256, "bernoulli", "exact search")] == math.ceil(c / eps)
    assert ("noisy copy pairs", 256, "bernoulli", "mc (grid)") not in got
    assert got[("additive 3-gram V=2", 64, "bernoulli", "mc (grid)")] == 32
    for L in (16, 64):  # SER = 1 - (1 - 1/(2N))^(L/2) <= 1/2  <=>  N >= 1 / (2 (1 - 2^(-2/L)))
        assert got[("copy pairs", L, "bernoulli", "closed form")] == math.ceil(1 / (2 * (1 - 2 ** (-2 / L))))
    n16 = got[("copy pairs", 16, "fixed", "closed form")]
    lin = S.linear()
    assert B.copy_pairs_ser_fixed(16, S.fixed_counts(lin, n16, 16)) <= delta
    assert B.copy_pairs_ser_fixed(16, S.fixed_counts(lin, n16 - 1, 16)) > delta
    assert ("copy pairs", 64, "fixed", "closed form") not in got  # beyond fixed_max_length


def test_curves_have_distinct_keys_and_the_right_methods():
    ter = sl.ter_curves(lengths=[16, 64], exact_lengths=[6, 8], steps=[1, 2])
    ser = sl.ser_curves(lengths=[16, 64], mc_steps=[1, 4, 64, 4096], additive_max_steps=1024)
    keys = [(*c.labels, N) for c in ter + ser if c.method == "mc" for N in c.steps]
    assert len(keys) == len(set(keys))  # no two Monte-Carlo points share a PRNG key
    methods = {(c.language, c.length): set() for c in ter}
    for c in ter:
        methods[(c.language, c.length)].add(c.method)
    assert methods[("bigram V=3 h=0.6", 6)] == {"exact"}
    assert ("bigram V=3 h=0.6", 8) not in methods  # 4**8 partial states > 3**8: not enumerated
    assert methods[("trigram V=2 h=0.35", 8)] == {"exact"}
    assert methods[("noisy copy pairs", 64)] == {"exact (block product)", "mc"}
    assert methods[("bigram V=3 h=0.6", 64)] == {"mc"}
    cp = [c for c in ser if c.language == "copy pairs" and c.method == "mc" and c.length == 16]
    assert {c.reveal for c in cp} == {"bernoulli", "fixed"} and all(max(c.steps) <= 64 for c in cp)
    add = [c for c in ser if c.language.startswith("additive") and c.length == 64][0]
    assert add.steps == (1, 4, 8, 16, 32, 64, 128)
    with pytest.raises(ValueError):
        sl.measure_curve(sl.Curve("bigram V=3 h=0.6", 4, "closed form", (1,)))
    with pytest.raises(ValueError):
        sl.measure_curve(sl.Curve("noisy copy pairs", 4, "exact (block product)", (1,), reveal="fixed"))


# ---- learning error -----------------------------------------------------------------------------------
def test_learning_error_rows_exact_derived():
    """lam = 0 is the exact denoiser: no move, and the bound is 4 eps log|V|; lam > 0: the bound is shifted by
    exactly eps_learning, the move equals the difference of the two gaps and stays within the locality bound."""
    name, L, N = "bigram V=3 h=0.6", 4, 4
    q = sl.feng_language(name, L).joint()
    e = sl.exact_metrics(q, N)
    r0 = sl.learning_error_rows(name, L, smoothed(q.denoiser(), 0.0), [N], eps_learning=0.0, denoiser_name="x",
                                method="exact")[0]  # fmt: skip
    assert_close(r0["ter_gap"], e["ter_gap"], rtol=1e-12)
    assert abs(r0["move"]) <= 1e-13
    assert_close(r0["feng_bound"], 4 * 0.5 * math.log(3), rtol=1e-14)  # eps = (1/4)^(1/2)
    lam = 0.2
    el = smoothing_kl_bound(lam)
    r = sl.learning_error_rows(name, L, smoothed(q.denoiser(), lam), [N], eps_learning=el, denoiser_name="x",
                               method="exact")[0]  # fmt: skip
    assert_close(r["feng_bound"] - r0["feng_bound"], el, rtol=1e-12)
    assert_close(r["move"], r["ter_gap"] - e["ter_gap"], rtol=1e-12)
    assert abs(r["move"]) <= r["locality_bound_on_move"] + 1e-12
    assert r["kl_rate"] <= r["kl_rate_bound"] + 1e-12
    assert r["total_gap_within_bound"] == (r["ter_gap"] <= r["feng_bound"])


# ---- the script: one quick run per module, its numbers against the library --------------------------
ROOT = Path(__file__).resolve().parents[1]


def _load_script(name="steps_vs_length"):
    return load_script("steps_vs_length", name)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_quick(_load_script(), tmp_path_factory)


def _csv(folder, what):
    return pd.read_csv(Path(folder) / f"steps_vs_length_{what}.csv", keep_default_na=False, na_values=[""])


def test_quick_writes_tidy_outputs(quick):
    out, res = quick
    for f in ("ter.csv", "ter.png", "ser.csv", "ser.png", "min_steps.csv", "min_steps.png", "learning.csv"):
        assert (out / f"steps_vs_length_{f}").stat().st_size > 0, f
    meta = json.loads((out / "steps_vs_length.json").read_text())
    assert meta["quick"] is True and meta["seed"] == 0 and meta["mc_batch"] == sl.MC_BATCH
    ter, ser = _csv(out, "ter"), _csv(out, "ser")
    assert not ter.duplicated(["language", "length", "steps", "method"]).any()  # one row per measured point
    assert not ser.duplicated(["language", "length", "steps", "reveal", "method"]).any()
    # every method of the default run is exercised, MC on n-grams (the Markov engine) included
    assert set(ter.method) == {"exact", "exact (block product)", "mc"}
    assert (
        {"bigram V=3 h=0.6", "noisy copy pairs"} == set(ter[ter.method == "mc"].language) == set(meta["mc_languages"])
    )
    assert set(zip(ser.language, ser.method, ser.reveal)) == {
        ("copy pairs", "closed form", "bernoulli"), ("copy pairs", "closed form", "fixed"),
        ("copy pairs", "mc", "bernoulli"), ("copy pairs", "mc", "fixed"), ("additive 3-gram V=2", "mc", "bernoulli"),
    }  # fmt: skip
    learn = _csv(out, "learning")
    assert set(learn.method) == {"exact", "mc"}
    assert_close(ter.ter_gap.to_numpy(), res["ter"].ter_gap.to_numpy(), rtol=1e-11)  # the CSV is what was measured


def test_quick_rows_equal_library(quick):
    out, _ = quick
    ter, ser, mins = _csv(out, "ter"), _csv(out, "ser"), _csv(out, "min_steps")
    name = "bigram V=3 h=0.6"
    r = one_row(ter, language=name, length=4, steps=4, method="exact")
    assert_close(r.ter_gap, sl.exact_metrics(sl.feng_language(name, 4), 4, schedule=S.linear())["ter_gap"], rtol=1e-10)
    r = one_row(ter, language=name, length=16, steps=4, method="mc")
    seed, labels = sl.parse_key_string(r.point_key)
    assert labels == (sl.FIG_TER, 0, 16, 4)
    import _common  # on sys.path once the script is loaded

    assert np.array_equal(jax.random.key_data(_common.point_key(seed, *labels)), sl.mc_key(seed, *labels))
    m = sl.mc_metrics(sl.mc_key(seed, *labels), sl.feng_language(name, 16), 4, num=int(r.num), schedule=S.linear(),
                      batch_size=sl.MC_BATCH)  # fmt: skip
    assert abs(m["ter_gap"] - r.ter_gap) <= 1e-12 and abs(m["ter_gap_se"] - r.ter_gap_se) <= 1e-12
    r = one_row(ser, language="copy pairs", length=16, steps=4, reveal="fixed", method="closed form")
    assert_close(r.ser, B.copy_pairs_ser_fixed(16, S.fixed_counts(S.linear(), 4, 16)), rtol=1e-11)
    r = one_row(mins, target="SER <= 0.5", language="copy pairs", length=32, reveal="bernoulli")
    assert r.min_steps == math.ceil(1 / (2 * (1 - 2 ** (-2 / 32))))
    r = one_row(mins, target="TER gap <= 0.05", language="noisy copy pairs", length=16)
    assert r.min_steps == math.ceil(_noisy_pairs_gap_constant() / 0.05)
    bp = ter[ter.method == "exact (block product)"]
    assert_close(bp.ter_gap.to_numpy(), _noisy_pairs_gap_constant() / bp.steps.to_numpy(), rtol=1e-10)


def test_quick_learning_rows(quick):
    """Total gap vs Feng2025's bound; the MC rows share Figure 1's keys, so their exact-denoiser gap IS the
    Figure 1 MC row (common random numbers), and the exact row's bound is eps_l + 4 eps log 3 at eps = N^(-1/2)."""
    out, _ = quick
    learn, ter = _csv(out, "learning"), _csv(out, "ter")
    el = smoothing_kl_bound(0.05)
    assert_close(learn.eps_learning.to_numpy(), np.full(len(learn), el), rtol=1e-12)
    assert_close(learn.feng_eps.to_numpy(), learn.steps.to_numpy() ** -0.5, rtol=1e-11)  # bigram: n = 2
    assert_close(learn.feng_bound.to_numpy(), el + 4 * learn.feng_eps.to_numpy() * math.log(3), rtol=1e-11)
    assert_close(learn.move.to_numpy(), (learn.ter_gap - learn.ter_gap_exact_denoiser).to_numpy(), rtol=1e-9)
    within = learn.ter_gap + 1.959963984540054 * learn.ter_gap_se <= learn.feng_bound
    assert (learn.total_gap_within_bound.astype(bool) == within).all()
    r = one_row(learn, method="mc", length=16, steps=4)
    f = one_row(ter, language="bigram V=3 h=0.6", length=16, steps=4, method="mc")
    assert r.point_key == f.point_key and abs(r.ter_gap_exact_denoiser - f.ter_gap) <= 1e-12
    assert r.move_se > 0


def test_learning_error_rows_mc_with_the_exact_denoiser_does_not_move(quick):
    """Both runs share the key: with the exact conditionals as the 'model' the samples are identical."""
    lang = sl.feng_language("bigram V=3 h=0.6", 16)  # the quick run's object: no new compilation
    r = sl.learning_error_rows("bigram V=3 h=0.6", 16, lang.denoiser(), [4], eps_learning=0.0, denoiser_name="exact",
                               seed=0, labels=(sl.FIG_TER, 0, 16), num=200)[0]  # fmt: skip
    assert r["move"] == 0.0 and r["move_se"] == 0.0


# ---- the committed figures are what the default run writes --------------------------------------------
FIG = ROOT / "figures"


def test_committed_settings_are_the_default_run():
    meta = json.loads((FIG / "steps_vs_length.json").read_text())
    default = _load_script("steps_vs_length_defaults").settings(quick=False)
    assert meta["quick"] is False and meta["seed"] == 0 and meta["denoiser"] == "exact"
    assert {k: meta[k] for k in default} == default
    assert meta["mc_batch"] == sl.MC_BATCH


def test_committed_rows_recompute():
    """Exact rows to 1e-10, closed forms, the min-steps table, and one Monte-Carlo row with its point key (1e-12)."""
    ter, ser, mins, learn = (_csv(FIG, w) for w in ("ter", "ser", "min_steps", "learning"))
    lin = S.linear()
    for name, L, N in (("bigram V=3 h=0.6", 6, 8), ("trigram V=2 h=0.35", 8, 8)):
        r = one_row(ter, language=name, length=L, steps=N, method="exact")
        assert_close(r.ter_gap, sl.exact_metrics(sl.feng_language(name, L), N, schedule=lin)["ter_gap"], rtol=1e-10)
    bp = ter[ter.method == "exact (block product)"]
    assert set(bp.length) == {16, 64, 256, 1024}
    assert_close(bp.ter_gap.to_numpy(), _noisy_pairs_gap_constant() / bp.steps.to_numpy(), rtol=1e-10)
    r = one_row(ter, language="bigram V=3 h=0.6", length=16, steps=8, method="mc")
    seed, labels = sl.parse_key_string(r.point_key)
    m = sl.mc_metrics(sl.mc_key(seed, *labels), sl.feng_language("bigram V=3 h=0.6", 16, seed), 8, num=int(r.num),
                      schedule=lin, batch_size=sl.MC_BATCH)  # fmt: skip
    assert abs(m["ter_gap"] - r.ter_gap) <= 1e-12 and abs(m["ter_gap_se"] - r.ter_gap_se) <= 1e-12
    cf = ser[(ser.method == "closed form") & (ser.length <= 256) & (ser.steps <= 256)]
    for r in cf.itertuples():
        want = (B.copy_pairs_ser_bernoulli(r.length, S.reveal_probs(lin, r.steps)) if r.reveal == "bernoulli"
                else B.copy_pairs_ser_fixed(r.length, S.fixed_counts(lin, r.steps, r.length)))  # fmt: skip
        assert_close(r.ser, want, rtol=1e-10, atol=1e-15)
    mc = ser[(ser.language == "copy pairs") & (ser.method == "mc")]
    assert set(mc.length) == {16, 64, 256, 1024} and set(mc.reveal) == {"bernoulli", "fixed"}
    for r in mc.itertuples():  # every committed MC point within 4 binomial SE (at the exact value) of its closed form
        want = (B.copy_pairs_ser_bernoulli(r.length, S.reveal_probs(lin, r.steps)) if r.reveal == "bernoulli"
                else B.copy_pairs_ser_fixed(r.length, S.fixed_counts(lin, r.steps, r.length)))  # fmt: skip
        assert abs(r.ser - want) <= 4 * math.sqrt(max(want * (1 - want), 0.0) / r.num) + 1e-9, r
    cp = mins[(mins.language == "copy pairs") & (mins.reveal == "bernoulli")]
    assert len(cp) == 7
    for r in cp.itertuples():
        assert (
            r.min_steps
            == math.ceil(1 / (2 * (1 - 2 ** (-2 / r.length))))
            == B.copy_pairs_min_steps_linear(r.length, 0.5)
        )
    ncp = mins[(mins.language == "noisy copy pairs") & (mins.method == "exact search")]
    assert (ncp.min_steps == math.ceil(_noisy_pairs_gap_constant() / 0.05)).all() and len(ncp) == 4
    assert_close(learn.feng_bound.to_numpy(), (learn.eps_learning + 4 * learn.feng_eps * math.log(3)).to_numpy(),
                 rtol=1e-11)  # fmt: skip
    r = one_row(learn, method="exact", steps=8)
    q = sl.feng_language("bigram V=3 h=0.6", int(r.length)).joint()
    den = smoothed(q.denoiser(), 0.05)
    again = sl.learning_error_rows(
        "bigram V=3 h=0.6", int(r.length), den, [8], eps_learning=smoothing_kl_bound(0.05), denoiser_name="x",
        method="exact",
    )[0]  # fmt: skip
    for col in ("ter_gap", "move", "feng_bound", "locality_bound_on_move", "kl_rate", "kl_rate_bound"):
        assert_close(r[col], again[col], rtol=1e-10)


# ---- --denoiser learned -------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_script_learned_denoiser(tmp_path):
    mp = pytest.MonkeyPatch()
    mp.setenv("MDM_NO_PROGRESS", "1")
    try:
        res = _load_script("steps_vs_length_learned").main(["--quick", "--denoiser", "learned", "--out", str(tmp_path)])
    finally:
        mp.undo()
    ter, learn = _csv(tmp_path, "ter"), _csv(tmp_path, "learning")
    learned = ter[ter.method == "mc (learned)"]
    assert len(learned) > 0 and np.all(np.isfinite(learned.ter_gap)) and np.all(learned.eps_learning > 0)
    lr = learn[learn.denoiser.str.startswith("learned")]
    assert len(lr) == len(learned)
    for r in lr.itertuples():  # the same keys as Figure 1: the exact-denoiser gap is Figure 1's MC row
        f = ter[(ter.language == r.language) & (ter.length == r.length) & (ter.steps == r.steps) & (ter.method == "mc")]
        if len(f):
            assert abs(r.ter_gap_exact_denoiser - f.ter_gap.iloc[0]) <= 1e-12
        n = 2 if r.language.startswith("bigram") else 3
        V = 3 if n == 2 else 2
        assert_close(r.feng_bound, r.eps_learning + 4 * ((n - 1) / r.steps) ** (1 / n) * math.log(V), rtol=1e-11)
    assert len(res["learning"]) == len(learn)
