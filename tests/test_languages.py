"""Languages: enumerated tables equal their defining formulas."""

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthetic import languages as lg

from conftest import assert_close
from strategies import concentrations, seeds


@given(seeds, st.integers(2, 3), st.integers(1, 5), concentrations)
def test_markov_joint(seed, V, L, conc):
    m = lg.random_markov(jax.random.PRNGKey(seed), V, L, conc)
    q = m.joint()
    for x in itertools.islice(itertools.product(range(V), repeat=L), 20):
        want = m.init[x[0]] * np.prod([m.trans[a, b] for a, b in zip(x[:-1], x[1:])])
        assert_close(np.exp(float(q.log_prob(np.array(x)))) if want > 0 else 0.0, want, rtol=1e-12)


@given(seeds, st.integers(2, 3), st.integers(2, 3), st.integers(0, 3), concentrations)
def test_ngram_joint(seed, V, n, extra, conc):
    L = n + extra
    g = lg.random_ngram(jax.random.PRNGKey(seed), V, n, L, conc)
    p = np.asarray(g.joint().probs)
    init = g.init.reshape((V,) * (n - 1))
    for k, x in enumerate(itertools.product(range(V), repeat=L)):
        want = init[x[: n - 1]] * np.prod([g.cond[x[i - n + 1 : i + 1]] for i in range(n - 1, L)])
        assert_close(p[k], want, rtol=1e-12, atol=1e-300)


@given(seeds, st.integers(1, 3), st.integers(2, 3), st.integers(1, 4))
def test_hmm_joint_bruteforce(seed, H, V, L):
    h = lg.random_hmm(jax.random.PRNGKey(seed), H, V, L)
    p = np.asarray(h.joint().probs)
    for k, x in enumerate(itertools.product(range(V), repeat=L)):
        want = 0.0
        for hs in itertools.product(range(H), repeat=L):
            w = h.init[hs[0]] * h.emit[hs[0], x[0]]
            for i in range(1, L):
                w *= h.trans[hs[i - 1], hs[i]] * h.emit[hs[i], x[i]]
            want += w
        assert_close(p[k], want, rtol=1e-12)


def test_dirichlet_is_valid():
    q = lg.dirichlet(jax.random.PRNGKey(0), 3, 3, 0.2)
    assert abs(float(q.probs.sum()) - 1) < 1e-12


def test_language_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        lg.MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.6], [0.5, 0.5]]), 3)
    with pytest.raises(ValueError, match="negative"):
        lg.MarkovChain(np.array([1.5, -0.5]), np.eye(2), 3)
    with pytest.raises(ValueError, match="length >= 3"):
        lg.NGram(np.full(4, 0.25), np.full((2, 2, 2), 0.5), 2)
    with pytest.raises(ValueError, match="concentration"):
        lg.dirichlet(jax.random.PRNGKey(0), 2, 2, 0.0)
    with pytest.raises(ValueError, match=r"(?s)GiB.*synthetic\.markov"):
        lg.random_markov(jax.random.PRNGKey(0), 4, 40).joint()
