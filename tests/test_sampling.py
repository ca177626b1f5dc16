"""The exact law of the sampler and the Monte-Carlo sampler."""

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.stats import chisquare

from theory import metrics, policies, schedules
from theory.joint import Joint
from theory.reference import reference_law
from theory.sampling import exact_law, sample

from conftest import assert_close
from strategies import joints, reveals, schedules_st, steps_st, value_blind_policies


@given(joints(max_states=4**5), st.data())
def test_one_token_per_step_generates_q(q, data):
    """Revealing one token per step with the exact denoiser is exact, for value-blind policies."""
    pol = data.draw(value_blind_policies(q.length))
    law = exact_law(q, pol, counts=[1] * q.length)
    assert np.max(np.abs(np.asarray(law.probs) - np.asarray(q.probs))) <= 1e-12
    assert law.expected_nfe == pytest.approx(q.length, rel=1e-12)


@given(joints(max_states=4**5), reveals)
def test_one_step_generates_product_of_marginals(q, reveal):
    law = exact_law(q, policies.RandomOrder(), 1, reveal=reveal)
    m = np.asarray(q.marginals())
    prod = m[0]
    for i in range(1, q.length):
        prod = np.multiply.outer(prod, m[i])
    assert_close(law.probs, prod.reshape(-1), rtol=1e-12, atol=1e-15)


@given(joints(max_states=4**4), st.data(), steps_st, reveals, schedules_st)
def test_laws_are_distributions(q, data, N, reveal, sch):
    pol = data.draw(value_blind_policies(q.length)) if reveal == "fixed" else policies.RandomOrder()
    law = exact_law(q, pol, N, reveal=reveal, schedule=sch)
    p = np.asarray(law.probs)
    assert np.all(p >= 0)
    assert abs(p.sum() - 1) <= 1e-12
    assert metrics.kl(q.probs, p) >= -1e-14


@given(joints(max_states=3**4, max_length=4), st.data(), st.sampled_from(["fixed", "bernoulli"]))
def test_exact_law_equals_plain_reference(q, data, reveal):
    """The vectorised engine against a pure-Python loop over partial states (no shared code)."""
    N = data.draw(st.integers(1, 3))
    sch = data.draw(schedules_st)
    order = data.draw(st.sampled_from(["random", "left_to_right"])) if reveal == "fixed" else "random"
    pol = policies.RandomOrder() if order == "random" else policies.LeftToRight()
    law = exact_law(q, pol, N, reveal=reveal, schedule=sch)
    kw = (
        {"counts": schedules.fixed_counts(sch, N, q.length)}
        if reveal == "fixed"
        else {"reveal_probs": schedules.reveal_probs(sch, N)}
    )
    ref = reference_law(q.probs, q.vocab_size, q.length, order=order, **kw)
    assert_close(law.probs, ref, rtol=1e-10, atol=1e-15)


@given(joints(max_states=4**5, min_length=2), st.sampled_from([1, 2]))
def test_kl_nonincreasing_when_doubling_steps(q, N):
    """With the linear schedule and L divisible by 2N, N -> 2N splits every step: KL cannot rise."""
    assume(q.length % (2 * N) == 0)
    k1 = metrics.kl(q.probs, exact_law(q, None, N).probs)
    k2 = metrics.kl(q.probs, exact_law(q, None, 2 * N).probs)
    assert k2 <= k1 + 1e-12


def test_kl_not_monotone_in_N_counterexample():
    """Counter-example (found by exhaustive search over uniform supports of size <= 3, V=2, L=4):
    q uniform on {0000, 0011, 1101}. Linear fixed counts: N=2 -> [2, 2], N=3 -> [1, 2, 1].
    The two plans do not nest, and KL(q||p_3) > KL(q||p_2). Checked with the independent reference."""
    q = Joint.from_support([[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 1]], 2, 4)
    assert schedules.fixed_counts(schedules.linear(), 2, 4).tolist() == [2, 2]
    assert schedules.fixed_counts(schedules.linear(), 3, 4).tolist() == [1, 2, 1]
    k2 = metrics.kl(q.probs, reference_law(q.probs, 2, 4, counts=[2, 2]))
    k3 = metrics.kl(q.probs, reference_law(q.probs, 2, 4, counts=[1, 2, 1]))
    assert k3 > k2 + 0.01
    assert_close(metrics.kl(q.probs, exact_law(q, None, 3).probs), k3, rtol=1e-10)


@given(joints(max_states=4**4), schedules_st, steps_st)
def test_bernoulli_expected_nfe_closed_form(q, sch, N):
    """E[NFE] = sum_n 1 - (1 - pi_n)^L, pi_n = alpha(s_n) - alpha(t_n) the chance a given token is revealed
    at step n (reveal times are i.i.d. across tokens and independent of values)."""
    a = schedules.alphas_on_grid(sch, N)
    want = np.sum(1 - (1 - np.diff(a)) ** q.length)
    law = exact_law(q, None, N, reveal="bernoulli", schedule=sch)
    assert law.expected_nfe == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_fixed_nfe_counts_nonempty_steps():
    q = Joint(np.full(8, 1 / 8), 2, 3)
    law = exact_law(q, None, counts=[1, 0, 2])
    assert law.expected_nfe == pytest.approx(2.0)


# ---- THE Monte-Carlo sampler: every policy, both reveal modes, any batching ---------------------------------
# One representative of every policy class (policies are pytrees: each class/static config compiles once).
POLICIES = {
    "random": policies.RandomOrder(),  # static-order fast path
    "l2r": policies.LeftToRight(),  # static-order fast path
    "fixed_order": policies.FixedOrder((2, 0, 3, 1)),  # static-order fast path
    "topk": policies.TopK("confidence"),  # schedule counts, general path
    "topk_k2": policies.TopK("margin", k=2),  # adaptive (ignores the schedule)
    "eb": policies.EntropyBounded(0.3),  # adaptive, traced gamma
}
MC_Q = Joint.from_unnormalized(np.arange(1, 17, dtype=np.float64) ** 1.5, 2, 4)
MC_NUM = 16384  # a multiple of 1024: no padded rows
MC_KEY = jax.random.PRNGKey(7)


@cache
def _mc_run(name, reveal):
    s = sample(MC_KEY, MC_Q.denoiser(), POLICIES[name], 2, num=MC_NUM, reveal=reveal, schedule=schedules.cosine())
    return np.asarray(s.tokens), np.asarray(s.nfe)


@pytest.mark.parametrize("reveal", ["fixed", "bernoulli"])
@pytest.mark.parametrize("name", list(POLICIES))
def test_sample_matches_exact_law_chisquare(name, reveal):
    """Chi-square goodness of fit of 16384 Monte-Carlo draws against exact_law over all V**L = 16 outcomes
    (fixed key, level alpha = 1e-3), and the mean NFE within 4 standard errors of the exact expected NFE."""
    pol = POLICIES[name]
    law = exact_law(MC_Q, pol, 2, reveal=reveal, schedule=schedules.cosine())
    p = np.asarray(law.probs)
    tokens, nfe = _mc_run(name, reveal)
    counts = np.bincount(tokens @ np.array([8, 4, 2, 1]), minlength=16)
    keep = p > 0
    assert counts[~keep].sum() == 0
    assert chisquare(counts[keep], MC_NUM * p[keep] / p[keep].sum()).pvalue > 1e-3, (name, reveal)
    se = nfe.std(ddof=1) / np.sqrt(MC_NUM)
    assert abs(nfe.mean() - law.expected_nfe) <= 4 * se + 1e-12, (nfe.mean(), law.expected_nfe, se)


@pytest.mark.parametrize("name", list(POLICIES))
def test_sample_is_independent_of_batch_size(name):
    """Sample i depends only on fold_in(key, i): the first 13 draws are the same with batch sizes 1, 7 and
    the full batch of 16384 (tokens and NFE)."""
    full_t, full_n = _mc_run(name, "bernoulli")
    for bs in (1, 7):
        s = sample(MC_KEY, MC_Q.denoiser(), POLICIES[name], 2, num=13, reveal="bernoulli",
                   schedule=schedules.cosine(), batch_size=bs)  # fmt: skip
        assert np.array_equal(np.asarray(s.tokens), full_t[:13]), (name, bs)
        assert np.array_equal(np.asarray(s.nfe), full_n[:13]), (name, bs)


_SHARDED = """
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import test_sampling as T
from theory.sampling import batch_sharding, sample
from theory import schedules
assert jax.device_count() == 2, jax.devices()
want = np.load(sys.argv[2])
for name, pol in T.POLICIES.items():
    s = sample(T.MC_KEY, T.MC_Q.denoiser(), pol, 2, num=13, reveal="bernoulli", schedule=schedules.cosine(),
               sharding=batch_sharding(2))
    assert np.array_equal(np.asarray(s.tokens), want[name]), name
print("sharded ok")
"""


@pytest.mark.slow  # a subprocess with its own JAX start and compilations (~9 s); batch-size invariance stays default
def test_sample_is_independent_of_sharding(tmp_path):
    """Two host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2, set before JAX starts, hence a
    subprocess): a batch sharded over both gives the same tokens as the unsharded run, for every policy."""
    want = {name: _mc_run(name, "bernoulli")[0][:13] for name in POLICIES}
    np.savez(tmp_path / "want.npz", **want)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    tests_dir = str(Path(__file__).resolve().parent)
    r = subprocess.run([sys.executable, "-c", _SHARDED, tests_dir, str(tmp_path / "want.npz")], env=env,
                       capture_output=True, text=True, cwd=str(Path(tests_dir).parent))  # fmt: skip
    assert r.returncode == 0 and "sharded ok" in r.stdout, r.stderr[-3000:]


def test_one_compilation_serves_every_N():
    """The static-order fast path traces the plan: N = 2 and N = 4 (fixed counts) share one compiled loop."""
    from theory.sampling import _jitted

    d = MC_Q.denoiser()
    sample(jax.random.PRNGKey(0), d, policies.RandomOrder(), 2, num=8)
    before = _jitted(True, True, True)._cache_size()
    for N in (1, 3, 4):
        sample(jax.random.PRNGKey(0), d, policies.RandomOrder(), N, num=8)
    assert _jitted(True, True, True)._cache_size() == before


def test_sampling_bad_input():
    q = Joint(np.full(4, 0.25), 2, 2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        exact_law(q, None, 0)
    with pytest.raises(ValueError, match="reveal"):
        exact_law(q, None, 2, reveal="gumbel")
    with pytest.raises(ValueError, match="sum to the length"):
        exact_law(q, None, counts=[1, 2])
    with pytest.raises(ValueError, match="pass steps"):
        exact_law(q, None)
    with pytest.raises(ValueError, match="num"):
        sample(jax.random.PRNGKey(0), q.denoiser(), None, 2, num=0)
    with pytest.raises(TypeError, match="marginals"):
        sample(jax.random.PRNGKey(0), object(), None, 2, num=3)
    from theory.denoiser import FunctionDenoiser

    other = FunctionDenoiser(lambda z: np.full(z.shape + (2,), 0.5), 2, 3)
    with pytest.raises(ValueError, match="length = 3 but 2 was asked"):
        exact_law(q, None, 2, denoiser=other)
    big = Joint(np.full(2**12, 2.0**-12), 2, 12)
    with pytest.raises(ValueError, match=r"(?s)needs|would need.*Monte-Carlo"):
        exact_law(big, None, 2, max_bytes=2**20)


def test_denoisers_of_the_same_shape_share_one_compilation():
    """Exact denoisers are pytrees (the cylinder table is a traced leaf): two different joints of the same
    (V, L) run through one compiled loop, and each still samples its own law (first-token marginals)."""
    from theory.sampling import _jitted

    q1 = Joint.from_unnormalized(np.arange(1, 9, dtype=np.float64), 2, 3)
    q2 = Joint.from_support([[0, 0, 0], [1, 1, 1]], 2, 3)
    s1 = sample(jax.random.PRNGKey(0), q1.denoiser(), policies.RandomOrder(), 3, num=64)
    before = _jitted(True, True, True)._cache_size()
    s2 = sample(jax.random.PRNGKey(0), q2.denoiser(), policies.RandomOrder(), 3, num=64)
    assert _jitted(True, True, True)._cache_size() == before
    t2 = np.asarray(s2.tokens)
    assert np.all((t2 == t2[:, :1]).all(1))  # one token per step with q2's exact conditionals: 000 or 111
    assert not np.all((np.asarray(s1.tokens) == np.asarray(s1.tokens)[:, :1]).all(1))


@pytest.mark.parametrize("n", [0, 1, 5, 37])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.999, 1.0])
def test_binomial_inverse_cdf_is_exact(n, p):
    """The Bernoulli-reveal count: u just below / above scipy's Binomial(n, p) CDF at k maps to k / k + 1
    (so each k gets exactly its pmf of the unit interval); p = 0 and p = 1 give 0 and n."""
    from scipy.stats import binom

    from theory.sampling import binomial_inverse_cdf

    def draw(u):
        return int(binomial_inverse_cdf(jnp.float64(u), jnp.int32(n), jnp.float64(p), 40))

    if p in (0.0, 1.0):
        assert draw(0.0) == draw(0.5) == draw(1 - 1e-12) == (0 if p == 0.0 else n)
        return
    for k in range(n):
        c = binom.cdf(k, n, p)
        if binom.pmf(k, n, p) > 1e-9 and binom.pmf(k + 1, n, p) > 1e-9:
            assert draw(c * (1 - 1e-10)) == k, k
            assert draw(c * (1 + 1e-10)) == k + 1, k


def test_inverse_cdf_never_returns_a_zero_probability_value():
    """u in [0, 1) maps to v with cdf[v-1] <= u * total < cdf[v]: at u = 0 a leading zero-probability value
    is skipped (a strict '<' would return it), and u just below 1 never runs past the last positive one."""
    from theory.sampling import inverse_cdf

    probs = jnp.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.5], [0.25, 0.25, 0.25, 0.25]])
    assert np.asarray(inverse_cdf(probs, jnp.zeros(3))).tolist() == [2, 1, 0]
    assert np.asarray(inverse_cdf(probs, jnp.full(3, 0.5))).tolist() == [2, 3, 2]
    assert np.asarray(inverse_cdf(probs, jnp.full(3, 1 - 2**-53))).tolist() == [2, 3, 3]
