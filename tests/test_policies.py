"""Reveal policies: select (JAX) and reveal_distribution (exact) describe the same rule."""

from math import comb

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import policies


def _state_and_marg(draw, V, L):
    z = np.array(draw(st.lists(st.integers(0, V), min_size=L, max_size=L)))
    raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=L * V, max_size=L * V))).reshape(L, V)
    m = raw / raw.sum(1, keepdims=True)
    m[z < V] = np.eye(V)[z[z < V]]
    return z, m


@settings(max_examples=2)  # every (V, L) compiles its own shapes (eager dispatch, ~0.6 s per draw)
@given(st.integers(2, 4), st.integers(1, 7), st.data())
def test_score_policies_reveal_lowest_scores(V, L, data):
    z, m = _state_and_marg(data.draw, V, L)
    k = int((z == V).sum())
    c = data.draw(st.integers(0, L))
    for pol in (
        policies.LeftToRight(),
        policies.TopK("confidence"),
        policies.TopK("entropy"),
        policies.TopK("margin"),
        policies.FixedOrder(tuple(data.draw(st.permutations(range(L))))),
    ):
        sel = np.asarray(pol.select(jax.random.PRNGKey(0), jnp.asarray(z), jnp.asarray(m), c))
        assert sel.sum() == min(c, k) and not np.any(sel & (z != V))
        score = np.asarray(pol.score(jnp.asarray(z), jnp.asarray(m)))
        masked = np.nonzero(z == V)[0]
        order = masked[np.lexsort((masked, score[masked]))]  # by score, ties by position
        assert set(np.nonzero(sel)[0]) == set(order[: min(c, k)])


@given(st.integers(2, 3), st.integers(1, 6), st.data())
def test_random_order_distribution_is_uniform(V, L, data):
    zs, ms, cs = [], [], []
    for _ in range(data.draw(st.integers(1, 4))):
        z, m = _state_and_marg(data.draw, V, L)
        zs.append(z), ms.append(m), cs.append(data.draw(st.integers(0, L)))
    zs, ms, cs = np.array(zs), np.array(ms), np.array(cs)
    parent, subsets, w = policies.RandomOrder().reveal_distribution(zs, ms, cs)
    for b in range(len(zs)):
        rows = parent == b
        k = int((zs[b] == V).sum())
        c = min(cs[b], k)
        assert rows.sum() == comb(k, c)
        assert np.allclose(w[rows], 1 / comb(k, c)) and abs(w[rows].sum() - 1) < 1e-12
        assert np.all(subsets[rows].sum(1) == c) and not np.any(subsets[rows] & (zs[b] != V))
        assert len({tuple(s) for s in subsets[rows]}) == comb(k, c)


def test_topk_fixed_k_is_adaptive():
    p = policies.TopK("confidence", k=2)
    assert not p.uses_count
    z = jnp.array([3, 3, 3, 0])
    m = jnp.array([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [1.0, 0, 0]])
    sel = np.asarray(p.select(jax.random.PRNGKey(0), z, m, 0))
    assert sel.tolist() == [False, True, True, False]


def test_proxies_by_hand():
    m = jnp.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1], [0.6, 0.4, 0.0]])
    assert np.allclose(policies.proxy_score(m, "confidence"), [-0.5, -0.7, -0.6])
    assert np.allclose(policies.proxy_score(m, "margin"), [0.0, -0.5, -0.2])
    assert np.allclose(policies.proxy_score(m, "entropy")[0], np.log(2))


def test_policy_bad_input():
    with pytest.raises(ValueError, match="permutation"):
        policies.FixedOrder((0, 0, 1))
    with pytest.raises(ValueError, match="proxy"):
        policies.TopK("perplexity")
    with pytest.raises(ValueError, match="positive int"):
        policies.TopK("entropy", k=0)


def test_policies_and_schedules_hash_by_value_and_share_compilations():
    """Equal policies/schedules are equal and hash alike; EntropyBounded's gamma is a traced leaf, so the
    Monte-Carlo sampler compiles once for every gamma."""
    import jax

    from theory import schedules
    from theory.joint import Joint
    from theory.sampling import _jitted, sample

    assert policies.EntropyBounded(0.5) == policies.EntropyBounded(0.5)
    assert hash(policies.TopK("margin", k=2)) == hash(policies.TopK("margin", k=2))
    assert policies.EntropyBounded(0.5) != policies.EntropyBounded(0.25)
    assert schedules.linear() == schedules.linear() and hash(schedules.cosine()) == hash(schedules.cosine())
    assert schedules.polynomial(2.0) != schedules.polynomial(3.0)
    f = lambda t: 1.0 - t  # noqa: E731
    assert schedules.from_function(f) == schedules.from_function(f)
    assert schedules.from_function(f) != schedules.from_function(lambda t: 1.0 - t)
    q = Joint.from_unnormalized(np.arange(1, 9, dtype=np.float64), 2, 3)
    sample(jax.random.PRNGKey(0), q.denoiser(), policies.EntropyBounded(0.1), num=8)
    before = _jitted(False, True, True)._cache_size()
    for g in (0.0, 0.7, float("inf")):
        sample(jax.random.PRNGKey(0), q.denoiser(), policies.EntropyBounded(g), num=8)
    assert _jitted(False, True, True)._cache_size() == before
