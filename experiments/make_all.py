"""Regenerate every figure, then the generated tables of paper_repro.md: one command.

    python experiments/make_all.py            # every script at its default settings -> figures/ (tens of minutes)
    python experiments/make_all.py --quick    # every script's seconds-long version -> build/quick-figures/
    python experiments/make_all.py --only eb_sampler,kl_vs_steps --jobs 2
    python experiments/make_all.py --replot   # redraw every PNG from the CSVs in figures/ (seconds; no recomputation)

Each script under ``experiments/`` (every ``*.py`` except this one and the ``_private`` modules) runs in its
own Python process with ``--out`` set, so one failing script cannot take the others down: its outputs
are whatever it wrote, the others' outputs stay, and the run ends with a message naming every script
that failed, its exit code, its log file and the last lines of its log (exit status 1).

``--replot`` calls each script's ``replot(out)`` instead, in this process: the PNGs are redrawn from the CSVs
already in ``--out`` in the current figure style (:mod:`experiments._style`), which is how the committed
figures follow a style change without re-running hours of experiments. A script without ``replot`` (it writes
no figure) is reported as skipped.

After a default run into ``figures/`` the tables between ``<!-- generated: NAME -->`` markers in
``paper_repro.md`` are rewritten from the CSVs (:mod:`experiments.repro_tables`); a ``--quick`` run never
touches them (its numbers are not the committed ones). Logs (stdout + stderr of each script) and a JSON
summary with each script's status and wall time go to ``--logs`` (default ``build/make_all/``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import _common  # noqa: E402

HERE = Path(__file__).resolve().parent
NOT_SCRIPTS = {"make_all", "repro_tables"}


def discover(folder: Path = HERE) -> list[Path]:
    """The experiment scripts in ``folder``: every ``*.py`` but this one, ``repro_tables`` and ``_private``
    modules, in alphabetical order."""
    return sorted(p for p in Path(folder).glob("*.py") if not p.stem.startswith("_") and p.stem not in NOT_SCRIPTS)


@dataclass
class Result:
    """How one script ended: ``status`` is "ok" or "failed" (``returncode`` != 0, or a timeout)."""

    script: str
    status: str
    returncode: int
    seconds: float
    log: str
    tail: str = ""


def run_script(path: Path, out: Path, logs: Path, quick: bool, timeout: float | None = None) -> Result:
    """Run one script as ``python <path> [--quick] --out <out>`` with its progress bar off; stdout and stderr
    go to ``logs/<name>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{path.stem}.log"
    cmd = [sys.executable, str(path), *(["--quick"] if quick else []), "--out", str(out)]
    env = {**os.environ, "MDM_NO_PROGRESS": "1"}  # one overall bar here instead of one per script
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\nmake_all: timed out after {timeout} s\n")
            rc = -9
    seconds = time.perf_counter() - t0
    if rc == 0:
        return Result(path.stem, "ok", 0, seconds, str(log))
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return Result(path.stem, "failed", rc, seconds, str(log), tail)


def replot_script(path: Path, out: Path) -> Result:
    """Import the script and call its ``replot(out)`` (PNGs from the CSVs in ``out``)."""
    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location(f"_replot_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        if not callable(getattr(mod, "replot", None)):
            return Result(path.stem, "skipped", 0, time.perf_counter() - t0, "", "no replot(): writes no figure")
        mod.replot(out)
    except Exception:
        tail = "\n".join(traceback.format_exc().splitlines()[-15:])
        return Result(path.stem, "failed", 1, time.perf_counter() - t0, "(in-process replot)", tail)
    return Result(path.stem, "ok", 0, time.perf_counter() - t0, "(in-process replot)")


def run_all(
    scripts: list[Path], out: Path, *, quick: bool, logs: Path, jobs: int = 1, timeout: float | None = None
) -> list[Result]:
    """Run ``scripts`` (``jobs`` at a time) with an overall progress bar; returns one :class:`Result` each,
    in the order given. A failure does not stop the others."""
    out.mkdir(parents=True, exist_ok=True)
    bar = _common.progress(range(len(scripts)), "make_all", unit="script")
    results: dict[str, Result] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_script, p, out, logs, quick, timeout): p for p in scripts}
        for fut in futures:  # in submission order; with jobs > 1 later ones run meanwhile
            r = fut.result()
            results[r.script] = r
            bar.set_postfix_str(f"{r.script}: {r.status} ({r.seconds:.0f} s)")
            bar.update(1)
    bar.close()
    return [results[p.stem] for p in scripts]


def failure_message(results: list[Result]) -> str:
    """The closing message naming every failed script (empty if none failed)."""
    failed = [r for r in results if r.status == "failed"]
    if not failed:
        return ""
    lines = [f"make_all: {len(failed)} of {len(results)} scripts FAILED (the others' outputs are in place):"]
    for r in failed:
        lines.append(f"  {r.script}: exit code {r.returncode} after {r.seconds:.0f} s; full log: {r.log}")
        lines.extend("    | " + s for s in r.tail.splitlines())
    return "\n".join(lines)


def select(scripts: list[Path], only: str | None, skip: str | None) -> list[Path]:
    """Filter by comma-separated script names; an unknown name is a ValueError listing the known ones."""
    names = {p.stem for p in scripts}
    chosen = scripts
    for flag, value in (("--only", only), ("--skip", skip)):
        if not value:
            continue
        asked = [s.strip().removesuffix(".py") for s in value.split(",") if s.strip()]
        unknown = sorted(set(asked) - names)
        if unknown:
            raise ValueError(f"{flag}: unknown script(s) {unknown}; the scripts are {sorted(names)}.")
        keep = set(asked)
        chosen = [p for p in chosen if (p.stem in keep) == (flag == "--only")]
    return chosen


def main(argv=None) -> list[Result]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every script's seconds-long version")
    p.add_argument("--out", type=Path, default=None, help="output folder (default figures/, or build/quick-figures/)")
    p.add_argument("--only", default=None, help="comma-separated script names to run (default: all)")
    p.add_argument("--skip", default=None, help="comma-separated script names to leave out")
    p.add_argument("--jobs", type=int, default=1, help="scripts run at the same time (each may use every core)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a script counts as failed")
    p.add_argument("--logs", type=Path, default=_common.ROOT / "build" / "make_all", help="log folder")
    p.add_argument("--scripts-dir", type=Path, default=HERE, help=argparse.SUPPRESS)  # the tests' fake scripts
    p.add_argument("--no-tables", action="store_true", help="do not rewrite paper_repro.md's generated tables")
    p.add_argument("--replot", action="store_true", help="only redraw the PNGs from the CSVs already in --out")
    args = p.parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}.")
    out = args.out or (_common.ROOT / "build" / "quick-figures" if args.quick else _common.FIGURES)
    scripts = select(discover(args.scripts_dir), args.only, args.skip)
    if args.replot:
        if args.quick:
            raise ValueError("--replot redraws existing outputs; it takes no --quick.")
        results = [replot_script(path, out) for path in _common.progress(scripts, "replot", unit="script")]
    else:
        results = run_all(scripts, out, quick=args.quick, logs=args.logs, jobs=args.jobs, timeout=args.timeout)
    args.logs.mkdir(parents=True, exist_ok=True)
    summary = {"quick": args.quick, "out": str(out), "results": [asdict(r) for r in results]}
    (args.logs / "make_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        print(f"{r.status:>6}  {r.seconds:8.1f} s  {r.script}")
    tables_ok = True
    if not args.quick and not args.no_tables and Path(out).resolve() == _common.FIGURES.resolve():
        from experiments import repro_tables

        try:
            changed = repro_tables.update(_common.ROOT / "paper_repro.md", out)
            print(f"paper_repro.md: {len(changed)} generated table(s) rewritten" if changed else "paper_repro.md: same")
        except Exception as exc:  # a missing CSV (its script failed) must not hide the scripts' report
            tables_ok = False
            print(f"make_all: paper_repro.md tables NOT updated: {exc}", file=sys.stderr)
    msg = failure_message(results)
    if msg:
        print(msg, file=sys.stderr)
    if msg or not tables_ok:
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
