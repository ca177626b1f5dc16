"""The core's demo experiment runs in --quick mode and writes its three files."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def test_kl_vs_steps_quick(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "kl_vs_steps.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"MDM_NO_PROGRESS": "1", "PATH": "", "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "kl_vs_steps.csv")
    assert (tmp_path / "kl_vs_steps.png").stat().st_size > 0
    meta = json.loads((tmp_path / "kl_vs_steps.json").read_text())
    assert meta["quick"] is True and meta["dtype"] == "float64"
    # exact facts the figure shows: one token per step (linear schedule, N = L) is exact; the bound is
    # never below the KL. (Other schedules at N = L round to some empty and some double steps.)
    last = df[(df.reveal == "fixed") & (df.steps == df.length) & (df.schedule == "linear")]
    assert len(last) == 1
    assert (last.kl.abs() < 1e-12).all()
    lin = df[df.schedule == "linear"]
    assert (lin.kl <= lin.dependence_bound + 1e-12).all()
