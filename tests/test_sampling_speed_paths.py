"""Issue 14, target 4: the Monte-Carlo sampler's fast paths give the same tokens as the simple paths they replace.

* the ranked path (TopK, EntropyBounded with the entropy proxy: one integer sort per row, reveal set by a
  threshold, values drawn only at the revealed positions) against the general path (``path="general"``:
  the policy's ``select`` with its float64 argsort, values drawn at every position) — bit for bit, tokens
  and NFE, on adversarial tables (sparse supports, constraints, near-deterministic) and sparse-row chains;
* its pieces against their references: ``sort_keys`` orders floats as ``lax.sort`` does (-0.0 = 0.0, NaN
  last), ``lowest_by_score`` is ``reveal_by_score`` (ties by position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import languages
from theory import policies
from theory.sampling import is_ranked, sample

from strategies import ADVERSARIAL_KINDS, SMOOTH_KINDS, _sparsify, joint_of_kind, joints, kind_params, seeds

V0, L0 = 3, 5  # one shape for the default draws: every example reuses the compiled loops


@st.composite
def fixed_shape_joints(draw):
    """Joints of the `joints` strategy's kinds (adversarial as often as smooth) at the fixed (V0, L0)."""
    kinds = draw(st.sampled_from([SMOOTH_KINDS, ADVERSARIAL_KINDS]))
    kind = draw(st.sampled_from(list(kinds)))
    return joint_of_kind(kind, V0, L0, draw(seeds), **kind_params(draw, kind, L0, (0.05, 0.3, 1.0, 10.0)))


ranked_policies = st.one_of(
    st.builds(policies.TopK, st.sampled_from(list(policies.PROXIES))),
    st.builds(policies.TopK, st.just("confidence"), st.integers(1, 3)),
    st.builds(policies.EntropyBounded, st.sampled_from([0.0, 0.05, 0.7, float("inf")])),
)
#: default draws: two pytree structures (TopK's k and EB's gamma are traced), so four compiled loops in all
default_policies = st.one_of(
    st.just(policies.TopK("confidence")),
    st.builds(policies.EntropyBounded, st.sampled_from([0.0, 0.05, 0.7, float("inf")])),
)


def _same(den, policy, steps, key, num=64, reveal="fixed"):
    fast = sample(key, den, policy, steps, num=num, reveal=reveal, path="ranked")
    ref = sample(key, den, policy, steps, num=num, reveal=reveal, path="general")
    np.testing.assert_array_equal(np.asarray(fast.tokens), np.asarray(ref.tokens), err_msg=str(policy))
    np.testing.assert_array_equal(np.asarray(fast.nfe), np.asarray(ref.nfe), err_msg=str(policy))


def _check_ranked_equals_general(q, policy, steps, reveal, seed):
    assert is_ranked(policy)
    _same(q.denoiser(), policy, steps, jax.random.PRNGKey(seed), reveal=reveal)


@given(q=fixed_shape_joints(), policy=default_policies, steps=st.integers(1, L0),
       reveal=st.sampled_from(["fixed", "bernoulli"]), seed=seeds)  # fmt: skip
@settings(max_examples=4)
def test_ranked_path_equals_general_path(q, policy, steps, reveal, seed):
    _check_ranked_equals_general(q, policy, steps, reveal, seed)


@pytest.mark.slow  # every example a new (V, L) or policy structure: new compilations
@given(q=joints(), policy=ranked_policies, steps=st.integers(1, 6), reveal=st.sampled_from(["fixed", "bernoulli"]),
       seed=seeds)  # fmt: skip
@settings(max_examples=40)
def test_ranked_path_equals_general_path_slow(q, policy, steps, reveal, seed):
    """Slow twin: every (V, L) of the `joints` strategy (each a new compilation)."""
    _check_ranked_equals_general(q, policy, min(steps, q.length), reveal, seed)


def _sparse_chain(seed, V=4, L=24):
    rng = np.random.default_rng(seed)
    init = _sparsify(rng, rng.dirichlet(np.ones(V)))
    trans = _sparsify(rng, rng.dirichlet(np.full(V, 0.3), size=V), keep_prob=0.4)
    return languages.MarkovChain(init, trans, L)


@pytest.mark.slow  # L = 24: its own compilations (~5 s)
@pytest.mark.parametrize("policy", [policies.TopK("margin"), policies.EntropyBounded(0.3)], ids=str)
def test_ranked_path_on_sparse_row_chain(policy):
    """A Markov chain with zero transitions (impossible states occur mid-run; near-ties of the scores are
    everywhere far from visible tokens): the same tokens as the general path."""
    _same(_sparse_chain(7).denoiser(), policy, 6, jax.random.PRNGKey(3), num=32)


# ---- the pieces -----------------------------------------------------------------------------------------
SPECIAL = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e308, 0.1, 0.1 + 2**-56]
floats_row = st.lists(st.sampled_from(SPECIAL) | st.floats(allow_nan=True, allow_infinity=True), min_size=16,
                      max_size=16)  # fmt: skip


@jax.jit
def _orders(x):
    ref = jnp.argsort(x, axis=1, stable=True)
    keys = policies.sort_keys(x)
    fast = jnp.argsort(keys, axis=1, stable=True)
    back = policies.from_sort_keys(jax.lax.sort(keys, dimension=1))
    want = jax.lax.sort(jnp.where(x == 0, 0.0, x), dimension=1)  # XLA's zero test (denormals may count as 0)
    return ref, fast, back, want


@given(rows=st.lists(floats_row, min_size=8, max_size=8))
@settings(max_examples=20)
def test_sort_keys_order_floats_like_lax_sort(rows):
    x = jnp.asarray(np.array(rows, dtype=np.float64))
    ref, fast, back, want = _orders(x)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(ref))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(want))  # the inverse (NaN last, -0.0 as 0.0)


@jax.jit
def _selects(score, masked, count):
    ref = jax.vmap(policies.reveal_by_score)(score, masked, count)
    s = jnp.where(masked, score, jnp.inf)
    keys = policies.sort_keys(s)
    fast = masked & jax.vmap(policies.lowest_by_score)(keys, jax.lax.sort(keys, dimension=1), count)
    return ref, fast


@given(data=st.data())
@settings(max_examples=20)
def test_lowest_by_score_is_reveal_by_score(data):
    """Scores from a small set (many ties, incl. -0.0 against 0.0 and inf), random masks, counts 0..L+2."""
    B, L = 8, 16
    vals = st.sampled_from([0.0, -0.0, 0.5, -0.5, 0.5 + 2**-53, np.inf, -1.0])
    score = np.array(data.draw(st.lists(st.lists(vals, min_size=L, max_size=L), min_size=B, max_size=B)))
    masked = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=L, max_size=L), min_size=B, max_size=B)))
    count = np.array(data.draw(st.lists(st.integers(0, L + 2), min_size=B, max_size=B)), dtype=np.int32)
    ref, fast = _selects(jnp.asarray(score), jnp.asarray(masked), jnp.asarray(count))
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(ref))


def test_path_argument():
    """``path`` insists on a path or says what applies; EB with a non-entropy proxy is not ranked."""
    q = joint_of_kind("uniform", 2, 3, 0)
    d = q.denoiser()
    with pytest.raises(ValueError, match="path must be"):
        sample(jax.random.PRNGKey(0), d, policies.TopK(), 2, num=4, path="fast")
    with pytest.raises(ValueError, match="static order"):
        sample(jax.random.PRNGKey(0), d, policies.TopK(), 2, num=4, path="ordered")
    with pytest.raises(ValueError, match="ranked"):
        sample(jax.random.PRNGKey(0), d, policies.RandomOrder(), 2, num=4, path="ranked")
    assert not is_ranked(policies.EntropyBounded(1.0, "margin"))
    assert is_ranked(policies.EntropyBounded(1.0)) and is_ranked(policies.TopK("entropy", k=2))
    assert not is_ranked(policies.LeftToRight()) and not is_ranked(policies.RandomOrder())
