"""Sparse-row Markov chains (synthetic.sparse_chain): the sparse forward–backward conditionals against a plain
dense forward–backward written here (numpy, O(L V^2)), the dense Markov oracle and the enumerated Joint; the
Language protocol (log q sums to 1, entropy, sampling)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from scipy import stats

from synthetic.sparse_chain import SparseMarkovChain, random_sparse_chain, transpose_rows
from theory import policies, sampling
from theory.denoiser import exact_denoiser
from theory.language import check_language

from conftest import assert_close
from strategies import chain_partial_states, seeds, sparse_chains

V3, L5, B16 = 3, 5, 16  # one shape for the property tests: one compilation


def plain_forward_backward(init, trans, states):
    """Exact conditionals of the chain (init, dense trans) by the textbook scaled forward–backward.

    states (B, L) with V = mask -> (B, L, V); one-hot at visible positions, 1/V at the masked positions of a
    state with q(visible part) = 0 (the convention of theory.denoiser).
    """
    V = trans.shape[0]
    B, L = states.shape
    ev = np.where((states == V)[..., None], 1.0, np.eye(V)[np.minimum(states, V - 1)])  # (B, L, V)
    pred = np.empty((B, L, V))
    ok = np.ones(B, bool)
    a = np.broadcast_to(init, (B, V))
    for i in range(L):
        pred[:, i] = a
        f = a * ev[:, i]
        s = f.sum(1, keepdims=True)
        ok &= s[:, 0] > 0
        f = f / np.where(s > 0, s, 1.0)
        a = f @ trans
    beta = np.ones((B, V))
    out = np.empty((B, L, V))
    for i in range(L - 1, -1, -1):
        g = pred[:, i] * beta
        s = g.sum(1, keepdims=True)
        good = ok[:, None] & (s > 0)
        out[:, i] = np.where(good, g / np.where(good, s, 1.0), 1.0 / V)
        b = trans @ (ev[:, i] * beta).T  # (V, B)
        b = b.T
        sb = b.sum(1, keepdims=True)
        beta = b / np.where(sb > 0, sb, 1.0)
    return np.where((states == V)[..., None], out, ev)


def _positions(seed, batch, length, width):
    """Random query positions (duplicates included)."""
    return np.random.default_rng(seed).integers(0, length, size=(batch, width))


def _check(lang, seed, markov=False):
    st = chain_partial_states(lang, seed, B16)
    d = lang.denoiser()
    got = np.asarray(d.marginals(jnp.asarray(st)))
    assert_close(got, plain_forward_backward(lang.init, lang.dense_trans(), st), rtol=0, atol=1e-12)
    assert_close(got, exact_denoiser(lang.joint()).marginals(jnp.asarray(st)), rtol=0, atol=1e-12)
    pos = _positions(seed, B16, L5, L5)  # width L: the compilation of marginals serves
    at = d.marginals_at(jnp.asarray(st), jnp.asarray(pos))
    assert_close(at, np.take_along_axis(got, pos[..., None], axis=1), rtol=0, atol=1e-15)
    if not markov:  # log q(visible) against the enumerated cylinder sums
        C = np.asarray(exact_denoiser(lang.joint()).state_prob(jnp.asarray(st)))
        lm = np.asarray(lang.log_marginal(st))
        assert np.array_equal(np.isinf(lm), C == 0)
        assert_close(lm[C > 0], np.log(C[C > 0]), rtol=1e-12, atol=1e-12)
        return
    dense = lang.dense()  # the dense Markov oracle (slow twin: two more compilations)
    assert_close(got, dense.denoiser().marginals(jnp.asarray(st)), rtol=0, atol=1e-12)
    lm, lm_dense = np.asarray(lang.log_marginal(st)), np.asarray(dense.log_marginal(st))
    assert np.array_equal(np.isinf(lm), np.isinf(lm_dense))
    fin = np.isfinite(lm)
    assert_close(lm[fin], lm_dense[fin], rtol=1e-12, atol=1e-12)


@given(sparse_chains(V3, L5), seeds)
def test_sparse_conditionals_equal_dense_oracles(lang, seed):
    """Sparse rows with zeros, absorbing states, permutations, teleport eps in {0, 1e-3, 0.3, 1}, states
    sampled-then-masked and uniform (often impossible): equal to the plain forward–backward and the enumerated
    Joint to 1e-12, log q(visible) = log of the cylinder sum; marginals_at (duplicate positions) = marginals
    gathered. The slow twin also compares with the dense Markov oracle."""
    _check(lang, seed)


@pytest.mark.slow
@settings(max_examples=60)
@given(sparse_chains(V3, L5), seeds)
def test_sparse_conditionals_equal_dense_oracles_many(lang, seed):
    _check(lang, seed, markov=True)


def test_pinned_conditionals_by_hand():
    """V = 3, token 1 absorbing, token 2 never reached: P = [[1/2, 1/2, 0], [0, 1, 0], [1/3, 1/3, 1/3]],
    init = (1, 0, 0) (the property tests' shapes: no new compilation).

    z = (0, M, 1, M, M): q(x_1 = v) ∝ P[0, v] P[v, 1] = (1/4, 1/2, 0) -> (1/3, 2/3, 0), and q(visible) =
    P^2[0, 1] = 3/4. z = (1, M, 0, M, M): init[1] = 0, impossible -> uniform, log q = -inf. With the teleport
    eps = 1/2, nu = (1, 0, 0): T = [[3/4, 1/4, 0], [1/2, 1/2, 0], [2/3, 1/6, 1/6]], and z = (0, M, 1, M, M) gives
    ∝ (3/4 * 1/4, 1/4 * 1/2, 0) = (3/16, 2/16, 0) -> (3/5, 2/5, 0).
    """
    P = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    init = np.array([1.0, 0.0, 0.0])
    M = V3
    states = np.full((B16, L5), M)
    states[0, [0, 2]] = [0, 1]
    states[1, [0, 2]] = [1, 0]
    lang = SparseMarkovChain.from_dense(init, P, L5, row_nnz=V3)
    got = lang.conditionals(states)
    assert_close(got[:2, 1], [[1 / 3, 2 / 3, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-14, atol=1e-16)
    assert_close(lang.log_marginal(states)[:2], [np.log(0.75), -np.inf], rtol=1e-14)
    tele = SparseMarkovChain.from_dense(init, P, L5, eps=0.5, nu=np.array([1.0, 0.0, 0.0]), row_nnz=V3)
    assert_close(tele.dense_trans(), [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0], [2 / 3, 1 / 6, 1 / 6]], rtol=1e-15)
    assert_close(tele.conditionals(states)[0, 1], [0.6, 0.4, 0.0], rtol=1e-14, atol=1e-16)


@pytest.mark.slow
def test_medium_vocabulary_layout_against_plain_forward_backward():
    """V = 48, K = 6 with duplicate indices in rows (merged), columns of unequal counts (K_c > K), eps = 0 (many
    impossible uniform states) and eps = 0.01, L = 40: equal to the plain dense forward–backward."""
    V, K, L, B = 48, 6, 40, 8
    base = random_sparse_chain(jax.random.PRNGKey(3), V, K, L, 0.0, concentration=0.3)
    idx = base.idx.copy()
    idx[::5, 1] = idx[::5, 0]  # duplicates: entries add up
    for eps in (0.0, 0.01):
        lang = SparseMarkovChain(base.init, idx, base.prob, L, eps, base.nu)
        assert transpose_rows(lang.idx, lang.prob)[0].shape[1] > K
        st = chain_partial_states(lang, 7, B, mask_prob=0.6)
        got = lang.conditionals(st)
        assert_close(got, plain_forward_backward(lang.init, lang.dense_trans(), st), rtol=0, atol=1e-12)


def test_language_protocol():
    """log q sums to 1 over V**L, entropy = -sum q log q, samples follow q (chi-square at level 1e-4)."""
    lang = random_sparse_chain(jax.random.PRNGKey(1), 3, 2, 4, eps=0.05)
    check_language(lang)
    X = np.array(list(itertools.product(range(3), repeat=4)))
    lp = np.asarray(lang.log_prob(X))
    q = np.exp(lp)
    assert_close(q.sum(), 1.0, rtol=1e-12)
    assert_close(q, lang.joint().probs, rtol=1e-12)
    assert_close(lang.entropy(), -np.sum(q * lp), rtol=1e-12)
    n = 20000
    x = np.asarray(lang.sample(jax.random.PRNGKey(2), n))
    counts = np.bincount(x @ (3 ** np.arange(3, -1, -1)), minlength=81)
    assert stats.chisquare(counts, q * n).pvalue > 1e-4
    assert lang.with_length(6).length == 6


def test_bad_input_raises():
    init = np.full(3, 1 / 3)
    idx = np.array([[0, 1], [1, 2], [2, 0]])
    prob = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="token ids"):
        SparseMarkovChain(init, idx + 1, prob, 4)
    with pytest.raises(ValueError, match="prob"):
        SparseMarkovChain(init, idx, prob * 0.9, 4)
    with pytest.raises(ValueError, match="eps"):
        SparseMarkovChain(init, idx, prob, 4, eps=1.5)
    with pytest.raises(ValueError, match="shape"):
        SparseMarkovChain(init, idx, prob[:, :1] * 2, 4)
    with pytest.raises(ValueError, match="would need"):
        random_sparse_chain(jax.random.PRNGKey(0), 4096, 2, 3).dense_trans(max_bytes=1e6)


@pytest.mark.slow
def test_sampler_through_sparse_oracle_matches_dense_oracle():
    """The Monte-Carlo sampler's fast path (marginals_at) with the sparse oracle draws the same tokens as with
    the dense Markov oracle (same key; conditionals equal to 1e-16)."""
    lang = random_sparse_chain(jax.random.PRNGKey(4), 5, 2, 12, eps=0.0)
    key = jax.random.PRNGKey(9)
    a = sampling.sample(key, lang.denoiser(), policies.RandomOrder(), 4, num=256)
    b = sampling.sample(key, lang.dense().denoiser(), policies.RandomOrder(), 4, num=256)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
