"""Shared plumbing for experiment scripts: CLI, float64, output files, settings JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a seconds-long version (used by the tests)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (same seed, same CSV)")
    p.add_argument("--out", type=Path, default=FIGURES, help="output folder for CSV / PNG / JSON")
    return p


def setup() -> None:
    """Turn on float64 (the library never does it on import) and the Agg backend."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")


def write_outputs(out: Path, name: str, frame, fig, settings: dict) -> dict:
    """Write ``name``.csv (tidy, pandas), ``name``.png and ``name``.json (all settings + versions)."""
    import jax
    import numpy as np

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{name}.csv", "png": out / f"{name}.png", "json": out / f"{name}.json"}
    frame.to_csv(paths["csv"], index=False, float_format="%.12g")
    fig.savefig(paths["png"], dpi=150, bbox_inches="tight")
    meta = {
        **settings,
        "dtype": "float64",
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "package_version": _version(),
    }
    paths["json"].write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return paths


def _version() -> str:
    try:
        import theory

        return theory.__version__
    except Exception:  # pragma: no cover
        return "unknown"


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def quiet_progress() -> bool:
    """tqdm bars are disabled when MDM_NO_PROGRESS is set (tests) or output is not a terminal."""
    return bool(os.environ.get("MDM_NO_PROGRESS"))
