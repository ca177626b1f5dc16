"""The benchmark task registry (issue 16, part 2): every task is a valid Language with exact ground truth."""

import jax
import numpy as np
import pytest

from synthetic.benchmark_tasks import TASKS, dyck_words, get_task, list_tasks, parity_words
from synthetic.tasks import Task
from tests.conftest import assert_close
from theory.language import Language


@pytest.fixture(scope="module")
def tasks():
    return {name: get_task(name) for name in TASKS}


def test_tasks_are_languages(tasks):
    """Probabilities sum to 1 and correct() is exactly membership in q's support (so it holds on every
    sample from q): checked on all V**L sequences of every task."""
    for name, t in tasks.items():
        assert isinstance(t, Task) and isinstance(t, Language), name
        p = np.asarray(t.joint().probs)
        assert_close(p.sum(), 1.0, rtol=1e-12, err_msg=name)
        assert np.all(p >= 0), name
        assert np.any(p == 0) or name == "dirichlet", name  # hard constraints everywhere else: SER is not trivial
        assert np.array_equal(t.correct_table(), p > 0), name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_task_sampler_and_log_prob_slow(name, tasks):
    """The Language's own sampler stays in the support; log_prob and entropy agree with the table."""
    t = tasks[name]
    q = t.joint()
    p = np.asarray(q.probs)
    x = np.asarray(t.sample(jax.random.PRNGKey(0), 256))
    assert x.shape == (256, t.length) and x.min() >= 0 and x.max() < t.vocab_size
    assert np.all(t.correct(x))
    lp = np.asarray(t.log_prob(q.sequences()))
    assert_close(np.exp(lp[p > 0]), p[p > 0], rtol=1e-9)
    assert np.all(np.isneginf(lp[p == 0]))
    assert_close(t.entropy(), -np.sum(p[p > 0] * np.log(p[p > 0])), rtol=1e-9)


def test_supports_pinned():
    """Hand counts: parity 2**(L-1) words; Dyck-1 Catalan(L/2) (L = 6: 5), Dyck-2 Catalan(L/2) 2**(L/2)
    (L = 4: 2 * 4 = 8); copy pairs 2**(L/2); additive n-gram V**2 starts (deterministic afterwards)."""
    assert parity_words(4).shape == (8, 4)
    assert dyck_words(1, 6).shape == (5, 6)
    assert dyck_words(2, 4).shape == (8, 4)
    assert dyck_words(1, 4).tolist() == [[0, 0, 1, 1], [0, 1, 0, 1]]
    for name, kw, size in (("copy-pairs", {"length": 6}, 8), ("additive-ngram", {"vocab_size": 3, "length": 5}, 9),
                           ("parity", {"length": 5}, 16), ("dyck", {"length": 8}, 14)):  # fmt: skip
        p = np.asarray(get_task(name, **kw).joint().probs)
        assert int(np.sum(p > 0)) == size, name
        assert_close(p[p > 0], np.full(size, 1.0 / size), rtol=1e-12)


@pytest.mark.slow
def test_chains_long_length():
    """Chains, n-grams and HMMs run at long L through their oracles (no table)."""
    for name in ("markov", "ngram", "hmm", "additive-ngram"):
        t = get_task(name, length=200)
        x = np.asarray(t.sample(jax.random.PRNGKey(1), 8))
        assert x.shape == (8, 200) and np.all(t.correct(x))
        m = np.asarray(t.denoiser().marginals(np.full((1, 200), t.vocab_size)))
        assert m.shape == (1, 200, t.vocab_size)
        assert_close(m.sum(-1), np.ones((1, 200)), rtol=1e-10)


def test_registry_and_bad_input():
    assert list_tasks() == list(TASKS) and len(TASKS) == 9
    with pytest.raises(ValueError, match="known tasks: dirichlet"):
        get_task("sudoku9")
    with pytest.raises(TypeError, match="bad keyword"):
        get_task("parity", vocab_size=3)
    with pytest.raises(ValueError, match="even length"):
        get_task("dyck", length=5)
    with pytest.raises(ValueError, match="forbid"):
        get_task("markov", forbid=1.0)
    with pytest.raises(ValueError, match="length >= 2"):
        get_task("parity", length=1)
