"""The exact denoiser against brute-force conditionals."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.denoiser import TabularDenoiser, cylinder_sums, denoiser_table, exact_denoiser
from theory.joint import Joint
from theory.reference import reference_conditionals
from theory.states import all_states

from conftest import assert_close
from strategies import joints


@given(joints(max_states=4**4), st.data())
def test_exact_denoiser_equals_bruteforce(q, data):
    V, L = q.vocab_size, q.length
    den = q.denoiser()
    zs = np.array(data.draw(st.lists(st.lists(st.integers(0, V), min_size=L, max_size=L), min_size=1, max_size=6)))
    got = np.asarray(den.marginals(zs))
    p = np.asarray(q.probs)
    for z, g in zip(zs, got):
        ref = reference_conditionals(p, V, L, tuple(z))
        for i in range(L):
            want = ref[i] if z[i] == V else np.eye(V)[z[i]]
            assert_close(g[i], np.asarray(want), rtol=1e-10, atol=1e-15)


@given(joints(max_states=3**5))
def test_cylinder_sums_and_table(q):
    V, L = q.vocab_size, q.length
    C = np.asarray(cylinder_sums(q))
    zs = all_states(V, L)
    seqs = q.sequences()
    p = np.asarray(q.probs)
    for k in np.random.default_rng(0).integers(0, len(zs), 20):
        z = zs[k]
        cons = np.all((z == V) | (seqs == z), axis=1)
        assert_close(C[k], p[cons].sum(), rtol=1e-12, atol=1e-16)
    assert_close(C[-1], 1.0)  # the all-mask state
    T = np.asarray(denoiser_table(q))
    assert T.shape == ((V + 1) ** L, L, V)
    assert_close(T.sum(-1), np.ones(T.shape[:2]), rtol=1e-12)


def test_zero_probability_state_gets_uniform():
    q = Joint(np.array([0.5, 0.0, 0.0, 0.5]), 2, 2)  # support {00, 11}
    m = np.asarray(q.denoiser().marginals(np.array([[0, 2], [2, 2]])))
    assert_close(m[0, 1], np.array([1.0, 0.0]))  # 0? -> 00
    q2 = Joint(np.array([0.5, 0.5, 0.0, 0.0]), 2, 2)  # x0 = 0 always
    m2 = np.asarray(q2.denoiser().marginals(np.array([[1, 2]])))
    assert_close(m2[0, 1], np.array([0.5, 0.5]))  # impossible state: documented uniform answer
    assert np.all(np.isfinite(m2))


def test_tabular_denoiser_validates():
    with pytest.raises(ValueError, match="shape"):
        TabularDenoiser(np.ones((3, 1, 2)) / 2, 2, 2)
    with pytest.raises(ValueError, match="probability"):
        TabularDenoiser(np.ones((9, 2, 2)), 2, 2)
    with pytest.raises(TypeError, match="float64"):
        TabularDenoiser((np.ones((9, 2, 2)) / 2).astype(np.float32), 2, 2)


def test_exact_denoiser_too_large():
    q = Joint(np.full(2**10, 2.0**-10), 2, 10)
    with pytest.raises(ValueError, match=r"(?s)cylinder.*needs|would need"):
        exact_denoiser(q, max_bytes=1000)
