"""The sampler registry (issue 16, part 1): every sampler's Monte Carlo agrees with its exact law, pinned
cases derived by hand, cross-engine identities on random (adversarial) joints, bad input."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from scipy.stats import chisquare

from tests.conftest import assert_close
from tests.strategies import joint_of_kind, joints
from theory import metrics
from theory.joint import Joint
from theory.policies import TopK
from theory.samplers import (
    SAMPLERS,
    ConfidenceThreshold,
    Sampler,
    get_sampler,
    list_samplers,
    llada_counts,
    maskgit_counts,
    remdm_controller,
    semi_ar_plan,
)
from theory.sampling import exact_law

#: Chi-square level of each Monte-Carlo-vs-exact test (cells with expected count < 5 pooled into one).
LEVEL = 1e-3
NUM = 4000  # samples per chi-square test
STEPS = 4  # the shared instance has L = 4: one compiled shape per engine


def chi2_agrees(tokens, law, V: int, level: float = LEVEL):
    """Chi-square goodness of fit of sampled sequences to an exact law over V**L; no sample where p = 0."""
    p = np.asarray(law)
    emp = np.rint(metrics.empirical_law(tokens, V) * len(tokens)).astype(int)
    assert emp[p == 0].sum() == 0, "samples where the exact law is 0"
    exp = p * len(tokens)
    big = exp >= 5
    obs = np.append(emp[big], emp[~big].sum())
    ex = np.append(exp[big], exp[~big].sum())
    if ex[-1] == 0:
        obs, ex = obs[:-1], ex[:-1]
    if len(ex) < 2:
        return 1.0
    return chisquare(obs, ex * obs.sum() / ex.sum()).pvalue


@pytest.fixture(scope="module")
def q():
    """V = 2, L = 4 Dirichlet(0.3) table with ~40% of the sequences removed (a sparse support)."""
    j = joint_of_kind("dirichlet_holes", 2, 4, seed=3, concentration=0.3)
    assert 3 <= int(np.sum(np.asarray(j.probs) > 0)) < 16
    return j


# samplers whose engines the core tests already cover (theory.sampling with a core policy): slow twin
# (the threshold policy's exact reveal sets come from its own select, pinned below)
CORE_COMPOSED = ("mdlm", "topk-confidence", "maskgit-maxprob", "eb-sampler", "confidence-threshold")


def _mc_vs_exact(name, q, seed):
    s = get_sampler(name)
    law = s.exact_law(q, STEPS)
    assert_close(np.sum(law.probs), 1.0, rtol=1e-12)
    out = s.sample(jax.random.PRNGKey(seed), q.denoiser(), STEPS, num=NUM)
    assert out.tokens.shape == (NUM, 4) and out.nfe.shape == (NUM,)
    assert chi2_agrees(out.tokens, law.probs, 2) > LEVEL
    nfe = np.asarray(out.nfe, dtype=float)
    se = nfe.std(ddof=1) / np.sqrt(NUM)
    assert abs(nfe.mean() - law.expected_nfe) <= 4 * se + 1e-12, (nfe.mean(), law.expected_nfe, se)


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in CORE_COMPOSED])
def test_mc_matches_exact_law(name, q):
    """Chi-square at level 1e-3 on 4000 samples, and mean NFE within 4 standard errors of the exact one."""
    _mc_vs_exact(name, q, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_mc_matches_exact_law_slow(name):
    for kind, V, L in (("structured", 2, 4), ("dirichlet", 3, 3), ("near_deterministic", 2, 4)):
        qq = joint_of_kind(kind, V, L, seed=7)
        s = get_sampler(name)
        steps = 4 if L == 4 else 3
        if name == "llada-semi-ar" and L == 3:
            s = get_sampler(name, block_size=1)
        law = s.exact_law(qq, steps)
        out = s.sample(jax.random.PRNGKey(11), qq.denoiser(), steps, num=20000)
        assert chi2_agrees(out.tokens, law.probs, V) > LEVEL, (name, kind)


# ---- pinned cases, derived by hand ----------------------------------------------------------------
def test_count_rules_pinned():
    assert llada_counts(5, 3).tolist() == [2, 2, 1]  # 5 // 3 = 1, the first 5 % 3 = 2 steps get one more
    assert llada_counts(2, 4).tolist() == [1, 1, 0, 0]
    c, blk = semi_ar_plan(4, 2, 4)
    assert c.tolist() == [1, 1, 1, 1] and blk.tolist() == [0, 0, 1, 1]
    # L cos(pi r / 2) at r = 1/2: 2.83 -> 2 left masked; r = 1/3: 3.46 -> 3, r = 2/3: 2.0 -> 2; r = 3/4: 1.53 -> 1
    assert maskgit_counts(4, 2).tolist() == [2, 2]
    assert maskgit_counts(4, 3).tolist() == [1, 1, 2]
    assert maskgit_counts(4, 4).tolist() == [1, 1, 1, 1]
    assert maskgit_counts(3, 1).tolist() == [3]


def test_llada_sampled_confidence_sharpens_pinned():
    """q = product of P(x_1 = 0) = 0.9 and P(x_2 = 0) = 0.6, LLaDA one token per step (by hand):
    draws (0,0) .54 and (0,1) .36 keep position 1 (0.9 beats 0.6 / 0.4); (1,0) .06 and (1,1) .04 keep
    position 2 (0.6 / 0.4 beat 0.1); the other position is then drawn from its (independent) marginal.
    p(00) = .54 + .054, p(01) = .36 + .036, p(10) = .006, p(11) = .004: x_1 = 0 with 0.99, not 0.9."""
    q2 = Joint(np.kron([0.9, 0.1], [0.6, 0.4]), 2, 2)
    law = get_sampler("llada-low-confidence").exact_law(q2, 2)
    assert_close(law.probs, np.array([0.594, 0.396, 0.006, 0.004]), rtol=1e-12)
    assert_close(law.expected_nfe, 2.0)
    # the max-probability rule is value-blind: one token per step is exact
    assert_close(get_sampler("topk-confidence").exact_law(q2, 2).probs, q2.probs, rtol=1e-12)


def test_maskgit_gumbel_pinned():
    """MaskGIT, L = N = 2, q = product of (0.9, 0.1) and (0.6, 0.4): counts [1, 1] (floor(2 cos(pi/4)) = 1
    stays masked), noise tau_0 = 4.5 (1 - 1/2) = 2.25. Step 0 draws (a, b), keeps position 1 with the
    Plackett-Luce probability w1 / (w1 + w2), w = p(x̂)**(1/tau); the other position is then drawn from its
    marginal (independent q). So p(x) = sum over draws of
    P(a, b) [k1 1{x_1 = a} q_2(x_2) + (1 - k1) 1{x_2 = b} q_1(x_1)]."""
    q1, q2 = np.array([0.9, 0.1]), np.array([0.6, 0.4])
    tau = 2.25
    p = np.zeros((2, 2))
    for a in range(2):
        for b in range(2):
            w1, w2 = q1[a] ** (1 / tau), q2[b] ** (1 / tau)
            k1 = w1 / (w1 + w2)
            p[a, :] += q1[a] * q2[b] * k1 * q2
            p[:, b] += q1[a] * q2[b] * (1 - k1) * q1
    law = get_sampler("maskgit").exact_law(Joint(np.kron(q1, q2), 2, 2), 2)
    assert_close(law.probs, p.reshape(-1), rtol=1e-12)


def test_remdm_pinned():
    """Linear alpha, N = 3: alpha = 0, 1/3, 2/3, 1. Step 1: sigma = min(0.04, (1/3)/(1/3)) = 0.04, unmask
    (2/3 - 0.96/3) / (2/3) = 0.52. L = 1: a remasked token is redrawn from the same marginal, so the law
    is q; E[NFE] = 1/3 + (1/3 * 0.04 + 2/3 * 0.52) + P(masked before the last step) = 1/3 + 0.36 + 1/3."""
    s = get_sampler("remdm-cap")
    sigma, pu = s.rates(3)
    assert_close(sigma, np.array([0.0, 0.04, 0.0]), rtol=1e-12)
    assert_close(pu, np.array([1 / 3, 0.52, 1.0]), rtol=1e-12)
    q1 = Joint(np.array([0.3, 0.7]), 2, 1)
    law = s.exact_law(q1, 3)
    assert_close(law.probs, q1.probs, rtol=1e-12)
    assert_close(law.expected_nfe, 2 / 3 + 0.36, rtol=1e-12)
    sigma2, _ = s.rates(2)  # alpha = 0, 1/2, 1: no clean token before the last step, no remasking
    assert_close(sigma2, np.zeros(2))


def test_remdm_through_anyprocess(q):
    """ReMDM's own engine = theory.anyprocess.exact_law of its AP-MDM controller (remask bits; a clock mask
    deleted at the last step keeps the engine's fixed-point stop from ending runs early), to 1e-12."""
    from theory import anyprocess

    s = get_sampler("remdm-cap", eta=0.3)
    ctrl = remdm_controller(s, q.denoiser(), 3)
    law = anyprocess.exact_law(ctrl, (2,) * 5, max_steps=3, max_length=5, stop_when_clean=True)
    assert law.unfinished == 0.0
    assert_close(law.table(4), s.exact_law(q, 3).probs, rtol=1e-12, atol=1e-15)


def test_threshold_pinned(q):
    """tau = 1: no confidence exceeds it, so one token per step (the most confident): the Top-1 law, NFE = L.
    tau = 0: every confidence max_v p >= 1/V exceeds it, so every mask is revealed at step 1, each from its
    marginal: the product of q's marginals, NFE = 1."""
    one = get_sampler("confidence-threshold", tau=1.0).exact_law(q, STEPS)
    top1 = exact_law(q, TopK("confidence"), counts=[1, 1, 1, 1])
    assert_close(one.probs, top1.probs, rtol=1e-12, atol=1e-15)
    assert_close(one.expected_nfe, 4.0)
    allin = get_sampler("confidence-threshold", tau=0.0).exact_law(q, 1)
    m = np.asarray(q.marginals())
    assert_close(allin.probs, np.einsum("a,b,c,d->abcd", m[0], m[1], m[2], m[3]).reshape(-1), rtol=1e-12)
    assert_close(allin.expected_nfe, 1.0)


def test_block_variant_identities(q):
    """block_size = L is LLaDA; block_size = 1 is left to right with the exact conditionals: the law is q."""
    llada = get_sampler("llada-low-confidence").exact_law(q, STEPS)
    whole = get_sampler("llada-semi-ar", block_size=4).exact_law(q, STEPS)
    assert_close(whole.probs, llada.probs, rtol=1e-12, atol=1e-15)
    l2r = get_sampler("llada-semi-ar", block_size=1).exact_law(q, STEPS)
    assert_close(l2r.probs, q.probs, rtol=1e-10, atol=1e-15)
    assert_close(l2r.expected_nfe, 4.0)


def test_mdlm_is_random_order_bernoulli(q):
    from theory.policies import RandomOrder

    s = get_sampler("mdlm")
    assert_close(
        s.exact_law(q, 3).probs, exact_law(q, RandomOrder(), 3, reveal="bernoulli").probs, rtol=1e-12, atol=1e-15
    )
    # ReMDM with eta = 0 never remasks: it is MDLM ancestral sampling (a different engine)
    r = get_sampler("remdm-cap", eta=0.0).exact_law(q, 3)
    m = s.exact_law(q, 3)
    assert_close(r.probs, m.probs, rtol=1e-10, atol=1e-15)
    assert_close(r.expected_nfe, m.expected_nfe, rtol=1e-12)


def test_maskgit_noise_free_is_ranked_llada_on_maskgit_counts(q):
    """choice_temperature = 0 is the deterministic top-k of p(x̂) on MaskGIT's counts."""
    cold = get_sampler("maskgit", choice_temperature=0.0).exact_law(q, STEPS)
    # with counts all 1 (L = N = 4) and no noise, MaskGIT is LLaDA one token per step
    assert_close(cold.probs, get_sampler("llada-low-confidence").exact_law(q, 4).probs, rtol=1e-12, atol=1e-15)


# ---- properties on random (adversarial) joints ---------------------------------------------------
def _identities(qq):
    L = qq.length
    for name in SAMPLERS:
        if name == "llada-semi-ar":
            continue
        law = get_sampler(name).exact_law(qq, L)
        p = np.asarray(law.probs)
        assert np.all(p >= -1e-15) and abs(p.sum() - 1.0) < 1e-10, name
        assert 1.0 - 1e-10 <= law.expected_nfe <= L + 1e-10 or name == "remdm-cap", name
    l2r = get_sampler("llada-semi-ar", block_size=1).exact_law(qq, L)
    assert_close(l2r.probs, qq.probs, rtol=1e-9, atol=1e-12)
    whole = get_sampler("llada-semi-ar", block_size=L).exact_law(qq, L)
    assert_close(whole.probs, get_sampler("llada-low-confidence").exact_law(qq, L).probs, rtol=1e-10, atol=1e-14)
    r0 = get_sampler("remdm-cap", eta=0.0).exact_law(qq, L)
    assert_close(r0.probs, get_sampler("mdlm").exact_law(qq, L).probs, rtol=1e-9, atol=1e-12)


@settings(max_examples=2)
@given(joints(max_states=3**2, max_length=2))
def test_identities_random_joints(qq):
    _identities(qq)


@pytest.mark.slow
@settings(max_examples=40)
@given(joints(max_states=4**4, max_length=4))
def test_identities_random_joints_slow(qq):
    _identities(qq)


# ---- registry and bad input -----------------------------------------------------------------------
def test_registry():
    names = list_samplers()
    assert names == list(SAMPLERS) and len(names) >= 8
    for n in names:
        s = get_sampler(n)
        assert isinstance(s, Sampler) and s.name == n and len(s.source) > 20
    assert get_sampler("eb-sampler", gamma=0.5).policy.gamma == 0.5
    assert get_sampler("eb-sampler").adaptive and not get_sampler("mdlm").adaptive


def test_bad_input(q):
    with pytest.raises(ValueError, match="known samplers: mdlm"):
        get_sampler("llada")
    with pytest.raises(TypeError, match="bad keyword"):
        get_sampler("mdlm", gamma=1.0)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        get_sampler("llada-semi-ar", block_size=2).exact_law(q, 3)
    with pytest.raises(ValueError, match="must divide the length"):
        semi_ar_plan(4, 3, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ConfidenceThreshold(1.5)
    with pytest.raises(ValueError, match="eta"):
        get_sampler("remdm-cap", eta=2.0)
    with pytest.raises(ValueError, match="num must be a positive int"):
        get_sampler("llada-low-confidence").sample(jax.random.PRNGKey(0), q.denoiser(), 4, num=0)
    with pytest.raises(ValueError, match="steps"):
        get_sampler("maskgit").exact_law(q, 0)
    big = Joint(np.full(2**9, 2.0**-9), 2, 9)
    with pytest.raises(ValueError, match="Monte-Carlo face"):
        get_sampler("remdm-cap").exact_law(big, 3)
