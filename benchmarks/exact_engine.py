"""Size / time / memory of the exact engine.

For V in {2, 3, 4} and growing L: time and peak memory (max RSS of a fresh process) of
(a) the cylinder-sum table behind the exact denoiser, (b) the full denoiser table ((V+1)**L, L, V) where
it fits, and (c) exact_law's frontier engine (``engine="frontier"``) with N = 4 random-order fixed-count steps (linear
schedule); exact_law itself now takes the layered engine there (benchmarks/exact_layers.py measures it). Stops growing L
when a run exceeds --max-seconds or the next instance would not fit in --max-gib. Also times the
plain-Python reference law (theory.reference) on small instances and prints the speed ratio.

    python benchmarks/exact_engine.py [--max-seconds 60] [--max-gib 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from synthetic import languages
from theory.denoiser import exact_denoiser, cylinder_sums
from theory.sampling import exact_law
from theory.reference import reference_law
from theory import schedules
V, L, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
q = languages.dirichlet(jax.random.PRNGKey(0), V, L, 0.5)
out = {}
t = time.perf_counter(); C = cylinder_sums(q); C.block_until_ready(); out["cylinder_s"] = time.perf_counter() - t
if what == "table":
    t = time.perf_counter(); T = q.denoiser().table(); T.block_until_ready(); out["table_s"] = time.perf_counter() - t
elif what == "law":
    t = time.perf_counter(); law = exact_law(q, None, 4, engine="frontier"); out["law_cold_s"] = time.perf_counter() - t
    if out["law_cold_s"] < 30:  # second call: jitted helpers already compiled for these shapes
        t = time.perf_counter(); law = exact_law(q, None, 4, engine="frontier"); out["law_s"] = time.perf_counter() - t
    else:
        out["law_s"] = out["law_cold_s"]
    out["law_sum"] = float(law.probs.sum())
elif what == "reference":
    counts = schedules.fixed_counts(schedules.linear(), 4, L)
    t = time.perf_counter()
    ref = reference_law(np.asarray(q.probs), V, L, counts=counts)
    out["reference_s"] = time.perf_counter() - t
    exact_law(q, None, 4, engine="frontier")  # compile first: the comparison is of warm runs
    t = time.perf_counter(); law = exact_law(q, None, 4, engine="frontier"); out["law_s"] = time.perf_counter() - t
    out["max_abs_diff"] = float(np.max(np.abs(ref - np.asarray(law.probs))))
out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(out))
"""


def child(V, L, what, timeout):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(V), str(L), what],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--max-gib", type=float, default=8.0)
    ap.add_argument("--vocab", type=int, nargs="+", default=[2, 3, 4])
    args = ap.parse_args()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        "| V | L | (V+1)^L states | cylinder s | table s | exact_law N=4, first call s | warm s | peak RSS GiB (law) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for V in args.vocab:
        L = 2
        while True:
            states = (V + 1) ** L
            table_gib = 8 * states * L * V / 2**30
            law_gib_est = 8 * states * 6 / 2**30  # frontier + dense accumulator, a rough floor
            if law_gib_est > args.max_gib:
                break
            tab = child(V, L, "table", args.max_seconds) if table_gib < args.max_gib / 2 else None
            law = child(V, L, "law", args.max_seconds * 3)
            if law is None or "error" in law:
                print(f"| {V} | {L} | {states} | - | - | > {args.max_seconds * 3:.0f} s or error {law} | - | - |")
                break
            ts = f"{tab['table_s']:.3g}" if tab and "table_s" in tab else "skipped"
            print(
                f"| {V} | {L} | {states:,} | {law['cylinder_s']:.3g} | {ts} | {law['law_cold_s']:.3g} "
                f"| {law['law_s']:.3g} | {law['peak_rss_gib']:.2f} |",
                flush=True,
            )
            if law["law_s"] > args.max_seconds:
                break
            L += 1
    print()
    print("| V | L | plain-Python reference s | exact_law s | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for V, L in [(2, 4), (2, 6), (2, 8), (3, 4), (3, 5)]:
        r = child(V, L, "reference", 600)
        print(
            f"| {V} | {L} | {r['reference_s']:.3g} | {r['law_s']:.3g} | {r['reference_s'] / r['law_s']:.0f}x "
            f"| {r['max_abs_diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
