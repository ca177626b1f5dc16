"""The core's demo experiment, experiments/kl_vs_steps.py: its numbers are the library's.

* ``--quick`` runs once for the module, in-process: rows recomputed through theory.sampling.exact_law and
  theory.metrics (an independent path from the script's theory.dependence.error_decomposition), the exact
  facts the figure shows (one token per step is exact; KL <= the dependence bound), its three files;
* the committed figures/kl_vs_steps.csv is what the default run writes: rows recomputed to 1e-10.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from synthetic import languages
from theory import metrics, schedules
from theory.dependence import error_decomposition
from theory.sampling import exact_law

from conftest import assert_close, load_script, run_quick

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    return load_script("kl_vs_steps")


@pytest.fixture(scope="module")
def quick(script, tmp_path_factory):
    return run_quick(script, tmp_path_factory)


def _recompute(q, schedule, reveal, steps):
    """KL, TV and the expected NFE by exact_law + metrics; the bound by error_decomposition."""
    sched = getattr(schedules, schedule)()
    law = exact_law(q, None, steps, reveal=reveal, schedule=sched)
    dep = error_decomposition(q, None, steps, reveal=reveal, schedule=sched).dependence
    p = np.asarray(law.probs)
    gap = metrics.log_ter(p, q) - q.entropy() / q.length
    return np.array([metrics.kl(q.probs, p), metrics.tv(q.probs, p), gap, dep, law.expected_nfe])


COLS = ["kl", "tv", "log_ter_gap", "dependence_bound", "expected_nfe"]


def _row(df, schedule, reveal, steps):
    r = df[(df.schedule == schedule) & (df.reveal == reveal) & (df.steps == steps)]
    assert len(r) == 1
    return r[COLS].to_numpy(dtype=float)[0]


def test_quick_files(quick):
    out, df = quick
    csv = pd.read_csv(out / "kl_vs_steps.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == len(df) == 3 * 2 * 6
    assert_close(csv[COLS].to_numpy(), df[COLS].to_numpy(), rtol=1e-11, atol=1e-15)
    assert (out / "kl_vs_steps.png").stat().st_size > 0
    meta = json.loads((out / "kl_vs_steps.json").read_text())
    assert meta["quick"] is True and meta["dtype"] == "float64" and (meta["vocab"], meta["length"]) == (2, 6)


def test_quick_rows_are_the_library(quick):
    _, df = quick
    q = languages.random_ngram(jax.random.PRNGKey(0), 2, 3, 6, concentration=0.3).joint()
    for schedule, reveal, steps in [("linear", "fixed", 3), ("cosine", "bernoulli", 4), ("cosine_squared", "fixed", 2)]:
        assert_close(_row(df, schedule, reveal, steps), _recompute(q, schedule, reveal, steps), rtol=1e-10, atol=1e-14)
    # the exact facts the figure shows: one token per step (linear, N = L, fixed counts) is exact, and the
    # dependence sum bounds KL everywhere (random order with the exact denoiser: no model error)
    last = df[(df.reveal == "fixed") & (df.steps == df.length) & (df.schedule == "linear")]
    assert len(last) == 1 and abs(float(last.kl.iloc[0])) <= 1e-12
    assert (df.kl <= df.dependence_bound + 1e-12).all()
    assert_close(df[df.steps == 1].kl.to_numpy(), df[df.steps == 1].dependence_bound.to_numpy(), rtol=1e-10)


def test_log_floor(script):
    assert script.log_floor([0.0, -1e-17, 0.0059, 1.4]) == 1e-3
    assert script.log_floor([1e-3, 0.5]) == 1e-4  # strictly below the smallest positive value
    assert script.log_floor([0.0]) == 1e-3


def test_committed_rows():
    """figures/kl_vs_steps.csv is what the default run writes: a handful of rows recomputed (1e-10)."""
    df = pd.read_csv(ROOT / "figures" / "kl_vs_steps.csv")
    meta = json.loads((ROOT / "figures" / "kl_vs_steps.json").read_text())
    assert meta["quick"] is False
    V, L = meta["vocab"], meta["length"]
    assert len(df) == 3 * 2 * L
    q = languages.random_ngram(jax.random.PRNGKey(meta["seed"]), V, 3, L, concentration=meta["concentration"]).joint()
    for schedule, reveal, steps in [("linear", "fixed", 4), ("cosine", "bernoulli", 8), ("cosine_squared", "fixed", 7)]:
        assert_close(_row(df, schedule, reveal, steps), _recompute(q, schedule, reveal, steps), rtol=1e-10, atol=1e-14)
