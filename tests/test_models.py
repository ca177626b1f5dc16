"""Learned denoisers (synthetic/models.py): the Denoiser protocol, plugging into the core samplers, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from synthetic import languages
from synthetic.models import LearnedDenoiser, ModelConfig, init_denoiser, init_network
from theory import policies
from theory.denoiser import Denoiser
from theory.metrics import empirical_law
from theory.sampling import exact_law, sample

from conftest import assert_close
from strategies import model_kinds, partial_state_batches

KEY = jax.random.PRNGKey(0)
SMALL = dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, rank=3)


def _model(kind, V=3, L=3, seed=0):
    return init_denoiser(kind, V, L, key=jax.random.PRNGKey(seed), **SMALL)


@pytest.mark.parametrize("kind", ["transformer", "tabular", "lowrank"])
def test_protocol_and_float32_parameters(kind):
    d = _model(kind)
    assert isinstance(d, Denoiser)
    leaves = jax.tree_util.tree_leaves(d.net)
    assert leaves and all(x.dtype == jnp.float32 for x in leaves)
    m = d.marginals(jnp.full((2, 3), 3))
    assert m.shape == (2, 3, 3) and m.dtype == jnp.float64


@settings(max_examples=3)
@given(kind=model_kinds, data=st.data())
def test_marginals_are_distributions_one_hot_at_visible(kind, data):
    V, L = 3, 3
    d = _model(kind, V, L)
    states = data.draw(partial_state_batches(V, L, batch=5))  # one batch shape: one compile
    m = np.asarray(d.marginals(jnp.asarray(states)))
    assert m.shape == states.shape + (V,) and m.dtype == np.float64
    assert np.all(m >= 0)
    assert_close(m.sum(-1), np.ones(states.shape), rtol=1e-12)
    vis = states != V
    assert_close(m[vis], np.eye(V)[states[vis]], rtol=0, atol=0)  # carry-over: exactly one-hot
    # a masked position's prediction is the softmax of the model's logits (never the mask: V entries)
    lg = np.asarray(d.logits(jnp.asarray(states)), dtype=np.float64)
    sm = np.exp(lg - lg.max(-1, keepdims=True))
    sm /= sm.sum(-1, keepdims=True)
    # float32 logits: the jitted and the eager network agree to float32 rounding only
    assert_close(m[~vis], sm[~vis], rtol=1e-5, atol=1e-7)


def test_tabular_starts_uniform_and_its_exact_law_is_uniform():
    """A zero-initialised tabular model is the uniform denoiser, whose sampler law is uniform on V**L."""
    V, L = 3, 3
    d = _model("tabular", V, L)
    q = languages.random_markov(KEY, V, L).joint()
    law = exact_law(q, policies.RandomOrder(), 2, denoiser=d)
    assert_close(np.asarray(law.probs), np.full(V**L, 1.0 / V**L), rtol=1e-12)


@pytest.mark.parametrize("which", ["exact", "learned"])
def test_exact_and_learned_plug_into_the_same_calls(which):
    """The same sample(...) and exact_law(..., denoiser=...) calls, no adapters; MC agrees with the exact law."""
    V, L = 3, 3
    q = languages.random_markov(jax.random.PRNGKey(3), V, L).joint()
    den = q.denoiser() if which == "exact" else _model("transformer", V, L, seed=5)
    for pol in (policies.TopK("confidence"),):  # a policy that reads the marginals
        law = exact_law(q, pol, 2, denoiser=den)
        s = sample(jax.random.PRNGKey(7), den, pol, 2, num=3000)
        assert s.tokens.shape == (3000, L)
        emp = empirical_law(s.tokens, V) * 3000
        p = np.asarray(law.probs)
        keep = p * 3000 >= 5  # chi-square validity; pool the rest
        obs = np.append(emp[keep], emp[~keep].sum())
        exp = np.append(p[keep], p[~keep].sum()) * 3000
        obs, exp = obs[exp > 0], exp[exp > 0]
        assert stats.chisquare(obs, exp).pvalue > 1e-4  # fixed key; level 1e-4


def test_learned_denoiser_under_jit_and_vmap():
    d = _model("transformer")
    f = jax.jit(d.marginals)
    s = jnp.array([[3, 0, 3], [1, 3, 2]])
    assert_close(np.asarray(f(s)), np.asarray(d.marginals(s)), rtol=1e-12)


def test_bad_inputs_raise_clear_errors():
    d = _model("transformer", 3, 3)
    with pytest.raises(ValueError, match="shape"):
        d.marginals(jnp.zeros((2, 4), jnp.int32))  # wrong length
    with pytest.raises(ValueError, match="entries in 0..3"):
        d.marginals(jnp.array([[0, 4, 1]]))  # token of another vocabulary
    with pytest.raises(ValueError, match="entries in 0..3"):
        d.marginals(jnp.array([[0, -1, 1]]))
    with pytest.raises(TypeError, match="integers"):
        d.marginals(jnp.zeros((1, 3), jnp.float32))
    with pytest.raises(ValueError, match="kind"):
        ModelConfig("mlp", 3, 3)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig("transformer", 3, 3, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig("transformer", 1, 3)
    with pytest.raises(ValueError, match="transformer"):
        init_network(ModelConfig("tabular", 8, 12), KEY)  # (V+1)**L * L * V floats: too big
    with pytest.raises(TypeError, match="ModelConfig"):
        LearnedDenoiser(d.net, {"kind": "transformer"})


def test_marginals_refuse_32bit_mode():
    d = _model("transformer")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(TypeError, match="float64"):
            d.marginals(jnp.array([[3, 3, 3]]))
    finally:
        jax.config.update("jax_enable_x64", True)
