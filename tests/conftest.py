"""Test configuration: float64 JAX, hypothesis profile, shared helpers."""

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Tests are compile-bound (each new shape compiles): LLVM's optimisation level 0 compiles about 20% faster and
# runs the same IEEE float64 arithmetic (the scripts' quick CSVs are byte-identical). Benchmarks and scripts keep
# XLA's default. Set before JAX starts its backend; appended to any XLA_FLAGS the user gives.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# One persistent compilation cache per test run, shared by the xdist workers: both compile many of the same
# functions for the same shapes (about 8% of the suite's CPU time). The controller makes a fresh folder (the
# workers inherit its path) and removes it at the end, so a run never reuses an earlier run's compilations;
# set MDM_TEST_JAX_CACHE yourself to keep a cache across runs (it is then never removed).
_OWN_CACHE = "MDM_TEST_JAX_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["MDM_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="mdm-test-jax-cache-")
JAX_CACHE = Path(os.environ["MDM_TEST_JAX_CACHE"])
jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "mdm",
    deadline=None,  # JAX compiles on the first example
    max_examples=5,  # every example of a new shape compiles; slow twins and the explore profile draw more
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # CI runs are reproducible; run with --hypothesis-profile=explore to search afresh
)
settings.register_profile("explore", parent=settings.get_profile("mdm"), derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mdm"))


def assert_close(actual, desired, rtol=1e-10, atol=0.0, err_msg=""):
    """assert_allclose that also requires matching shapes."""
    a, d = np.asarray(actual), np.asarray(desired)
    assert a.shape == d.shape, f"shape mismatch {a.shape} vs {d.shape} {err_msg}"
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=err_msg)


# ---- the experiment scripts: experiments/ is not an installed package, so scripts are imported by path ----
ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"


def load_script(name: str, module_name: str | None = None):
    """Import experiments/<name>.py as a module (``module_name`` distinguishes several imports of one script)."""
    spec = importlib.util.spec_from_file_location(module_name or f"_script_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses (and pickling) look their module up there
    spec.loader.exec_module(mod)
    return mod


def run_quick(script, tmp_path_factory, *args: str):
    """``script.main(["--quick", *args, "--out", <fresh folder>])`` in-process without progress bars, PNGs at 40 dpi;
    returns (folder, whatever main returned). Used by module-scoped fixtures: one quick run per test module."""
    out = tmp_path_factory.mktemp(f"{script.__name__}_quick")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDM_NO_PROGRESS", "1")
        mp.setenv("MDM_PNG_DPI", "40")  # the committed figures come from default runs at 150 dpi
        res = script.main(["--quick", *args, "--out", str(out)])
    return out, res


# ---- scheduling: xdist's loadfile hands out files in collection order, so the longest go first --------------
#: test files by measured default-suite time (s, 2 quiet cores, 2026-11-30), longest first; others follow
LONGEST_FIRST = ("test_orders", "test_eb", "test_anyprocess", "test_feng2025", "test_sampling", "test_energy",
                 "test_sampling_speed_paths", "test_chains", "test_variance", "test_models", "test_variance_reduction",
                 "test_elbo", "test_train", "test_tasks", "test_sparse_chain")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: order within a file kept


def one_row(frame, **kw):
    """The single row of ``frame`` whose columns equal ``kw`` (asserts there is exactly one)."""
    sel = np.ones(len(frame), bool)
    for k, v in kw.items():
        sel &= frame[k].to_numpy() == v
    assert sel.sum() == 1, (kw, int(sel.sum()))
    return frame[sel].iloc[0]


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(JAX_CACHE, ignore_errors=True)
