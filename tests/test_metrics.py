"""Metrics: exact identities and Monte-Carlo estimates."""

import numpy as np
import pytest
from hypothesis import given

from theory import metrics
from theory.joint import Joint

from conftest import assert_close
from strategies import joints


@given(joints(max_states=4**4), joints(max_states=4**4, sparse=False))
def test_kl_tv_basic(q, r):
    p = np.asarray(q.probs)
    assert metrics.kl(p, p) == pytest.approx(0.0, abs=1e-15)
    assert metrics.tv(p, p) == 0.0
    if r.probs.shape == q.probs.shape:
        k = metrics.kl(p, np.asarray(r.probs))
        t = metrics.tv(p, np.asarray(r.probs))
        assert k >= -1e-15 and 0 <= t <= 1
        assert t <= np.sqrt(k / 2) + 1e-12  # Pinsker


@given(joints())
def test_log_ter_of_q_is_entropy_rate(q):
    assert_close(metrics.log_ter(q.probs, q), q.entropy() / q.length, rtol=1e-12)
    assert metrics.sequence_error_rate(q.probs, q) == 0.0


def test_ser_support_and_predicate_agree():
    q = Joint(np.array([0.5, 0.0, 0.0, 0.5]), 2, 2)  # {00, 11}
    p = np.array([0.25, 0.25, 0.25, 0.25])
    assert metrics.sequence_error_rate(p, q) == 0.5
    assert metrics.sequence_error_rate(p, q, correct=lambda x: x[:, 0] == x[:, 1]) == 0.5
    assert metrics.log_ter(p, q) == np.inf
    assert metrics.kl(p, q.probs) == np.inf
    assert_close(metrics.kl(q.probs, p), np.log(2.0))


def test_mc_estimates():
    e = metrics.ser_mc(np.array([True, False, True, True]))
    assert e.mean == 0.25 and e.n == 4
    assert_close(e.se, np.std([0, 1, 0, 0], ddof=1) / 2)
    lo, hi = e.ci95()
    assert lo < 0.25 < hi
    with pytest.raises(TypeError):
        metrics.ser_mc(np.array([1, 0]))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mean_se([1.0])
    t = metrics.log_ter_mc(np.log([0.5, 0.25]), 2)
    assert_close(t.mean, (np.log(2) + np.log(4)) / 4)


def test_metric_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.kl(np.array([0.5, 0.6]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        metrics.tv(np.array([1.0]), np.array([0.5, 0.5]))
