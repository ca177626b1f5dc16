"""Issue 14, target 4: the Markov oracle's ranked face on the host (numba, :mod:`synthetic.chain_host`).

* its scores (all of them, for the sampler's fallback step, and the candidates') are the JAX ``scores``
  face's bits, for every proxy, and its K candidates are the first K of the
  full order by (score, position) (``argsort(..., stable=True)``), with and without the per-run score table
  (some pairs of factor rows in it, some not), on dense, sparse, absorbing and deterministic chains with
  impossible states and rows with fewer than K masked positions; the face is compiled with the sampler's
  options at LLVM level 3 (where XLA could fuse a multiply-add);
* the sampler's ranked path through it gives the tokens of the ranked path through the JAX face and of the
  general path;
* bad input gets a clear error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import chain_host, languages
from theory import policies, rng, sampling

from strategies import chain_partial_states, markov_chains, seeds

pytestmark = pytest.mark.skipif(not chain_host.available(), reason="numba is not installed")


_FACES: dict = {}


def _face(proxy: str):
    """The JAX scores face, compiled with the Monte-Carlo loops' options at LLVM level 3 (the test process
    compiles at 0, where no multiply-add is fused); one compilation per proxy and shape (traced denoiser)."""
    if proxy not in _FACES:
        opts = {**sampling.loop_compiler_options(), "xla_backend_optimization_level": 3}
        _FACES[proxy] = jax.jit(lambda d, x: d.scores(x, proxy), compiler_options=opts)
    return _FACES[proxy]


def _check_host_against_face(lang, states, K: int, table_rows: int):
    d = lang.denoiser()
    V = lang.vocab_size
    masked = states == V
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain_host, "TABLE_ROWS", table_rows)
        for proxy in policies.PROXIES:
            with d.rank_session(proxy) as key:
                cpos, cscore, full = chain_host.session_step(states, key, not d.positive, K, full=True)
            face = np.where(masked, np.asarray(_face(proxy)(d, jnp.asarray(states))), np.inf)
            np.testing.assert_array_equal(full.view(np.uint64), face.view(np.uint64), err_msg=proxy)
            order = np.argsort(face, axis=1, kind="stable")[:, :K]  # ties by position
            np.testing.assert_array_equal(cpos, order, err_msg=proxy)
            want = np.take_along_axis(face, order, axis=1)
            np.testing.assert_array_equal(cscore.view(np.uint64), want.view(np.uint64), err_msg=proxy)


@given(lang=markov_chains(), seed=seeds, data=st.data())
@settings(max_examples=6, deadline=None)
def test_host_candidates_are_the_face_order_bit_for_bit(lang, seed, data):
    """K drawn from 1..L (rows with fewer masked positions than K take the visible ones by position, as the full
    sort does); the score table holds every distinct pair of factor rows, or only the first 1 or 3 of each
    (then most positions are computed plane by plane, as the face)."""
    states = chain_partial_states(lang, seed, 24, data.draw(st.sampled_from([0.3, 0.6, 0.95])))
    K = data.draw(st.integers(1, lang.length))
    _check_host_against_face(lang, states, K, data.draw(st.sampled_from([1, 3, chain_host.TABLE_ROWS])))


@pytest.mark.slow  # new shapes: new compilations of the face
@pytest.mark.parametrize("V,L", [(2, 5), (8, 64), (16, 33)])
@given(seed=seeds, data=st.data())
@settings(max_examples=4, deadline=None)
def test_host_candidates_are_the_face_order_other_shapes(V, L, seed, data):
    lang = data.draw(markov_chains(V, L))
    states = chain_partial_states(lang, seed, 16, data.draw(st.sampled_from([0.3, 0.6, 1.0])))
    _check_host_against_face(lang, states, data.draw(st.integers(1, L)), data.draw(st.sampled_from([2, 1024])))


def _three_paths(lang, policy, seed, steps=6):
    d = lang.denoiser()
    key = jax.random.PRNGKey(seed)
    with pytest.MonkeyPatch.context() as mp:
        assert sampling.host_ranked(d, policy)
        host = sample_tokens(key, d, policy, steps, "ranked")
        mp.setattr(sampling, "HOST_RANK", False)
        face = sample_tokens(key, d, policy, steps, "ranked")
    general = sample_tokens(key, d, policy, steps, "general")
    np.testing.assert_array_equal(host, face)
    np.testing.assert_array_equal(host, general)


def sample_tokens(key, d, policy, steps, path):
    s = sampling.sample(key, d, policy, steps, num=16, path=path)
    return np.concatenate([np.asarray(s.tokens), np.asarray(s.nfe)[:, None]], axis=1)


@pytest.mark.slow  # three loop compilations per policy structure; by default, test_sampling_speed_paths checks the
# ranked path (through the host where numba is installed) against the general path
@given(
    lang=markov_chains(),
    seed=seeds,
    policy=st.sampled_from([policies.TopK("confidence"), policies.TopK("margin", 2), policies.EntropyBounded(0.2)]),
    steps=st.sampled_from([1, 4, 37]),
)
@settings(max_examples=8, deadline=None)
def test_ranked_path_through_the_host_gives_the_same_tokens(lang, seed, policy, steps):
    """The ranked path through the host face, through the JAX face and the general path draw the same tokens
    and NFE: Top-k by confidence and by margin, EB."""
    _three_paths(lang, policy, seed, steps)


def test_bad_input_gets_a_clear_error():
    lang = languages.random_markov(jax.random.PRNGKey(0), 3, 6)
    d = lang.denoiser()
    states = np.full((2, 6), 3, np.int32)
    with pytest.raises(ValueError, match="unknown proxy"):
        chain_host.rank_step(states, d.left, d.right, True, "surprise", 2)
    with pytest.raises(ValueError, match="K must be in 1..L"):
        chain_host.rank_step(states, d.left, d.right, True, "entropy", 7)
    with pytest.raises(ValueError, match="do not fit states of length"):
        chain_host.rank_step(states[:, :5], d.left, d.right, True, "entropy", 2)
    with pytest.raises(ValueError, match="states must hold tokens"):
        chain_host.rank_step(states + 1, d.left, d.right, True, "entropy", 2)
    with pytest.raises(RuntimeError, match="no open chain_host session"):
        chain_host.session_step(states, 10**9, True, 2)
    with d.rank_session("entropy") as key:
        pass
    with pytest.raises(RuntimeError, match="no open chain_host session"):  # closed with its `with`
        chain_host.session_step(states, key, True, 2)


@given(lang=markov_chains(), seed=seeds)
@settings(max_examples=1, deadline=None)
def test_fallback_steps_through_the_host_give_the_same_tokens(lang, seed):
    """With one candidate (K = 1) EB's cut is never settled among the candidates while two or more positions are
    masked: those steps ask the host step for every score and take the full sort; the tokens and NFE are still
    the general path's."""
    from theory.sampling import MODES, _plan_rows, _run_ranked, make_plan

    d, pol = lang.denoiser(), policies.EntropyBounded(0.05)
    plan = make_plan(pol, lang.length)
    step_ids, values, rows = _plan_rows(plan, lang.length)
    keys = rng.fold_in(jax.random.PRNGKey(seed), jnp.arange(16))
    run = jax.jit(_run_ranked, static_argnames=("widths", "cands", "stats"))
    with d.rank_session(pol.proxy) as key:
        toks, nfe, steps, falls = run(keys, step_ids, values, rows, d, pol, jnp.int32(MODES[plan.mode]),
                                      widths=(lang.length,), cands=1, stats=True, session=jnp.int32(key))  # fmt: skip
        toks, nfe = np.asarray(toks), np.asarray(nfe)
    assert 0 < int(falls) <= int(steps)
    ref = sampling.sample(jax.random.PRNGKey(seed), d, pol, num=16, path="general")
    np.testing.assert_array_equal(toks, np.asarray(ref.tokens))
    np.testing.assert_array_equal(nfe, np.asarray(ref.nfe))
