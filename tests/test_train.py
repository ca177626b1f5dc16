"""Training learned denoisers (synthetic/train.py): the loop, seeds, checkpoints, data from any Language."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from synthetic import languages
from synthetic import train as T
from synthetic.models import init_denoiser
from theory import elbo as E
from theory.denoiser import FunctionDenoiser

from conftest import assert_close

KEY = jax.random.PRNGKey(0)
SMALL = dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, rank=3)


def _uniform(V, L):
    return FunctionDenoiser(lambda s: jnp.full(s.shape + (V,), 1.0 / V), V, L)


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def markov_q():
    return languages.random_markov(KEY, 3, 4).joint()


@pytest.fixture(scope="module")
def trained(markov_q):
    return T.fit_denoiser(
        markov_q, key=jax.random.PRNGKey(1), steps=120, model="transformer", eval_every=40, progress=False
    )


def test_short_training_beats_uniform_and_eps_falls(markov_q, trained):
    """120 steps of the default transformer (seconds): the ELBO gap to H(q) is below 1/4 of the uniform
    denoiser's (uniform: L log V - H(q)), and the exactly measured eps_learning falls during training
    (final < 1/4 of the initial and of the uniform denoiser's; later evaluations lower than earlier ones)."""
    den, hist = trained
    ev = E.exact_evaluation(markov_q)
    uni = ev(_uniform(3, 4))
    final = ev(den)
    assert final["elbo_gap"] < 0.25 * uni["elbo_gap"], (final, uni)
    assert final["elbo_per_token"] < np.log(3) - 0.75 * (np.log(3) - markov_q.entropy() / 4)
    eps = hist["eps_learning"].to_numpy()
    assert eps[-1] < 0.25 * eps[0] and eps[-1] < uni["eps_learning"] / 4
    assert stats.spearmanr(hist["step"], eps).statistic < -0.8
    assert eps[len(eps) // 2 :].mean() < eps[1 : len(eps) // 2].mean()
    assert_close(hist["eps_learning"].iloc[-1], final["eps_learning"], rtol=1e-12)


def test_same_seed_same_parameters_and_checkpoint_roundtrip(markov_q, trained, tmp_path):
    a, ha = T.fit_denoiser(
        markov_q, key=jax.random.PRNGKey(3), steps=15, model="tabular", evaluation="none", progress=False
    )
    b, hb = T.fit_denoiser(
        markov_q, key=jax.random.PRNGKey(3), steps=15, model="tabular", evaluation="none", progress=False
    )
    c, _ = T.fit_denoiser(
        markov_q, key=jax.random.PRNGKey(4), steps=15, model="tabular", evaluation="none", progress=False
    )
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


@pytest.mark.slow  # ~6.5 s of compiles; the MC evaluation is checked by default in tests/test_elbo.py
def test_language_source_and_mc_evaluation():
    """A structured language trains directly; evaluation='mc' reports eps_learning with a standard error."""
    lang = languages.random_markov(jax.random.PRNGKey(9), 2, 3)
    den, hist = T.fit_denoiser(
        lang, key=KEY, steps=20, model="tabular", evaluation="mc", eval_num=500, eval_every=10, progress=False
    )
    assert {"eps_learning", "eps_learning_se", "elbo", "elbo_se"} <= set(hist.columns)
    assert np.all(np.isfinite(hist["eps_learning_se"])) and den.length == 3
    den5, _ = T.fit_denoiser(lang, key=KEY, length=5, steps=2, model="tabular", evaluation="none", progress=False)
    assert den5.length == 5  # a Resizable language is re-sized with length=


def test_bad_inputs_raise_clear_errors(markov_q, tmp_path):
    with pytest.raises(ValueError, match="model must be"):
        T.fit_denoiser(markov_q, key=KEY, model="rnn")
    with pytest.raises(ValueError, match="length"):
        T.fit_denoiser(markov_q, key=KEY, length=5)
    d = init_denoiser("tabular", 2, 4, key=KEY)
    with pytest.raises(ValueError, match="vocab_size, length"):
        T.train(d, markov_q, key=KEY, steps=1)
    with pytest.raises(TypeError, match="theory.language.Language"):
        T.fit_denoiser(np.zeros(81), key=KEY)
    ev = E.exact_evaluation(markov_q)
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
        E.mc_evaluation(np.full((10, 4), 3), key=KEY, vocab_size=3)
    with pytest.raises(ValueError, match=".npz"):
        T.save_checkpoint(tmp_path / "m.pt", init_denoiser("tabular", 3, 4, key=KEY))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an mdm-theory"):
        T.load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="steps"):
        T.train(init_denoiser("tabular", 3, 4, key=KEY), markov_q, key=KEY, steps=-1)
