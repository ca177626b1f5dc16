"""synthetic/tasks.py: the sparse support-list denoiser against the enumerated exact one, the tasks'
correctness predicates, and the imperfect denoisers' stated KL bound."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import tasks
from theory import policies
from theory.denoiser import smoothed, tempered
from theory.sampling import exact_law
from theory.states import all_sequences, all_states

from conftest import assert_close
from strategies import seeds


def _brute_sudoku_count():
    """Count 4x4 Sudokus by plain backtracking (independent of tasks.sudoku_solutions)."""
    g = [0] * 16

    def ok(c, v):
        r, k = divmod(c, 4)
        for j in range(16):
            if j >= c:
                break
            rj, kj = divmod(j, 4)
            if g[j] == v and (rj == r or kj == k or (rj // 2 == r // 2 and kj // 2 == k // 2)):
                return False
        return True

    def rec(c):
        if c == 16:
            return 1
        n = 0
        for v in range(4):
            if ok(c, v):
                g[c] = v
                n += rec(c + 1)
        return n

    return rec(0)


def test_sudoku_solutions():
    sols = tasks.sudoku_solutions()
    assert sols.shape == (288, 16) and _brute_sudoku_count() == 288  # the known count of 4x4 Sudokus
    assert len(np.unique(sols, axis=0)) == 288
    assert tasks.sudoku_valid(sols).all()
    bad = sols.copy()
    bad[:, [0, 1]] = bad[:, [1, 0]]  # swapping two cells of a row breaks a column
    assert not tasks.sudoku_valid(bad).any()


@pytest.mark.parametrize("blanks,seed", [(5, 0), (6, 3)])
def test_sudoku_sparse_denoiser_equals_enumerated(blanks, seed):
    task = tasks.sudoku_task(num_blanks=blanks, seed=seed, min_solutions=2)
    q = task.joint()
    S = all_states(4, blanks)
    assert_close(np.asarray(task.denoiser().marginals(S)), np.asarray(q.denoiser().marginals(S)), atol=1e-15)
    # correctness predicate = support of q (the completions are exactly the valid grids)
    seqs = all_sequences(4, blanks)
    np.testing.assert_array_equal(task.correct(seqs), np.asarray(q.probs) > 0)
    # exact_law through the sparse denoiser = through the Joint
    pol = policies.EntropyBounded(0.3, "margin")
    assert_close(np.asarray(exact_law(task.denoiser(), pol).probs), np.asarray(exact_law(q, pol).probs), atol=1e-15)


@settings(max_examples=12)
@given(seeds, st.integers(2, 3), st.integers(1, 4))
def test_sparse_joint_denoiser_equals_exact(seed, V, L):
    rng = np.random.default_rng(seed)
    n = V**L
    K = int(rng.integers(1, n + 1))
    idx = rng.choice(n, K, replace=False)
    seqs = all_sequences(V, L)[idx]
    w = rng.random(K) + 0.1
    sj = tasks.SparseJoint(seqs, V, L, w)
    q = sj.joint()
    S = all_states(V, L)
    assert_close(np.asarray(sj.denoiser().marginals(S)), np.asarray(q.denoiser().marginals(S)), atol=1e-15)
    assert_close(sj.entropy(), q.entropy(), atol=1e-15)
    assert_close(sj.log_prob(seqs), np.asarray(q.log_prob(seqs)))


def test_sparse_joint_rejects_bad_input():
    with pytest.raises(ValueError, match="distinct"):
        tasks.SparseJoint([[0, 1], [0, 1]], 2, 2)
    with pytest.raises(ValueError, match="tokens"):
        tasks.SparseJoint([[0, 2]], 2, 2)
    with pytest.raises(ValueError, match="weights"):
        tasks.SparseJoint([[0, 1]], 2, 2, weights=[0.0])
    with pytest.raises(TypeError):
        tasks.SparseJoint([[0.0, 1.0]], 2, 2)
    with pytest.raises(ValueError, match="completion"):
        tasks.sudoku_task({0: 0, 1: 0})
    with pytest.raises(ValueError, match="even"):
        tasks.copy_pairs_task(5)


def test_copy_pairs_task():
    t = tasks.copy_pairs_task(6)
    q = t.joint()
    support = [x for x in itertools.product([0, 1], repeat=6) if x[0] == x[1] and x[2] == x[3] and x[4] == x[5]]
    assert np.count_nonzero(np.asarray(q.probs)) == 8 == len(support)
    assert_close(q.entropy(), 3 * np.log(2))
    assert t.correct(np.array(support)).all()
    assert not t.correct(np.array([[0, 1, 0, 0, 1, 1]])).any()


def test_markov_task_support_is_correctness():
    t = tasks.markov_task(jax.random.PRNGKey(2), 3, 4, forbid=0.4)
    q = t.joint()
    seqs = all_sequences(3, 4)
    np.testing.assert_array_equal(t.correct(seqs), np.asarray(q.probs) > 0)
    assert (np.asarray(q.probs) == 0).any()  # some transitions are forbidden: accuracy is informative


@settings(max_examples=6)
@given(seeds, st.sampled_from([0.01, 0.05, 0.3]))
def test_smoothed_kl_bound_and_tempered_identity(seed, eps):
    from synthetic.languages import dirichlet

    q = dirichlet(jax.random.PRNGKey(seed % 7), 3, 3, 0.3)
    ex = q.denoiser()
    S = all_states(3, 3)
    qm = np.asarray(ex.marginals(S))
    pm = np.asarray(smoothed(ex, eps).marginals(S))
    assert_close(pm.sum(-1), np.ones(pm.shape[:2]))
    kl = np.sum(np.where(qm > 0, qm * np.log(np.where(qm > 0, qm, 1) / np.where(qm > 0, pm, 1)), 0), -1)
    assert np.all(kl <= -np.log(1 - eps) + 1e-12)
    assert_close(np.asarray(tempered(ex, 1.0).marginals(S)), qm, atol=1e-15)
    sharp = np.asarray(tempered(ex, 0.5).marginals(S))  # p proportional to q**2
    want = qm**2 / (qm**2).sum(-1, keepdims=True)
    assert_close(sharp, want, atol=1e-15)


def test_evaluate_sampler_copy_pairs_by_hand():
    """Copy pairs, L = 4 (q uniform on {aabb}: 4 sequences), everything at once (EB, gamma = inf): the law is
    the product of uniform marginals, so by hand NFE = 1, accuracy = P(x0 = x1, x2 = x3) = 1/4,
    KL(q || p) = log 16 - log 4 = log 4 = the dependence (no model error); one token per step is exact."""
    task = tasks.copy_pairs_task(4)
    q = task.joint()
    np.testing.assert_array_equal(task.correct_table(), np.asarray(q.probs) > 0)
    assert task.correct_table() is task.correct_table()  # computed once
    pt = tasks.evaluate_sampler(task, policies.EntropyBounded(float("inf")), joint=q)
    assert_close(np.array([pt.nfe, pt.accuracy, pt.kl, pt.dependence, pt.model_error]),
                 np.array([1.0, 0.25, np.log(4), np.log(4), 0.0]), rtol=1e-12, atol=1e-15)  # fmt: skip
    assert (pt.n, pt.nfe_se, pt.accuracy_se) == (0, 0.0, 0.0)
    one = tasks.evaluate_sampler(task, policies.TopK("confidence", k=1))
    assert_close(np.array([one.nfe, one.accuracy]), np.array([4.0, 1.0]), rtol=1e-12)
    mc = tasks.evaluate_sampler_mc(jax.random.PRNGKey(3), task, policies.EntropyBounded(float("inf")), num=2000)
    assert (mc.nfe, mc.nfe_se, mc.n) == (1.0, 0.0, 2000) and np.isnan(mc.kl)
    assert abs(mc.accuracy - 0.25) <= 4 * np.sqrt(0.25 * 0.75 / 2000)
    assert set(pt.as_dict()) == {"nfe", "nfe_se", "accuracy", "accuracy_se", "n", "kl", "model_error",
                                 "dependence", "bound", "entropy_bound"}  # fmt: skip
    with pytest.raises(ValueError, match="joint"):
        tasks.evaluate_sampler(task, policies.EntropyBounded(0.0), joint=tasks.copy_pairs_task(6).joint())
