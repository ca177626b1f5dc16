"""Training and evaluation of learned denoisers (synthetic/train.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conftest import assert_close
from strategies import seeds
from synthetic import languages
from synthetic import train as T
from synthetic.models import init_denoiser
from theory import schedules
from theory.denoiser import FunctionDenoiser, TabularDenoiser, exact_denoiser
from theory.joint import Joint

KEY = jax.random.PRNGKey(0)
SMALL = dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, rank=3)


def _uniform(V, L):
    return FunctionDenoiser(lambda s: jnp.full(s.shape + (V,), 1.0 / V), V, L)


def _random_tabular(joint, seed):
    """A random (wrong) denoiser: Dirichlet conditionals for every partial state."""
    V, L = joint.vocab_size, joint.length
    t = np.random.default_rng(seed).dirichlet(np.ones(V), size=((V + 1) ** L, L))
    return TabularDenoiser(t, V, L)


# ---------------------------------------------------------------- closed forms of the weights
def test_forward_weights_linear_closed_form():
    """Linear alpha: int_0^1 (1-t)^(L-m) t^m dt = B(L-m+1, m+1) = (L-m)! m! / (L+1)!."""
    for L in (1, 4, 9):
        want = [math.factorial(L - m) * math.factorial(m) / math.factorial(L + 1) for m in range(L + 1)]
        assert_close(T.forward_weights(schedules.linear(), L), np.array(want), rtol=1e-12)


def test_elbo_weights_sum_to_one_prediction_per_position():
    """sum_m binom(L, m) * m * w_elbo(m) = L: the ELBO predicts each of the L tokens once (any order)."""
    for L in (1, 3, 10):
        w = T.elbo_weights(L)
        assert abs(sum(math.comb(L, m) * m * w[m] for m in range(L + 1)) - L) < 1e-12


def test_forward_weights_cosine_integrate_to_one():
    """sum_m binom(L, m) w_fwd(m) = int_0^1 (alpha + 1 - alpha)^L dt = 1 for any schedule."""
    for s in (schedules.cosine(), schedules.polynomial(2.0), schedules.geometric()):
        w = T.forward_weights(s, 5)
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
    ev = T.exact_evaluation(q)
    V, L = q.vocab_size, q.length
    r = ev(exact_denoiser(q))
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
        r = T.exact_evaluation(q, s)(p)
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


@pytest.mark.parametrize("hooks", ["uniform-linear", "uniform-cosine", "beta-t", "mirror"])
def test_mc_loss_matches_exact_elbo(hooks):
    """E[loss] = ELBO / L for every schedule, t-sampler and (marginally correct) mask sampler: 4 SE."""
    q = languages.random_markov(jax.random.PRNGKey(2), 3, 4).joint()
    den = init_denoiser("lowrank", 3, 4, key=KEY, rank=3)  # a non-trivial model
    exact = T.exact_evaluation(q)(den)["elbo_per_token"]
    sch = schedules.cosine() if hooks == "uniform-cosine" else schedules.linear()
    ts = _beta_t(2.0) if hooks == "beta-t" else T.uniform_t
    ms = _mirror(sch) if hooks == "mirror" else T.bernoulli_mask(sch)

    @jax.jit
    def losses(key):
        k1, k2, k3 = jax.random.split(key, 3)
        x = q.sample(k1, 20000).astype(jnp.int32)
        t, w = ts(k2, 20000)
        return T.per_example_loss(den.net, x, t, w, ms(k3, t, x.shape), sch, 3)

    v = np.concatenate([np.asarray(losses(jax.random.fold_in(KEY, i)), dtype=np.float64) for i in range(4)])
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert abs(v.mean() - exact) < 4 * se, (v.mean(), exact, se)


def test_mc_evaluation_agrees_with_exact():
    q = languages.random_markov(jax.random.PRNGKey(4), 3, 4).joint()
    den = _random_tabular(q, 1)
    ex = T.exact_evaluation(q)(den)
    tokens = q.sample(jax.random.PRNGKey(5), 40000)
    mc = T.mc_evaluation(tokens, key=jax.random.PRNGKey(6), vocab_size=3, reference=exact_denoiser(q))(den)
    assert abs(mc["elbo"] - ex["elbo"]) < 4 * mc["elbo_se"]
    assert abs(mc["eps_learning"] - ex["eps_learning"]) < 4 * mc["eps_learning_se"]


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def markov_q():
    return languages.random_markov(KEY, 3, 4).joint()


@pytest.fixture(scope="module")
def trained(markov_q):
    return T.fit_denoiser(markov_q, key=jax.random.PRNGKey(1), steps=200, model="transformer", eval_every=40,
                          progress=False)


def test_short_training_beats_uniform_and_eps_falls(markov_q, trained):
    """200 steps of the default transformer (seconds): the ELBO gap to H(q) is below 1/4 of the uniform
    denoiser's (uniform: L log V - H(q)), and the exactly measured eps_learning falls during training
    (final < 1/4 of the initial and of the uniform denoiser's; later evaluations lower than earlier ones)."""
    den, hist = trained
    ev = T.exact_evaluation(markov_q)
    uni = ev(_uniform(3, 4))
    final = ev(den)
    assert final["elbo_gap"] < 0.25 * uni["elbo_gap"], (final, uni)
    assert final["elbo_per_token"] < np.log(3) - 0.75 * (np.log(3) - markov_q.entropy() / 4)
    eps = hist["eps_learning"].to_numpy()
    assert eps[-1] < 0.25 * eps[0] and eps[-1] < uni["eps_learning"] / 4
    assert stats.spearmanr(hist["step"], eps).statistic < -0.8
    assert eps[len(eps) // 2:].mean() < eps[1:len(eps) // 2].mean()
    assert_close(hist["eps_learning"].iloc[-1], final["eps_learning"], rtol=1e-12)


def test_same_seed_same_parameters_and_checkpoint_roundtrip(markov_q, trained, tmp_path):
    a, ha = T.fit_denoiser(markov_q, key=jax.random.PRNGKey(3), steps=15, model="tabular", evaluation="none",
                           progress=False)
    b, hb = T.fit_denoiser(markov_q, key=jax.random.PRNGKey(3), steps=15, model="tabular", evaluation="none",
                           progress=False)
    c, _ = T.fit_denoiser(markov_q, key=jax.random.PRNGKey(4), steps=15, model="tabular", evaluation="none",
                           progress=False)
    la, lb, lc = (jax.tree_util.tree_leaves(d.net) for d in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb))
    assert not all(np.array_equal(x, y) for x, y in zip(la, lc))
    # save -> load is bit-exact (parameters, dtypes, marginals, history)
    den, hist = trained
    path = T.save_checkpoint(tmp_path / "m.npz", den, hist, {"note": "x"})
    den2, hist2, meta = T.load_checkpoint(path)
    l1, l2 = jax.tree_util.tree_leaves(den.net), jax.tree_util.tree_leaves(den2.net)
    assert len(l1) == len(l2)
    for x, y in zip(l1, l2):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.asarray(x).view(np.uint32), np.asarray(y).view(np.uint32))
    s = jnp.asarray(np.array([[3, 3, 3, 3], [0, 3, 2, 3]]))
    assert np.array_equal(np.asarray(den.marginals(s)), np.asarray(den2.marginals(s)))
    assert hist2.equals(hist) and meta == {"note": "x"} and den2.config == den.config


def test_train_or_load(markov_q, tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "tab.npz"
    a, ha = T.train_or_load(path, markov_q, key=KEY, model="tabular", steps=10, progress=False)
    monkeypatch.setattr(T, "fit_denoiser", lambda *a, **k: pytest.fail("should have loaded the checkpoint"))
    b, hb = T.train_or_load(path, markov_q, key=KEY, model="tabular", steps=10, progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a.net), jax.tree_util.tree_leaves(b.net)))
    assert hb.equals(ha)
    with pytest.raises(ValueError, match="retrain=True"):
        T.train_or_load(path, markov_q, key=KEY, model="lowrank")
    other = languages.random_markov(KEY, 2, 4).joint()
    with pytest.raises(ValueError, match="retrain=True"):
        T.train_or_load(path, other, key=KEY, model="tabular")


def test_language_source_and_mc_evaluation():
    """A structured language trains directly; evaluation='mc' reports eps_learning with a standard error."""
    lang = languages.random_markov(jax.random.PRNGKey(9), 2, 3)
    den, hist = T.fit_denoiser(lang, key=KEY, steps=20, model="tabular", evaluation="mc", eval_num=500,
                               eval_every=10, progress=False)
    assert {"eps_learning", "eps_learning_se", "elbo", "elbo_se"} <= set(hist.columns)
    assert np.all(np.isfinite(hist["eps_learning_se"])) and den.length == 3
    fn, V, L = T.data_sampler(lang, length=5)  # a language is re-sized with length=
    assert (V, L) == (2, 5) and fn(KEY, 7).shape == (7, 5)


def test_bad_inputs_raise_clear_errors(markov_q, tmp_path):
    with pytest.raises(ValueError, match="model must be"):
        T.fit_denoiser(markov_q, key=KEY, model="rnn")
    with pytest.raises(ValueError, match="length"):
        T.fit_denoiser(markov_q, key=KEY, length=5)
    d = init_denoiser("tabular", 2, 4, key=KEY)
    with pytest.raises(ValueError, match="vocab_size, length"):
        T.train(d, markov_q, key=KEY, steps=1)
    with pytest.raises(TypeError, match="Joint"):
        T.fit_denoiser(np.zeros(81), key=KEY)
    ev = T.exact_evaluation(markov_q)
    with pytest.raises(ValueError, match="vocab_size"):
        ev(d)
    class F32:
        vocab_size, length = 3, 4

        def marginals(self, s):
            return jnp.full(s.shape + (3,), 1 / 3, dtype=jnp.float32)

    f32 = F32()
    with pytest.raises(TypeError, match="float64"):
        ev(f32)
    with pytest.raises(ValueError, match="tokens"):
        T.mc_evaluation(np.full((10, 4), 3), key=KEY, vocab_size=3)
    with pytest.raises(ValueError, match=".npz"):
        T.save_checkpoint(tmp_path / "m.pt", init_denoiser("tabular", 3, 4, key=KEY))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an mdm-theory"):
        T.load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="steps"):
        T.train(init_denoiser("tabular", 3, 4, key=KEY), markov_q, key=KEY, steps=-1)


def test_fallback_markov_sampler_law():
    """The ancestral MarkovChain sampler (used when synthetic.markov is absent) draws from lang.joint():
    chi-square at level 1e-4 on a fixed key."""
    from theory.metrics import empirical_law

    lang = languages.random_markov(jax.random.PRNGKey(11), 3, 3)
    x = T._sample_markov_chain(jnp.asarray(lang.init), jnp.asarray(lang.trans), 3, jax.random.PRNGKey(12), 20000)
    assert x.shape == (20000, 3)
    obs = empirical_law(np.asarray(x), 3) * 20000
    exp = np.asarray(lang.joint().probs) * 20000
    keep = exp > 0
    assert stats.chisquare(obs[keep], exp[keep]).pvalue > 1e-4
