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


# ---- nfe_speedups: a hand-built frame whose answer is derived by hand --------------------------------------
def _speedup_frame():
    import pandas as pd

    nan = float("nan")
    rows = [
        # group A (exact rows, no accuracy_se): baseline TopK k=1 at NFE 8, accuracy 1
        ("A", "TopK", 1, 8.0, 1.0, nan),
        ("A", "TopK", 2, 4.0, 0.5, nan),  # loses half the accuracy: never equal
        ("A", "EB", 0.0, 5.0, 1.0 - 1e-12, nan),  # equal up to float rounding (the 1e-9 slack)
        ("A", "EB", 0.5, 3.0, 0.995, nan),  # equal only within the 0.01 tolerance
        ("A", "EB", 9.0, 1.0, 0.2, nan),
        # group B (Monte Carlo): baseline accuracy 0.60 +- 0.01 at NFE 16
        ("B", "TopK", 1, 16.0, 0.60, 0.01),
        ("B", "TopK", 2, 8.0, 0.30, 0.01),
        ("B", "EB", 0.1, 8.0, 0.58, 0.01),  # 0.58 >= 0.60 - 2 sqrt(2) 0.01 = 0.5717: equal
        ("B", "EB", 0.5, 6.0, 0.575, 0.02),  # 0.575 >= 0.60 - 2 sqrt(0.01^2 + 0.02^2) = 0.5553: equal
        ("B", "EB", 1.0, 4.0, 0.56, 0.01),  # 0.56 < 0.5717 (and < 0.5617 with tolerance 0.01): not equal
        # group C: no EB row reaches the baseline
        ("C", "TopK", 1, 4.0, 1.0, 0.0),
        ("C", "EB", 9.0, 1.0, 0.1, 0.0),
    ]
    return pd.DataFrame(rows, columns=["task", "policy", "param", "nfe", "accuracy", "accuracy_se"])


def test_nfe_speedups_hand_built():
    sp = metrics.nfe_speedups(_speedup_frame(), (0.0, 0.01), by=("task",))
    got = {(r.task, r.tolerance, r.policy): (r.nfe, r.param, r.speedup) for r in sp.itertuples()}
    expect = {
        ("A", 0.0, "TopK"): (8.0, 1, 1.0),
        ("A", 0.0, "EB"): (5.0, 0.0, 8 / 5),
        ("A", 0.01, "TopK"): (8.0, 1, 1.0),
        ("A", 0.01, "EB"): (3.0, 0.5, 8 / 3),
        ("B", 0.0, "TopK"): (16.0, 1, 1.0),
        ("B", 0.0, "EB"): (6.0, 0.5, 16 / 6),
        ("B", 0.01, "TopK"): (16.0, 1, 1.0),
        ("B", 0.01, "EB"): (6.0, 0.5, 16 / 6),
        ("C", 0.0, "TopK"): (4.0, 1, 1.0),
        ("C", 0.01, "TopK"): (4.0, 1, 1.0),
    }
    assert len(sp) == 12
    for k, v in expect.items():
        assert_close(np.array(got[k], dtype=float), np.array(v, dtype=float), rtol=1e-15, err_msg=str(k))
    for tol in (0.0, 0.01):  # no EB row of C is within reach: NaN, not a number that hides it
        assert np.isnan(got[("C", tol, "EB")]).all()
    b = sp[sp.task == "B"].iloc[0]
    assert (b.baseline_nfe, b.baseline_accuracy) == (16.0, 0.60)
    # without a standard-error column every row is exact: B's EB rows no longer reach 0.60
    nose = metrics.nfe_speedups(_speedup_frame().drop(columns="accuracy_se"), (0.0,), by=("task",))
    assert np.isnan(nose[(nose.task == "B") & (nose.policy == "EB")].speedup).all()


def test_nfe_speedups_rejects_bad_frames():
    f = _speedup_frame()
    with pytest.raises(ValueError, match="baseline"):
        metrics.nfe_speedups(f[~((f.task == "A") & (f.policy == "TopK") & (f.param == 1))], by=("task",))
    with pytest.raises(ValueError, match="baseline"):
        metrics.nfe_speedups(f.assign(param=1), by=("task",))
    with pytest.raises(ValueError, match="missing"):
        metrics.nfe_speedups(f.drop(columns="nfe"), by=("task",))
