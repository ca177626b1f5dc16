"""Plumbing shared by every experiment script: CLI, float64, keys, progress bars, output files, styles.

A script is a thin ``main(argv)`` over library functions:

    args = parser(__doc__).parse_args(argv)      # --quick, --seed, --out (+ the script's own flags)
    setup()                                       # float64 on, matplotlib Agg
    for x in progress(grid, "name"): ...          # tqdm, silenced by MDM_NO_PROGRESS=1 (tests)
    write_outputs(args.out, "name", frame, fig, settings)   # name.csv, name.png, name.json

Same seed, same CSV, byte for byte: every random point draws its key with :func:`point_key`.
Sizes, fonts, colours, markers, line styles and axis labels come from :mod:`experiments._style` (applied
by :func:`setup`; :func:`style` is its per-method look), so a method looks the same in every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
if str(ROOT) not in sys.path:  # scripts run as `python experiments/x.py` from a checkout
    sys.path.insert(0, str(ROOT))

from experiments import _style  # noqa: E402  (one figure style: sizes, fonts, colours, labels)

#: Float format of every CSV the scripts write (12 significant digits: stable across runs and machines).
CSV_FLOAT = "%.12g"


def style(method: str) -> dict:
    """matplotlib keyword arguments (color, marker, linestyle) for a method name, the same in every figure
    (:func:`experiments._style.style`)."""
    return _style.style(method)


def series_color(i: int) -> str:
    """The i-th colour of the project's palette, for series that are not methods (lengths, tasks)."""
    return _style.series_color(i)


def parser(description: str) -> argparse.ArgumentParser:
    """The common CLI: --quick (seconds, what the tests run), --seed, --out (default figures/)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    _style.apply()


def point_key(seed: int, *labels: int):
    """The PRNG key of one measured point: the integer labels folded into PRNGKey(seed)."""
    import jax

    k = jax.random.PRNGKey(seed)
    for lab in labels:
        k = jax.random.fold_in(k, int(lab))
    return k


def quiet_progress() -> bool:
    """tqdm bars are disabled when MDM_NO_PROGRESS is set (tests)."""
    return bool(os.environ.get("MDM_NO_PROGRESS"))


def progress(iterable, desc: str, **kw):
    """A tqdm progress bar on stderr (disabled by MDM_NO_PROGRESS=1)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=quiet_progress(), file=sys.stderr, **kw)


def write_csv(out, name: str, frame) -> Path:
    """Write ``name``.csv (tidy, one row per measured point) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    frame.to_csv(path, index=False, float_format=CSV_FLOAT)
    return path


def write_png(out, name: str, fig) -> Path:
    """Save ``fig`` as ``name``.png (150 dpi; the environment variable MDM_PNG_DPI overrides it, which the
    tests' --quick runs use to save rendering time) under ``out`` and close it."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=int(os.environ.get("MDM_PNG_DPI", 150)), bbox_inches="tight")
    plt.close(fig)
    return path


def write_json(out, name: str, settings: dict) -> Path:
    """Write ``name``.json: every setting of the run plus dtype and package versions."""
    import jax
    import numpy as np
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **settings,
        "dtype": "float64",
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "pandas_version": pd.__version__,
        "python": platform.python_version(),
        "package_version": _version(),
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_outputs(out, name: str, frame, fig, settings: dict) -> dict:
    """Write ``name``.csv, ``name``.png and ``name``.json; returns their paths."""
    return {
        "csv": write_csv(out, name, frame),
        "png": write_png(out, name, fig),
        "json": write_json(out, name, settings),
    }


def read_csvs(out, *names: str) -> list:
    """The committed (or freshly written) ``name``.csv files under ``out``, for a script's ``replot``; a missing
    file is a FileNotFoundError that says which script to run."""
    import pandas as pd

    frames = []
    for name in names:
        path = Path(out) / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the script that writes it (experiments/make_all.py).")
        frames.append(pd.read_csv(path))
    return frames


def read_settings(out, name: str) -> dict:
    """The settings JSON ``name``.json under ``out`` (what the run that wrote the CSVs used)."""
    return json.loads((Path(out) / f"{name}.json").read_text())


def _version() -> str:
    try:
        import theory

        return theory.__version__
    except Exception:  # pragma: no cover
        return "unknown"
