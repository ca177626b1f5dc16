"""theory.check.check_sampler: "is your sampler correct?" as one call (issue 16, part 4).

* pinned by hand: Pearson X^2 and G on a uniform law over 4 sequences with chosen counts (closed-form
  chi-square tail at dof 3), Cochran pooling on hand-made expected counts, the power rule's lambda;
* properties over random tables (the ``joints`` strategy, adversarial kinds included): a black box that
  draws from the reference law itself passes (at alpha = 1e-6, fixed seed), the statistics equal the
  pooled-cell formulas recomputed here, every pooled cell has expected count >= 5, and a single sequence
  outside the reference support fails with p = 0 and is named;
* a correct RandomOrder implementation passes (alpha = 0.01, fixed seed: a correct sampler fails with
  probability <= alpha, so the seed is fixed and stated; the slow twin checks the false-positive rate
  over 200 seeds against a binomial bound);
* four deliberately wrong samplers, each a small user-style black box, are flagged at num = 4096 after
  the power is DERIVED from their exact laws (noncentral chi-square, :func:`theory.check.power`) and
  asserted >= 0.99: (a) temperature slip p^1.5 / sum p^1.5, (b) N - 1 steps instead of N, (c) values drawn
  jointly from q instead of independently, (d) Top-k revealing the least-confident tokens;
* long Markov chain (L = 256): correct and temperature-slipped left-to-right ancestral samplers (numpy)
  against the reference RandomOrder with N = L (law q: exact marginals); the slipped one's law is a
  Markov chain, so each pair test's power is exact and asserted >= 0.99. The slow twin runs the toolkit's
  own RandomOrder sampler (and a slipped one) at L = 256;
* docs/check_sampler.md: its code block runs and its report fails the buggy sampler.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, norm

from synthetic.languages import MarkovChain, dirichlet, random_markov
from theory import check, policies, sampling
from theory.check import Reference, check_sampler, pool_cells, power
from theory.joint import Joint

from conftest import assert_close
from strategies import joints

ROOT = Path(__file__).resolve().parent.parent
NUM = 4096  # one batch shape for every Monte-Carlo sampler below (one compilation each)
ALPHA = 0.01
BETA = 1.5  # temperature slip: p -> p**BETA / sum p**BETA


# ---- hand-pinned statistics ---------------------------------------------------------------------------------
def _fixed(tokens):
    return lambda key, den, num: np.asarray(tokens)[:num]


def test_pearson_and_g_pinned_by_hand():
    """Uniform law over {0,1}**2 (the law of RandomOrder N = L = 2 on a uniform q), n = 100, counts
    (30, 20, 25, 25): X^2 = (5^2 + 5^2) / 25 = 2, G = 2 (30 ln 1.2 + 20 ln 0.8), dof 3; the chi-square
    tail at dof 3 is 2 (1 - Phi(sqrt x)) + sqrt(2 x / pi) e^{-x/2}."""
    q = Joint(np.full(4, 0.25), 2, 2)
    toks = np.array([[0, 0]] * 30 + [[0, 1]] * 20 + [[1, 0]] * 25 + [[1, 1]] * 25)
    rep = check_sampler(_fixed(toks), q, reference=dict(), steps=2, num=100, alpha=0.05)
    x2, g = rep.tests[0], rep.tests[1]
    assert x2.dof == g.dof == 3
    assert_close(x2.statistic, 2.0)
    assert_close(g.statistic, 2 * (30 * np.log(1.2) + 20 * np.log(0.8)))
    tail = lambda x: 2 * norm.sf(np.sqrt(x)) + np.sqrt(2 * x / np.pi) * np.exp(-x / 2)  # noqa: E731
    assert_close(x2.p_value, tail(2.0))
    assert_close(g.p_value, tail(g.statistic))
    assert rep.passed and rep.num == 100 and rep.support_violations == 0
    assert rep.deviations[0].what in ("x = 0 0", "x = 0 1") and abs(rep.deviations[0].residual) == 1.0
    frame = rep.to_frame()
    assert list(frame["test"]) == [x2.name, g.name] and not frame["rejected"].any()
    assert "PASSED" in str(rep) and "Bonferroni over 2 tests" in str(rep)


def test_pooling_rule_by_hand():
    # big cells alone; small ones merged smallest first into groups >= 5; a remainder joins the last group
    e = np.array([10.0, 0.0, 1.0, 4.5, 2.0, 3.0, 0.5, 6.0])
    lab = pool_cells(e)
    assert lab[1] == -1  # expected 0: not a cell
    assert lab[0] != lab[7] and len({lab[0], lab[7]} & set(lab[[2, 3, 4, 5, 6]])) == 0
    # smallest first: 0.5 + 1 + 2 + 3 = 6.5 >= 5 is one group; 4.5 alone < 5 joins it
    assert len(set(lab[[2, 3, 4, 5, 6]])) == 1
    # only small cells and a remainder: 1 + 1 + 1 + 1 + 1 = 5 one group, then 2 joins it
    assert len(set(pool_cells(np.array([1.0, 1, 1, 1, 1, 2])))) == 1
    # a lone small remainder with no small group joins the smallest big cell
    lab = pool_cells(np.array([7.0, 6.0, 1.0]))
    assert lab[2] == lab[1] != lab[0]


def test_power_rule_by_hand():
    """lambda = n sum (a - p)^2 / p: p uniform on 4 cells, a = (0.3, 0.2, 0.25, 0.25), n = 400 (no pooling):
    lambda = 400 * 2 * 0.05^2 / 0.25 = 8; and sample_size inverts detectable_tv."""
    p, a = np.full(4, 0.25), np.array([0.3, 0.2, 0.25, 0.25])
    lam, dof, out = check.noncentrality(p, a, 400)
    assert_close(lam, 8.0) and dof == 3 and out == 0.0
    assert_close(power(p, a, 400, 0.01, tests=1), check.power_at(8.0, 3, 0.01))
    n = check.sample_size(0.05, 10, 0.01, 0.9)
    assert check.detectable_tv(n, 10, 0.01, 0.9) <= 0.05 < check.detectable_tv(n - 1, 10, 0.01, 0.9)
    assert_close(check.power_at(4 * n * 0.05**2, 10, 0.005), 0.9, rtol=0.01)  # tests=2 split the level
    assert_close(power(p, p, 400, 0.01), 0.005, rtol=1e-6)  # no effect: the size, alpha / tests
    # mass m = 0.1 outside the support: power >= 1 - (1 - m)^n (lambda = 0.5 here gives far less)
    assert_close(power(np.array([0.5, 0.5, 0.0]), np.array([0.45, 0.45, 0.1]), 50), 1 - 0.9**50, rtol=1e-6)


# ---- properties over random tables (adversarial kinds included) -----------------------------------------------
def _from_law(probs, V, L, seed):
    """A perfect black box: draws sequences from the exact law ``probs`` (numpy)."""

    def run(key, den, num):
        idx = np.random.default_rng(seed).choice(probs.size, size=num, p=probs / probs.sum())
        return (idx[:, None] // V ** np.arange(L - 1, -1, -1)) % V

    return run


def _property(q, seed):
    V, L = q.vocab_size, q.length
    ref = Reference(policies.LeftToRight())  # N = L: the law is q itself (exact conditionals, one per step)
    law = np.asarray(q.probs, dtype=np.float64)
    num = 500
    rep = check_sampler(_from_law(law, V, L, seed), q, reference=ref, steps=L, num=num, alpha=1e-6)
    assert rep.passed, str(rep)  # fails with probability ~1e-6 (fixed seed)
    # the statistics, recomputed from their formulas on the pooled cells
    toks = _from_law(law, V, L, seed)(None, None, num)
    obs = np.bincount(toks @ V ** np.arange(L - 1, -1, -1), minlength=V**L).astype(float)
    lab = pool_cells(num * law)
    k = lab.max() + 1
    og = np.array([obs[lab == g].sum() for g in range(k)])
    eg = np.array([num * law[lab == g].sum() for g in range(k)])
    if num * law.sum() >= 5:
        assert np.all(eg >= 5 - 1e-9)
    assert np.all(lab[law > 0] >= 0) and np.all(lab[law == 0] == -1)
    assert rep.dof == k - 1
    assert_close(rep.tests[0].statistic, np.sum((og - eg) ** 2 / eg), atol=1e-9)
    assert_close(rep.tests[1].statistic, 2 * np.sum(og[og > 0] * np.log(og[og > 0] / eg[og > 0])), atol=1e-12)
    # one sequence outside the support: immediate failure, p = 0, named first
    zero = np.nonzero(law == 0)[0]
    if zero.size:
        bad = toks.copy()
        bad[0] = (zero[0] // V ** np.arange(L - 1, -1, -1)) % V
        rep = check_sampler(_fixed(bad), q, reference=ref, steps=L, num=num, alpha=1e-6)
        assert not rep.passed and rep.p_value == 0.0 and rep.support_violations == 1
        assert rep.deviations[0].what.startswith("x = " + " ".join(map(str, bad[0])))


@given(joints(max_states=4**4, max_length=4), st.integers(0, 2**16))
def test_perfect_sampler_passes_and_statistics_match_formulas(q, seed):
    _property(q, seed)


@pytest.mark.slow
@settings(max_examples=40)
@given(joints(max_states=4**4, max_length=4), st.integers(0, 2**16))
def test_perfect_sampler_passes_and_statistics_match_formulas_slow(q, seed):
    _property(q, seed)


# ---- the instance the wrong samplers run on -----------------------------------------------------------------
STEPS = 2  # the reference: RandomOrder, fixed counts, linear schedule, N = 2 on L = 3 (counts (2, 1))
V3, L3 = 3, 3
SEQS = (np.arange(V3**L3)[:, None] // V3 ** np.arange(L3 - 1, -1, -1)) % V3  # (27, 3) row-major


def _sharpen(p, beta):
    p = np.asarray(p, dtype=np.float64) ** beta
    return p / p.sum(-1, keepdims=True)


def _np_conditionals(probs, z):
    """q(x_i = v | visible part of z) by brute force over the 27 sequences: (L, V), one-hot where visible."""
    fits = np.all((SEQS == z) | (z == V3), axis=1)
    w = probs * fits
    return np.stack([np.bincount(SEQS[:, i], weights=w, minlength=V3) for i in range(L3)]) / w.sum()


def _bruteforce_law(probs, counts, choose="random", beta=1.0, joint_values=False):
    """Exact law over V**L of a reveal loop, by enumeration in plain Python (independent of theory.sampling):
    per step, the reveal set (uniform among masked subsets of size c, or the c most / least confident),
    values independent from the (sharpened) conditionals, or jointly from q(x_S | z)."""
    dist = {(V3,) * L3: 1.0}
    for c in counts:
        new: dict = {}
        for z, pz in dist.items():
            za = np.array(z)
            m = _sharpen(_np_conditionals(probs, za), beta)
            masked = [i for i in range(L3) if z[i] == V3]
            c = min(int(c), len(masked))
            if choose == "random":
                sets = list(itertools.combinations(masked, c))
            else:
                sign = -1.0 if choose == "most" else 1.0
                sets = [tuple(sorted(masked, key=lambda i: (sign * m[i].max(), i))[:c])]
            for S in sets:
                for vals in itertools.product(range(V3), repeat=c):
                    zz = za.copy()
                    zz[list(S)] = vals
                    if joint_values:
                        fz = np.all((SEQS == za) | (za == V3), axis=1)
                        fzz = np.all((SEQS == zz) | (zz == V3), axis=1)
                        w = probs[fzz].sum() / probs[fz].sum()
                    else:
                        w = np.prod([m[i, v] for i, v in zip(S, vals)])
                    new[tuple(zz)] = new.get(tuple(zz), 0.0) + pz * w / len(sets)
        dist = new
    out = np.zeros(V3**L3)
    for z, pz in dist.items():
        out[int(np.dot(z, V3 ** np.arange(L3 - 1, -1, -1)))] += pz
    return out


def _user_loop(key, den, num, counts, choose="random", beta=1.0, joint_probs=None):
    """A user's hand-written MDM loop (numpy over den.marginals), with knobs that plant each bug."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    states = np.full((num, L3), V3, dtype=np.int32)
    for c in counts:
        marg = _sharpen(np.asarray(den.marginals(jnp.asarray(states))), beta)  # (num, L, V)
        masked = states == V3
        if choose == "random":
            score = rng.random((num, L3))
        else:
            score = (-1.0 if choose == "most" else 1.0) * marg.max(-1)
        pick = np.argsort(np.where(masked, score, np.inf), axis=1, kind="stable")[:, :c]
        sel = np.zeros(states.shape, bool)
        np.put_along_axis(sel, pick, True, axis=1)
        if joint_probs is None:
            vals = np.argmax(np.cumsum(marg, -1) > rng.random((num, L3, 1)), axis=-1)  # independent per position
        else:  # one full sequence x ~ q(. | visible), copied at the revealed positions: a joint draw
            fits = np.all((SEQS[None] == states[:, None]) | masked[:, None], axis=2)  # (num, V**L)
            w = np.cumsum(fits * joint_probs, axis=1)
            vals = SEQS[np.argmax(w > rng.random(num)[:, None] * w[:, -1:], axis=1)]
        states = np.where(sel, vals, states)
    return states


@pytest.fixture(scope="module")
def world():
    q = dirichlet(jax.random.PRNGKey(3), V3, L3, concentration=0.5)
    ref = Reference(policies.RandomOrder())
    law = np.asarray(ref.exact_law(q, STEPS).probs)
    counts = sampling.make_plan(policies.RandomOrder(), L3, STEPS).values
    assert list(counts) == [2, 1]
    probs = np.asarray(q.probs)
    assert_close(law, _bruteforce_law(probs, counts), atol=1e-15)  # the reference law, two ways
    return q, ref, law, probs


def _flagged(q, ref, law, wrong_law, user, steps=STEPS, key=7):
    """Derive the power at NUM from the exact laws (>= 0.99), then check the sampler is flagged."""
    pw = power(law, np.asarray(wrong_law, dtype=np.float64), NUM, ALPHA)
    assert pw >= 0.99, pw
    rep = check_sampler(user, q, reference=ref, steps=steps, num=NUM, alpha=ALPHA, key=key)
    assert not rep.passed, str(rep)
    assert rep.p_value < ALPHA / 2 and rep.deviations
    return rep


def test_correct_sampler_passes(world):
    """A correct hand-written RandomOrder loop at the reference's settings; key 1 fixed (a correct sampler
    fails with probability <= alpha = 0.01: the slow twin measures that rate over 200 keys with the
    toolkit's own sampler)."""
    q, ref, _, _ = world
    rep = check_sampler(
        lambda k, d, n: _user_loop(k, d, n, [2, 1]), q, reference=ref, steps=STEPS, num=NUM, alpha=ALPHA, key=1
    )
    assert rep.passed, str(rep)
    assert rep.num == NUM and rep.detectable_tv < 0.05


def test_temperature_slip_is_flagged(world):
    """(a) values from p**1.5 / sum p**1.5 (as float32 Gumbel-max truncation sharpens at large V)."""
    q, ref, law, probs = world

    def slipped(key, den, num):
        return _user_loop(key, den, num, [2, 1], beta=BETA)

    _flagged(q, ref, law, _bruteforce_law(probs, [2, 1], beta=BETA), slipped)


def test_schedule_off_by_one_is_flagged(world):
    """(b) the user's loop runs N - 1 steps: counts (3,) instead of (2, 1) (N + 1 = 3 steps would sample q
    itself here, the law of (c))."""
    q, ref, law, probs = world
    counts = sampling.make_plan(policies.RandomOrder(), L3, STEPS - 1).values
    assert list(counts) == [3]

    def off_by_one(key, den, num):
        return _user_loop(key, den, num, counts)

    wrong = _bruteforce_law(probs, counts)
    assert_close(wrong, ref.exact_law(q, STEPS - 1).probs, atol=1e-15)
    _flagged(q, ref, law, wrong, off_by_one)


def test_joint_values_are_flagged(world):
    """(c) the revealed values of a step drawn jointly from q(x_S | z) instead of independently."""
    q, ref, law, probs = world

    def joint_values(key, den, num):
        return _user_loop(key, den, num, [2, 1], joint_probs=probs)

    wrong = _bruteforce_law(probs, [2, 1], joint_values=True)
    assert_close(wrong, sampling.exact_law(q, policies.RandomOrder(), STEPS, values="joint").probs, atol=1e-15)
    _flagged(q, ref, law, wrong, joint_values)


def test_topk_wrong_positions_is_flagged(world):
    """(d) Top-k confidence (LLaDA low-confidence remasking) applied to the wrong tokens: it reveals the
    least-confident ones. Reference: Top-k confidence, N = 2."""
    q, _, _, probs = world
    ref = Reference(policies.TopK("confidence"))
    law = np.asarray(ref.exact_law(q, STEPS).probs)
    assert_close(law, _bruteforce_law(probs, [2, 1], choose="most"), atol=1e-15)

    def least_confident(key, den, num):
        return _user_loop(key, den, num, [2, 1], choose="least")  # BUG: "least" where "most" was meant

    _flagged(q, ref, law, _bruteforce_law(probs, [2, 1], choose="least"), least_confident)


# ---- long Markov chain: per-position and pair tests ---------------------------------------------------------
LONG = 256


def _l2r_chain(init, trans, seed_key, num, beta=1.0):
    """Left-to-right ancestral sampling in numpy; beta != 1 sharpens every conditional (the slip)."""
    sharpen = lambda p: p**beta / np.sum(p**beta, axis=-1, keepdims=True)  # noqa: E731
    i0, tr = sharpen(init), sharpen(trans)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(seed_key)))
    cdf0, cdf = np.cumsum(i0), np.cumsum(tr, axis=1)
    x = np.zeros((num, LONG), dtype=np.int64)
    u = rng.random((num, LONG))
    x[:, 0] = np.minimum(np.searchsorted(cdf0, u[:, 0], side="right"), init.size - 1)
    for i in range(1, LONG):
        x[:, i] = np.minimum((cdf[x[:, i - 1]] <= u[:, i : i + 1]).sum(1), init.size - 1)
    return x


@pytest.fixture(scope="module")
def chain():
    return random_markov(jax.random.PRNGKey(5), 3, LONG)


def test_long_chain_correct_passes_and_slip_is_flagged(chain):
    """Reference: RandomOrder with N = L (one token per step, exact conditionals: its law is q, so the
    expected counts are q's exact position / pair marginals). A correct L2R ancestral sampler has law q
    (key fixed); the slipped one has the law of MarkovChain(sharpened init, sharpened rows), whose pair
    marginals give each pair test's exact noncentrality: the Bonferroni verdict's power is at least the
    largest single test's, asserted >= 0.99 before detection is asserted."""
    num, m = 2000, 2 * LONG - 1
    ref = Reference(policies.RandomOrder())
    ok = check_sampler(
        lambda k, d, n: _l2r_chain(chain.init, chain.trans, k, n), chain, reference=ref, steps=LONG, num=num, key=2
    )
    assert ok.passed, str(ok)
    assert "exact marginals" in ok.method and len(ok.tests) == m
    sharpen = lambda p: p**BETA / np.sum(p**BETA, axis=-1, keepdims=True)  # noqa: E731
    slip = MarkovChain(sharpen(chain.init), sharpen(chain.trans), LONG)
    pos_q, pair_q = check.data_marginals(chain.denoiser(), LONG, 3)
    # by hand: q(x_i) = init T^i, q(x_i, x_{i+1}) = diag(q(x_i)) T
    want = np.array([chain.init @ np.linalg.matrix_power(chain.trans, i) for i in range(LONG)])
    assert_close(pos_q, want, rtol=1e-9)
    assert_close(pair_q, want[:-1, :, None] * chain.trans[None], rtol=1e-9)
    ws = np.array([slip.init @ np.linalg.matrix_power(slip.trans, i) for i in range(LONG - 1)])
    pair_s = ws[:, :, None] * slip.trans[None]  # the slipped sampler's pair law (a Markov chain)
    pw = max(
        check.power_at(*check.noncentrality(pair_q[i].ravel(), pair_s[i].ravel(), num)[:2], ALPHA / m)
        for i in range(LONG - 1)
    )
    assert pw >= 0.99, pw
    bad = check_sampler(
        lambda k, d, n: _l2r_chain(chain.init, chain.trans, k, n, BETA),
        chain,
        reference=ref,
        steps=LONG,
        num=num,
        key=2,
    )
    assert not bad.passed and bad.p_value < ALPHA / m, str(bad)
    assert bad.deviations[0].what.startswith(("x_", "(x_"))


# ---- input checks ------------------------------------------------------------------------------------------
def test_bad_input_raises(world):
    q, ref, _, _ = world
    good = _fixed(np.zeros((10, 3), dtype=int))
    with pytest.raises(TypeError, match="registered sampler"):
        check_sampler(good, q, reference=object(), steps=2, num=10)
    with pytest.raises(TypeError, match="unknown"):
        check_sampler(good, q, reference=dict(polcy=None), steps=2, num=10)
    with pytest.raises(ValueError, match=r"shape \(num, L\)"):
        check_sampler(_fixed(np.zeros((10, 2), dtype=int)), q, reference=ref, steps=2, num=10)
    with pytest.raises(TypeError, match="integer"):
        check_sampler(_fixed(np.full((10, 3), 0.5)), q, reference=ref, steps=2, num=10)
    with pytest.raises(ValueError, match="alpha"):
        check_sampler(good, q, reference=ref, steps=2, num=10, alpha=1.5)
    with pytest.raises(ValueError, match="method"):
        check_sampler(good, q, reference=ref, steps=2, num=10, method="bogus")
    with pytest.raises(ValueError, match="marginals"):
        check_sampler(good, _NotEnumerable(q), reference=ref, steps=2, num=10, method="exact")
    # a token outside 0..V-1 (e.g. a mask left behind) is a failure, not an error
    rep = check_sampler(_fixed(np.full((10, 3), 3)), q, reference=ref, steps=2, num=10)
    assert not rep.passed and rep.support_violations == 10 and "outside" in rep.deviations[0].what


class _NotEnumerable:
    def __init__(self, q):
        self.q = q
        self.vocab_size, self.length = q.vocab_size, q.length

    def denoiser(self):
        return self.q.denoiser()

    def log_prob(self, t):
        return self.q.log_prob(t)

    def entropy(self):
        return self.q.entropy()

    def sample(self, key, num):
        return self.q.sample(key, num)


def test_accepts_samples_and_pairs_and_registered_samplers(world):
    """The user's output may be Samples or (tokens, nfe); the reference any object with exact_law/sample."""
    q, ref, law, _ = world
    toks = _from_law(law, 3, 3, 0)(None, None, 600)

    class Registered:  # the interface of theory.samplers' Sampler objects (duck-typed)
        name, source = "mdlm-like", "test"

        def exact_law(self, joint_or_denoiser, steps):
            return ref.exact_law(joint_or_denoiser, steps)

        def sample(self, key, denoiser, steps, *, num):
            return ref.sample(key, denoiser, steps, num=num)

    out = [
        check_sampler(
            lambda k, d, n: sampling.Samples(jnp.asarray(toks), jnp.zeros(600)), q, reference=ref, steps=2, num=600
        ),
        check_sampler(lambda k, d, n: (toks, None), q, reference=Registered(), steps=2, num=600),
    ]
    assert out[0].to_frame().equals(out[1].to_frame())  # same tokens, same law: the same tests
    assert out[1].passed and out[1].reference == "mdlm-like"


# ---- docs/check_sampler.md: the page's code runs ------------------------------------------------------------
def test_doc_page_code_runs():
    text = (ROOT / "docs" / "check_sampler.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    env: dict = {}
    exec(compile("\n".join(blocks), "docs/check_sampler.md", "exec"), env)
    rep = env["report"]
    assert not rep.passed and env["fixed_report"].passed
    # the page shows the reports its code prints, verbatim
    assert str(rep) in text and str(env["fixed_report"]) in text


# ---- slow twins -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_false_positive_rate_within_binomial_bound(world):
    """A correct sampler over 200 keys at alpha = 0.05: the number flagged must not exceed the
    binomial(200, 0.05) quantile at 1 - 1e-4 (the test's own false-alarm rate is < 1e-4 if the check's
    size is <= alpha; Bonferroni makes it conservative)."""
    q, ref, _, _ = world
    runs, a = 200, 0.05

    def correct(key, den, num):
        return sampling.sample(key, den, policies.RandomOrder(), STEPS, num=num)

    flagged = sum(
        not check_sampler(correct, q, reference=ref, steps=STEPS, num=1024, alpha=a, key=100 + s).passed
        for s in range(runs)
    )
    assert flagged <= binom.ppf(1 - 1e-4, runs, a), flagged


@pytest.mark.slow
def test_long_chain_toolkit_sampler_slow(chain):
    """The toolkit's own RandomOrder N = L sampler passes on the L = 256 chain (key fixed); a user sampler
    whose denoiser sharpens p -> p**1.5 (with marginals_at, so it runs on the fast path) is flagged, and
    the two-sample path (reference's own Monte-Carlo sample, N = L / 2) passes the correct N = L / 2 run."""
    num = 2000
    ref = Reference(policies.RandomOrder())

    @dataclass(frozen=True, eq=False)
    class Sharpened:
        base: object
        vocab_size: int = 3
        length: int = LONG

        def marginals(self, states):
            p = self.base.marginals(states) ** BETA
            return p / p.sum(-1, keepdims=True)

        def marginals_at(self, states, positions):
            p = self.base.marginals_at(states, positions) ** BETA
            return p / p.sum(-1, keepdims=True)

    ok = check_sampler(
        lambda k, den, n: sampling.sample(k, den, policies.RandomOrder(), LONG, num=n),
        chain,
        reference=ref,
        steps=LONG,
        num=num,
        key=3,
    )
    assert ok.passed, str(ok)
    bad = check_sampler(
        lambda k, den, n: sampling.sample(k, Sharpened(den), policies.RandomOrder(), LONG, num=n),
        chain,
        reference=ref,
        steps=LONG,
        num=num,
        key=3,
    )
    assert not bad.passed, str(bad)
    half = check_sampler(
        lambda k, den, n: sampling.sample(k, den, policies.RandomOrder(), LONG // 2, num=n),
        chain,
        reference=ref,
        steps=LONG // 2,
        num=num,
        key=3,
    )
    assert half.passed and "two-sample" in half.method, str(half)


@pytest.mark.slow
def test_correct_topk_passes_slow(world):
    """The toolkit's own Top-k confidence sampler passes against the Top-k reference (key fixed)."""
    q, _, _, _ = world
    ref = Reference(policies.TopK("confidence"))
    rep = check_sampler(
        lambda k, d, n: sampling.sample(k, d, policies.TopK("confidence"), STEPS, num=n),
        q,
        reference=ref,
        steps=STEPS,
        num=NUM,
        key=4,
    )
    assert rep.passed, str(rep)


@pytest.mark.slow
def test_measured_detection_rate_meets_predicted_power(world):
    """The power rule at a num where it is not ~1: the temperature slip at num = 512, where the Pearson
    test's predicted power (noncentral chi-square, level alpha/2) is about 0.87. Over 200 keys the number
    flagged must be at least the binomial(200, predicted) quantile at 1e-4 (the decision also rejects on
    G, so the rate may exceed the prediction; measured 0.970 when written)."""
    q, ref, law, probs = world
    num, runs = 512, 200
    pred = power(law, _bruteforce_law(probs, [2, 1], beta=BETA), num, ALPHA)
    assert 0.5 < pred < 0.99, pred
    flagged = sum(
        not check_sampler(
            lambda k, d, n: _user_loop(k, d, n, [2, 1], beta=BETA), q, reference=ref, steps=STEPS, num=num, key=1000 + s
        ).passed
        for s in range(runs)
    )
    assert flagged >= binom.ppf(1e-4, runs, pred), (flagged, pred)


# ---- experiments/sampler_correctness.py (Tang et al. 2026's claim) --------------------------------------------
def test_transition_mismatch_by_hand():
    """A chain's pair law is diag(q(x_i)) T; the product of its position marginals has pair law
    q(x_i) q(x_{i+1})^T: their TV per pair, written out here."""
    from theory.check import law_pair_marginals, transition_mismatch

    mc = random_markov(jax.random.PRNGKey(8), 2, 3)
    q = np.asarray(mc.joint().probs)
    m = [mc.init @ np.linalg.matrix_power(mc.trans, i) for i in range(3)]
    prod = np.einsum("a,b,c->abc", *m).ravel()
    assert_close(law_pair_marginals(q, 2, 3), np.array([m[i][:, None] * mc.trans for i in range(2)]))
    want = [0.5 * np.abs(m[i][:, None] * mc.trans - np.outer(m[i], m[i + 1])).sum() for i in range(2)]
    assert_close(transition_mismatch(prod, q, 2, 3), np.array(want))
    assert_close(transition_mismatch(q, q, 2, 3), np.zeros(2), atol=0)


def _exact_row(cfg, seed, N, reveal):
    from synthetic.languages import random_markov as rm
    from theory.check import transition_mismatch

    V, L = cfg["vocab"], cfg["exact_length"]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)  # _common.point_key(seed, 0)
    q = rm(key, V, L, cfg["concentration"]).joint()
    law = sampling.exact_law(q, policies.RandomOrder(), N, reveal=reveal).probs
    return transition_mismatch(law, q.probs, V, L)


def test_committed_figure_exact_rows(tmp_path):
    """figures/sampler_correctness.csv (default run): an exact row recomputed through the library (1e-10; the
    slow --quick test recomputes a Bernoulli row),
    and the claim in its exact form — with fixed counts the pair mismatch is > 0 for every N < L and 0
    (rounding) at N >= L; with Bernoulli reveal it stays > 0 even at N = 8L; check_sampler flags N = 1 and
    passes N = L at both sample sizes."""
    import json

    import pandas as pd

    frame = pd.read_csv(ROOT / "figures" / "sampler_correctness.csv")
    cfg = json.loads((ROOT / "figures" / "sampler_correctness.json").read_text())
    ex = frame[frame.part == "exact"]
    L = cfg["exact_length"]
    for N, reveal in ((4, "fixed"),):
        row = ex[(ex.steps == N) & (ex.reveal == reveal)].iloc[0]
        tv = _exact_row(cfg, cfg["seed"], N, reveal)
        assert_close(row.mean_pair_tv, tv.mean(), rtol=1e-10)
        assert_close(row.max_pair_tv, tv.max(), rtol=1e-10)
    fixed = ex[ex.reveal == "fixed"]
    assert (fixed[fixed.steps < L].mean_pair_tv > 1e-3).all()
    assert (fixed[fixed.steps >= L].mean_pair_tv < 1e-15).all()
    assert (ex[ex.reveal == "bernoulli"].mean_pair_tv > 1e-3).all()
    ck = frame[frame.part == "check_sampler"]
    assert ck[(ck.reveal == "fixed") & (ck.steps == cfg["check_length"])].passed.all()
    assert not ck[ck.steps == 1].passed.astype(bool).any()
    # replot draws the PNG from the CSV alone
    import shutil

    from conftest import load_script

    shutil.copy(ROOT / "figures" / "sampler_correctness.csv", tmp_path)
    assert load_script("sampler_correctness").replot(tmp_path)["png"].stat().st_size > 0


@pytest.mark.slow
def test_sampler_correctness_script_quick(tmp_path_factory):
    """--quick in-process: every column written, an exact row and a check_sampler row recomputed through the
    library with the script's keys (the check row identically: same key, same tokens)."""
    from conftest import load_script, one_row, run_quick

    mod = load_script("sampler_correctness")
    out, (frame, paths) = run_quick(mod, tmp_path_factory)
    assert all(p.exists() for p in paths.values())
    cfg = mod.settings(True)
    row = one_row(frame, part="exact", steps=2, reveal="bernoulli")
    assert_close(row.mean_pair_tv, _exact_row(cfg, 0, 2, "bernoulli").mean(), rtol=1e-10)
    chain = random_markov(jax.random.fold_in(jax.random.PRNGKey(0), 1), 3, cfg["check_length"], cfg["concentration"])
    i = 1  # grid index of (num 256, fixed, N = 16)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 2), i)
    rep = check_sampler(
        lambda k, d, n: sampling.sample(k, d, policies.RandomOrder(), 16, num=n),
        chain,
        reference=Reference(policies.RandomOrder()),
        steps=cfg["check_length"],
        num=cfg["nums"][0],
        key=key,
    )
    got = one_row(frame, part="check_sampler", steps=16, reveal="fixed")
    assert got.passed == rep.passed and got.adjusted_p == rep.adjusted_p and got.worst == rep.deviations[0].what


@pytest.mark.slow
def test_registered_samplers_pass_and_a_slip_is_flagged(world):
    """The registry's samplers (theory.samplers) as references: their own Monte Carlo passes against their
    exact law (keys fixed), and an MDLM whose denoiser is sharpened p -> p**1.5 is flagged, after its power
    (from the exact law of the slipped sampler) is asserted >= 0.99."""
    from theory.denoiser import tempered
    from theory.samplers import get_sampler

    q, _, _, _ = world
    for i, name in enumerate(("mdlm", "llada-low-confidence", "eb-sampler")):
        s = get_sampler(name)
        rep = check_sampler(lambda k, d, n, s=s: s.sample(k, d, STEPS, num=n), q, reference=s, steps=STEPS, key=20 + i)
        assert rep.passed and rep.reference == name, str(rep)
    mdlm = get_sampler("mdlm")
    slip = tempered(q.denoiser(), 1.0 / BETA)
    law = np.asarray(mdlm.exact_law(q, STEPS).probs)
    assert power(law, np.asarray(mdlm.exact_law(slip, STEPS).probs), NUM, ALPHA) >= 0.99
    rep = check_sampler(
        lambda k, d, n: mdlm.sample(k, tempered(d, 1.0 / BETA), STEPS, num=n),
        q,
        reference=mdlm,
        steps=STEPS,
        num=NUM,
        key=30,
    )
    assert not rep.passed, str(rep)
