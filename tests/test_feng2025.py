"""Feng2025 (issue 4): SER closed forms of the copy-pairs worst case, TER bounds, steps vs length."""

import math

import jax
import numpy as np
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

from conftest import assert_close
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
def test_ter_gap_L_vs_4L_agree():
    """Noisy copy pairs, Bernoulli reveal: the exact gap is the same at every L (product of block laws, see
    synthetic/worst_case.py), so the finite-L term is 0 and the tolerance is 4 combined standard errors."""
    N, num = 8, 2000
    a, b = wc.noisy_copy_pairs(64, 0.1), wc.noisy_copy_pairs(256, 0.1)
    assert_close(wc.block_bernoulli_metrics(a, N)["ter_gap"], wc.block_bernoulli_metrics(b, N)["ter_gap"], rtol=1e-12)
    ma = sl.mc_metrics(jax.random.PRNGKey(1), a, N, num=num)
    mb = sl.mc_metrics(jax.random.PRNGKey(2), b, N, num=num)
    tol = 4 * math.hypot(ma["ter_gap_se"], mb["ter_gap_se"])
    assert abs(ma["ter_gap"] - mb["ter_gap"]) <= tol
    exact = wc.block_bernoulli_metrics(a, N)["ter_gap"]
    assert abs(ma["ter_gap"] - exact) <= 4 * ma["ter_gap_se"]


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


@pytest.mark.parametrize("reveal", ["bernoulli", "fixed"])
def test_ngram_sampler_matches_exact_law(reveal):
    """The core sampler with the n-gram's forward–backward conditionals (marginals_at) draws the exact law."""
    lang = la.entropy_ngram(jax.random.PRNGKey(5), 2, 2, 5, 0.3)
    e = sl.exact_metrics(lang, 2, reveal=reveal)
    toks = np.asarray(
        sample(jax.random.PRNGKey(0), lang.denoiser(), policies.RandomOrder(), 2, num=4000, reveal=reveal).tokens
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


def test_quick_script_writes_files(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "steps_vs_length.py"
    spec = importlib.util.spec_from_file_location("steps_vs_length", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick", "--out", str(tmp_path)])
    for f in (
        "steps_vs_length_ter.csv",
        "steps_vs_length_ter.png",
        "steps_vs_length_ser.csv",
        "steps_vs_length_ser.png",
        "steps_vs_length_min_steps.csv",
        "steps_vs_length_min_steps.png",
        "steps_vs_length_learning.csv",
        "steps_vs_length.json",
    ):
        assert (tmp_path / f).stat().st_size > 0, f


def test_fixed_counts_min_steps_is_the_first_crossing():
    lin = S.linear()
    for L, delta in ((16, 0.5), (64, 0.5), (32, 0.1)):
        n = B.copy_pairs_min_steps(L, delta, reveal="fixed")
        sers = [B.copy_pairs_ser_fixed(L, S.fixed_counts(lin, N, L)) for N in range(1, n + 1)]
        assert sers[-1] <= delta and all(s > delta for s in sers[:-1])
        assert n <= L  # one token per step (N = L) always has SER = 0


def test_ngram_mc_matches_exact():
    lang = la.entropy_ngram(jax.random.PRNGKey(11), 3, 2, 6, 0.6)
    for N in (1, 3):
        e = sl.exact_metrics(lang, N)
        m = sl.mc_metrics(jax.random.PRNGKey(N), lang, N, num=2000)
        assert abs(m["ter_gap"] - e["ter_gap"]) <= 4 * m["ter_gap_se"]


@settings(max_examples=15)
@given(sched=schedules_st, N=st.integers(1, 40))
def test_unconditional_reveal_probs_are_alpha_increments(sched, N):
    """pi_s = r_s prod_{u<s}(1 - r_u) telescopes to alpha(s_s) - alpha(t_s) (docstring derivation)."""
    pi = B.unconditional_reveal_probs(S.reveal_probs(sched, N))
    assert_close(pi, np.diff(S.alphas_on_grid(sched, N)), rtol=0, atol=1e-12)
    assert abs(pi.sum() - 1) <= 1e-12


def test_quick_script_learned_denoiser(tmp_path):
    import importlib.util
    import pathlib

    import pandas as pd

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "steps_vs_length.py"
    spec = importlib.util.spec_from_file_location("steps_vs_length_learned", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick", "--denoiser", "learned", "--out", str(tmp_path)])
    ter = pd.read_csv(tmp_path / "steps_vs_length_ter.csv")
    learned = ter[ter.method == "mc (learned)"]
    assert len(learned) > 0 and np.all(np.isfinite(learned.ter_gap)) and np.all(learned.eps_learning > 0)
