"""Every Language implementation agrees with its enumerated Joint, through the protocol only (theory/language.py).

Implementations: Joint, MarkovChain, NGram, HMM (synthetic.languages), BlockLanguage (synthetic.worst_case),
SparseJoint and Task (synthetic.tasks). For each drawn instance: log_prob on every sequence, entropy(),
and the denoiser's marginals on every partial state equal those of ``lang.joint()`` (whose exact denoiser
is the cylinder-sum one) to 1e-12; samples have the right shape and lie in the support.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from synthetic import tasks, worst_case
from theory import language
from theory.joint import Joint
from theory.metrics import empirical_law
from theory.states import all_sequences, all_states

from conftest import assert_close
from strategies import joints, seeds, structured_languages


@st.composite
def block_languages(draw):
    kind = draw(st.sampled_from(["copy", "noisy", "random"]))
    m = draw(st.integers(1, 3))
    if kind == "copy":
        return worst_case.copy_pairs(2 * m)
    if kind == "noisy":
        return worst_case.noisy_copy_pairs(2 * m, draw(st.sampled_from([0.01, 0.3])))
    block = draw(joints(max_states=3**2, max_length=2))
    return worst_case.BlockLanguage(block, m if block.length * m <= 6 else 1)


@st.composite
def sparse_joints(draw):
    V, L = draw(st.sampled_from([(2, 3), (3, 3), (2, 5), (4, 2)]))
    rng = np.random.default_rng(draw(seeds))
    K = draw(st.integers(1, min(6, V**L)))
    idx = rng.choice(V**L, size=K, replace=False)
    seqs = all_sequences(V, L)[idx]
    w = None if draw(st.booleans()) else rng.dirichlet(np.ones(K)) + 1e-3
    return tasks.SparseJoint(seqs, V, L, weights=w)


def any_language():
    return st.one_of(
        joints(max_states=3**5),
        structured_languages(max_states=3**5, max_length=5),
        block_languages(),
        sparse_joints(),
    )


def _check_against_joint(lang):
    language.check_language(lang)
    assert isinstance(lang, language.Language) and isinstance(lang, language.Enumerable)
    J = lang.joint()
    V, L = lang.vocab_size, lang.length
    assert (J.vocab_size, J.length) == (V, L)
    x = all_sequences(V, L)
    lp, ref = np.asarray(lang.log_prob(x), dtype=np.float64), np.asarray(J.log_prob(x))
    assert np.array_equal(np.isneginf(lp), np.isneginf(ref))
    fin = np.isfinite(ref)
    assert_close(lp[fin], ref[fin], rtol=1e-12, atol=1e-12)
    assert_close(lang.entropy(), J.entropy(), rtol=1e-12, atol=1e-12)
    S = jnp.asarray(all_states(V, L))
    assert_close(lang.denoiser().marginals(S), J.denoiser().marginals(S), rtol=1e-12, atol=1e-12)
    s = np.asarray(lang.sample(jax.random.PRNGKey(0), 64))
    assert s.shape == (64, L)
    assert np.all(language.is_correct(lang, s))


@settings(max_examples=3)
@given(any_language())
def test_every_language_agrees_with_its_joint(lang):
    _check_against_joint(lang)


def test_task_is_a_language():
    t = tasks.sudoku_task(num_blanks=5, seed=1, min_solutions=2)
    _check_against_joint(t)
    t = tasks.copy_pairs_task(4)
    _check_against_joint(t)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Joint.from_unnormalized(np.arange(1, 9, dtype=np.float64), 2, 3),
        lambda: worst_case.noisy_copy_pairs(4, 0.2),
        lambda: tasks.SparseJoint(
            np.array(list(itertools.product([0, 1], repeat=3)))[[0, 3, 5, 6]], 2, 3, weights=[0.1, 0.2, 0.3, 0.4]
        ),  # fmt: skip
    ],
)
def test_sample_follows_q_chi_square(make):
    """Exact samples (fixed key) against q: chi-square at level 1e-4 (the chain languages: tests/test_chains.py)."""
    lang = make()
    p = np.asarray(lang.joint().probs)
    x = np.asarray(lang.sample(jax.random.PRNGKey(3), 20000))
    obs = np.round(empirical_law(x, lang.vocab_size) * len(x))
    keep = p > 0
    assert obs[~keep].sum() == 0
    assert chisquare(obs[keep], p[keep] * len(x)).pvalue > 1e-4


def test_protocol_errors_name_what_is_missing():
    with pytest.raises(TypeError, match="lacks denoiser, log_prob, entropy, sample"):
        language.check_language(type("T", (), {"vocab_size": 2, "length": 3})())
    lang = worst_case.copy_pairs(4)
    assert language.at_length(lang, 6).length == 6
    with pytest.raises(ValueError, match="fixed length"):
        language.at_length(Joint(np.full(4, 0.25), 2, 2), 3)
