"""The MDM loss, the exact and Monte-Carlo ELBO and eps_learning (theory/elbo.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import languages
from synthetic.models import init_denoiser, network_logits
from theory import elbo as E
from theory import schedules
from theory.denoiser import FunctionDenoiser, TabularDenoiser
from theory.joint import Joint

from conftest import assert_close
from strategies import seeds

KEY = jax.random.PRNGKey(0)
SMALL = dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, rank=3)


def _uniform(V, L):
    return FunctionDenoiser(lambda s: jnp.full(s.shape + (V,), 1.0 / V), V, L)


def _random_tabular(joint, seed):
    """A random (wrong) denoiser: Dirichlet conditionals for every partial state."""
    V, L = joint.vocab_size, joint.length
    t = np.random.default_rng(seed).dirichlet(np.ones(V), size=((V + 1) ** L, L))
    return TabularDenoiser(t, V, L)


def test_loss_keeps_float64_for_a_float64_model():
    """Linear schedule, weight 1/t at t = 0.3 (10/3, not a float32 number); one clean token 0 of a V = 2,
    L = 2 sequence masked, model probability 1/3 for it: the loss is (10/3) log(3) / 2 to float64 precision
    (the weights used to be cast to float32: ~1e-8 relative error for a float64 model)."""
    log_probs = lambda z: jnp.log(jnp.broadcast_to(jnp.array([1 / 3, 2 / 3]), z.shape + (2,)))  # noqa: E731
    tokens = jnp.array([[0, 1]])
    mask = jnp.array([[True, False]])
    t = jnp.array([0.3])
    got = E.per_example_loss(log_probs, tokens, t, jnp.ones(1), mask, schedules.linear(), 2)
    assert got.dtype == jnp.float64
    assert_close(got, np.array([(1 / 0.3) * math.log(3) / 2]), rtol=1e-15)


# ---------------------------------------------------------------- closed forms of the weights
def test_forward_weights_linear_closed_form():
    """Linear alpha: int_0^1 (1-t)^(L-m) t^m dt = B(L-m+1, m+1) = (L-m)! m! / (L+1)!."""
    for L in (1, 4, 9):
        want = [math.factorial(L - m) * math.factorial(m) / math.factorial(L + 1) for m in range(L + 1)]
        assert_close(E.forward_weights(schedules.linear(), L), np.array(want), rtol=1e-12)


def test_elbo_weights_sum_to_one_prediction_per_position():
    """sum_m binom(L, m) * m * w_elbo(m) = L: the ELBO predicts each of the L tokens once (any order)."""
    for L in (1, 3, 10):
        w = E.elbo_weights(L)
        assert abs(sum(math.comb(L, m) * m * w[m] for m in range(L + 1)) - L) < 1e-12


def test_forward_weights_cosine_integrate_to_one():
    """sum_m binom(L, m) w_fwd(m) = int_0^1 (alpha + 1 - alpha)^L dt = 1 for any schedule."""
    for s in (schedules.cosine(), schedules.polynomial(2.0), schedules.geometric()):
        w = E.forward_weights(s, 5)
        assert abs(sum(math.comb(5, m) * w[m] for m in range(6)) - 1.0) < 1e-10


# ---------------------------------------------------------------- exact evaluation: identities
@st.composite
def few_shape_joints(draw):
    """Random joints (Dirichlet, with support holes half the time) on three shapes: compiled code is reused."""
    V, L = draw(st.sampled_from([(2, 4), (3, 3), (4, 2)]))
    seed = draw(seeds)
    p = np.array(languages.dirichlet(jax.random.PRNGKey(seed), V, L, draw(st.sampled_from([0.1, 1.0, 3.0]))).probs)
    if draw(st.booleans()):
        keep = np.random.default_rng(seed).random(p.size) < 0.6
        keep[np.argmax(p)] = True
        p = p * keep
    return Joint(p / p.sum(), V, L)


@settings(max_examples=8)
@given(q=few_shape_joints(), seed=seeds)
def test_exact_evaluation_identities(q, seed):
    """Exact denoiser: eps = 0 and ELBO = H(q) (chain rule in every order). Any denoiser: ELBO - H = gap >= 0.
    Uniform denoiser: ELBO = L log V."""
    ev = E.exact_evaluation(q)
    V, L = q.vocab_size, q.length
    r = ev(q.denoiser())
    assert abs(r["eps_learning"]) < 1e-12 and abs(r["elbo_gap"]) < 1e-12
    assert_close(r["elbo"], q.entropy(), rtol=1e-10, atol=1e-12)
    u = ev(_uniform(V, L))
    assert_close(u["elbo"], L * np.log(V), rtol=1e-10)
    w = ev(_random_tabular(q, seed))
    assert w["eps_learning"] >= 0 and w["elbo_gap"] >= 0
    assert_close(w["elbo"] - w["entropy"], w["elbo_gap"], rtol=1e-9, atol=1e-12)


def test_eps_learning_pinned_single_token():
    """L = 1: the only partial state with a mask is [M]; eps = KL(q || p) for t ~ U and any schedule.
    q = (0.5, 0.5), p = uniform over V = 2 except a tabular p = (0.8, 0.2): KL = 0.5 log(0.5/0.8) + 0.5 log(0.5/0.2)."""
    q = Joint(np.array([0.5, 0.5]), 2, 1)
    table = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.8, 0.2]]])  # states 0, 1, M
    p = TabularDenoiser(table, 2, 1)
    want = 0.5 * np.log(0.5 / 0.8) + 0.5 * np.log(0.5 / 0.2)
    for s in (schedules.linear(), schedules.cosine()):
        r = E.exact_evaluation(q, s)(p)
        assert_close(r["eps_learning"], want, rtol=1e-12)
        assert_close(r["elbo"], -0.5 * np.log(0.8) - 0.5 * np.log(0.2), rtol=1e-12)


# ---------------------------------------------------------------- the loss is unbiased for ELBO / L
def _beta_t(a):
    """Importance-sampled t ~ Beta(a, 1) (density a t^(a-1)), weight 1 / p(t)."""

    def sampler(key, batch):
        t = 1.0 - jax.random.uniform(key, (batch,), dtype=jnp.float32)
        t = t ** (1.0 / a)
        return t, (1.0 / (a * t ** (a - 1.0))).astype(jnp.float32)

    return sampler


def _mirror(schedule):
    """Antithetic pair (Jia2025's MIRROR): one uniform per token, masks {U < 1-alpha} and {U > alpha}."""

    def sampler(key, t, shape):
        p = (1.0 - schedule.alpha(t)).astype(jnp.float32)[:, None]
        u = jax.random.uniform(key, shape, dtype=jnp.float32)
        return jnp.stack([u < p, u > 1.0 - p])  # (2, B, L)

    return sampler


@pytest.mark.parametrize(
    "hooks",
    [
        "uniform-linear",
        pytest.param("uniform-cosine", marks=pytest.mark.slow),
        "beta-t",
        pytest.param("mirror", marks=pytest.mark.slow),
    ],
)  # mirror masks: tests/test_variance.py checks MIRROR and P-POTS+MIRROR against their exact moments
def test_mc_loss_matches_exact_elbo(hooks):
    """E[loss] = ELBO / L for every schedule, t-sampler and (marginally correct) mask sampler: 4 SE."""
    q = languages.random_markov(jax.random.PRNGKey(2), 3, 4).joint()
    den = init_denoiser("lowrank", 3, 4, key=KEY, rank=3)  # a non-trivial model
    exact = E.exact_evaluation(q)(den)["elbo_per_token"]
    sch = schedules.cosine() if hooks == "uniform-cosine" else schedules.linear()
    ts = _beta_t(2.0) if hooks == "beta-t" else E.uniform_t
    ms = _mirror(sch) if hooks == "mirror" else E.bernoulli_mask(sch)

    @jax.jit
    def losses(key):
        k1, k2, k3 = jax.random.split(key, 3)
        x = q.sample(k1, 20000).astype(jnp.int32)
        t, w = ts(k2, 20000)
        return E.per_example_loss(
            lambda z: jax.nn.log_softmax(network_logits(den.net, z), axis=-1), x, t, w, ms(k3, t, x.shape), sch, 3
        )

    v = np.concatenate([np.asarray(losses(jax.random.fold_in(KEY, i)), dtype=np.float64) for i in range(4)])
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert abs(v.mean() - exact) < 4 * se, (v.mean(), exact, se)


def test_mc_evaluation_agrees_with_exact():
    q = languages.random_markov(jax.random.PRNGKey(4), 3, 4).joint()
    den = _random_tabular(q, 1)
    ex = E.exact_evaluation(q)(den)
    tokens = q.sample(jax.random.PRNGKey(5), 40000)
    mc = E.mc_evaluation(tokens, key=jax.random.PRNGKey(6), vocab_size=3, reference=q.denoiser())(den)
    assert abs(mc["elbo"] - ex["elbo"]) < 4 * mc["elbo_se"]
    assert abs(mc["eps_learning"] - ex["eps_learning"]) < 4 * mc["eps_learning_se"]
