"""experiments/sampler_benchmark.py (issue 16, part 3): the --quick run once per module, its rows equal to the
committed CSV's rows for the same settings, and key values recomputed by hand and through the library."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import FIGURES, assert_close, load_script, one_row, run_quick
from theory.samplers import list_samplers

KEYS = ["task", "sampler", "knob", "value"]
EXACT_COLS = ["expected_nfe", "kl_q_p", "ser", "ter_gap"]
MC_COLS = ["expected_nfe", "nfe_se", "ser", "ser_se", "ter_gap", "ter_gap_se"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    mod = load_script("sampler_benchmark")
    out, (frame, paths) = run_quick(mod, tmp_path_factory)
    return mod, out, frame, paths


def test_outputs(quick):
    mod, out, frame, paths = quick
    for k in ("csv", "png", "json", "leaderboard"):
        assert paths[k].exists(), k
    assert set(frame["task"]) == set(mod.QUICK_TASKS)
    assert set(frame.loc[frame["method"] == "exact", "sampler"]) == set(list_samplers())
    for _, g in frame.groupby("task"):
        assert g["pareto"].any()
    md = paths["leaderboard"].read_text()
    assert "| copy-pairs |" in md and "## NFE to reach SER <= 0.1" in md


def test_copy_pairs_closed_form(quick):
    """Copy pairs, L = 4, MDLM (Bernoulli, linear, N = 2): reveal probabilities pi = (1/2, 1/2); a pair fails
    iff both tokens come in the same step and disagree: 1/2 * sum pi**2 = 1/4, so SER = 1 - (3/4)**2 = 7/16
    (papers.md, Feng2025 [ours]). E[NFE] = 2 * (1 - 2**-4) (each step reveals something unless step 1 takes all
    or nothing). Each support sequence has p(x) = (3/4 * 1/2)**2 = 9/64, so KL(q || p) = log(1/4) - log(9/64)."""
    _, _, frame, _ = quick
    r = one_row(frame, task="copy-pairs", sampler="mdlm", value=2.0)
    assert_close(r["ser"], 7 / 16, rtol=1e-12)
    assert_close(r["expected_nfe"], 2 * (1 - 2.0**-4), rtol=1e-12)
    # each of the 4 support sequences gets (3/4)**2 / 4 (no failure in either pair, values uniform)
    assert_close(r["kl_q_p"], np.log(1 / 4) - np.log((3 / 4) ** 2 / 4), rtol=1e-12)
    assert r["ter_gap"] == np.inf


def test_mc_row_recomputed(quick):
    """One Monte-Carlo row recomputed through the library with the script's key."""
    mod, _, frame, _ = quick
    import experiments._common as c
    from synthetic.benchmark_tasks import get_task
    from theory.samplers import get_sampler, list_samplers

    s = "llada-low-confidence"
    r = one_row(frame, task="markov-L32", sampler=s)
    name, kw, _ = mod.TASKS["markov-L32"]
    t = get_task(name, **kw)
    j = mod.knobs(s, t.length, False).index(int(r["value"]))
    key = c.point_key(0, list(mod.TASKS).index("markov-L32"), list_samplers().index(s), j)
    out = get_sampler(s).sample(key, t.denoiser(), int(r["value"]), num=mod.NUM)
    assert_close(np.mean(np.asarray(out.nfe, float)), r["expected_nfe"], rtol=1e-12)
    assert_close(1 - np.mean(t.correct(np.asarray(out.tokens))), r["ser"], rtol=1e-12, atol=1e-15)
    gap = np.mean(-np.asarray(t.log_prob(np.asarray(out.tokens)))) / t.length - t.entropy() / t.length
    assert_close(gap, r["ter_gap"], rtol=1e-10)


def test_quick_rows_equal_committed(quick):
    """The quick grid is part of the default grid: its rows equal the committed CSV's (exact to 1e-12, MC
    identical given the seed)."""
    _, _, _, paths = quick
    mine = pd.read_csv(paths["csv"])  # both written with the same float format (12 significant digits)
    committed = pd.read_csv(FIGURES / "sampler_benchmark.csv")
    m = mine.merge(committed, on=KEYS, suffixes=("", "_c"), how="left", validate="one_to_one")
    assert len(m) == len(mine) and m["method_c"].notna().all()
    ex, mc = m["method"] == "exact", m["method"] == "mc"
    for col in EXACT_COLS:
        a, b = m.loc[ex, col].to_numpy(float), m.loc[ex, f"{col}_c"].to_numpy(float)
        assert_close(a, b, rtol=1e-12, atol=1e-15, err_msg=col)
    for col in MC_COLS:
        assert np.array_equal(m.loc[mc, col].to_numpy(float), m.loc[mc, f"{col}_c"].to_numpy(float)), col
