"""Size / time / memory of exact_law's engines (issue 14, targets 1 and 2): the layered engine (value-blind
policies, fixed counts and Bernoulli reveal) and the sparse engine (Top-k, EB) against the frontier engine and
the plain-Python reference.

Every measurement runs in a fresh process (peak RSS is the whole process: Python + JAX + the cylinder
table). q is a Dirichlet(0.5) table over V**L; the plan is N = 4 steps of the linear schedule (fixed counts,
or Bernoulli reveal probabilities 1/4, 1/3, 1/2, 1); EB ignores it. "first call" includes building the
cylinder-sum table and JAX compilation; "warm" is the best of two further calls on the same Joint (one
process per row; a first call over 60 s is not repeated). The layered engine runs with its default threads
(at most 2) and, in the fixed-count table, with one thread. Last: the largest L whose first call finishes in
one minute, per policy. Timings on a shared machine vary with its load: the header prints the load average.

    PYTHONPATH=. python benchmarks/exact_layers.py [--lengths 10 12 14 16] [--bernoulli-lengths 12 14] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from math import comb
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from synthetic import languages
from theory import policies, schedules
from theory.sampling import exact_law
V, L, engine, policy, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
reveal, repeats = sys.argv[7], int(sys.argv[8])
pol = {"random": policies.RandomOrder(), "l2r": policies.LeftToRight(), "topk": policies.TopK("confidence"),
       "eb": policies.EntropyBounded(0.5)}[policy]
q = languages.dirichlet(jax.random.PRNGKey(0), V, L, 0.5)
out = {}
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
counts = schedules.fixed_counts(schedules.linear(), 4, L)
if engine == "reference":
    from theory.reference import reference_law
    t = time.perf_counter()
    order = "random" if policy == "random" else "left_to_right"
    ref = reference_law(np.asarray(q.probs), V, L, counts=counts, order=order)
    out["warm_s"] = out["first_s"] = time.perf_counter() - t
    law = exact_law(q, pol, 4)
    out["max_abs_diff_vs_layers"] = float(np.max(np.abs(ref - np.asarray(law.probs))))
    out["sum_minus_1"] = float(ref.sum() - 1)
else:
    if threads:
        import theory.exact_layers as E
        E.MAX_THREADS = threads
    t = time.perf_counter(); q.denoiser(); out["cylinder_s"] = time.perf_counter() - t
    out["rss_after_cylinder_gib"] = rss()
    t = time.perf_counter(); law = exact_law(q, pol, 4, engine=engine, reveal=reveal)
    out["first_s"] = time.perf_counter() - t + out["cylinder_s"]
    out["warm_s"] = out["first_s"] - out["cylinder_s"]
    out["warm_cpu_s"] = float("inf")
    for _ in range(repeats if out["first_s"] < 60 else 0):  # warm: best of `repeats` further calls
        t, c = time.perf_counter(), time.process_time()
        law = exact_law(q, pol, 4, engine=engine, reveal=reveal)
        out["warm_s"] = min(out["warm_s"], time.perf_counter() - t)
        out["warm_cpu_s"] = min(out["warm_cpu_s"], time.process_time() - c)
    p = np.asarray(law.probs)
    out["sum_minus_1"] = float(p.sum() - 1)
    out["nfe"] = law.expected_nfe
    np.save(sys.argv[6], p)
out["peak_rss_gib"] = rss()
print(json.dumps(out))
"""


def child(V, L, engine, policy="random", threads=0, timeout=1200, save="/dev/null", reveal="fixed", repeats=2):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, str(V), str(L), engine, policy, str(threads), save, reveal, str(repeats)]
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def transitions(V, L, counts):
    """sum_n binom(L, K) binom(L - K, k) V**(K + k): (state, reveal set, values) transitions of RandomOrder."""
    K, tot = 0, 0
    for k in counts:
        if k:
            tot += comb(L, K) * comb(L - K, k) * V ** (K + k)
            K += k
    return tot


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {ncpu} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, load average {load:.1f} at start"
    )


def fmt(r, key, spec=".3g"):
    if r is None or "error" in r:
        return "—" if r is None else r["error"]
    return format(r[key], spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 12, 13, 14, 15, 16])
    ap.add_argument("--vocab", type=int, default=2)
    ap.add_argument("--frontier-max", type=int, default=14, help="largest L run with the frontier engine")
    ap.add_argument("--reference-max", type=int, default=8, help="largest L run with theory.reference")
    ap.add_argument("--bernoulli-lengths", type=int, nargs="+", default=[10, 12, 13, 14])
    ap.add_argument("--bernoulli-frontier-max", type=int, default=12)
    ap.add_argument("--skip-search", action="store_true", help="skip the largest-L-in-one-minute search")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per Bernoulli / adaptive run")
    ap.add_argument("--max-length", type=int, default=19, help="largest L tried in the one-minute search")
    ap.add_argument("--skip-fixed", action="store_true", help="only the Bernoulli / adaptive and reference tables")
    ap.add_argument("--quick", action="store_true", help="L = 8, 10 only")
    args = ap.parse_args()
    import numpy as np

    lengths = [8, 10] if args.quick else args.lengths
    V = args.vocab
    print(f"# machine: {machine()}")
    print(f"# V = {V}, N = 4 (linear schedule, fixed counts), RandomOrder unless noted; times in s, RSS in GiB")
    print(
        "| L | counts | (V+1)^L | largest layer | transitions | layers first call | layers warm "
        "| layers warm, 1 thread | layers peak RSS | frontier warm | frontier peak RSS | max abs diff | sum − 1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for L in [] if args.skip_fixed else lengths:
        import jax

        jax.config.update("jax_enable_x64", True)
        from theory import schedules

        counts = schedules.fixed_counts(schedules.linear(), 4, L)
        K = np.cumsum(counts)
        largest = max(comb(L, int(k)) * V ** int(k) for k in K)
        lay = child(V, L, "layers", save=str(tmp / "layers.npy"))
        one = child(V, L, "layers", threads=1)
        fr = child(V, L, "frontier", save=str(tmp / "frontier.npy")) if L <= args.frontier_max else None
        diff = "—"
        if fr and "error" not in fr and lay and "error" not in lay:
            diff = f"{np.max(np.abs(np.load(tmp / 'layers.npy') - np.load(tmp / 'frontier.npy'))):.1e}"
        print(
            f"| {L} | {'-'.join(map(str, counts))} | {(V + 1) ** L:,} | {largest:,} | {transitions(V, L, counts):,} "
            f"| {fmt(lay, 'first_s')} | **{fmt(lay, 'warm_s')}** | {fmt(one, 'warm_s')} "
            f"| {fmt(lay, 'peak_rss_gib', '.2f')} "
            f"| {fmt(fr, 'warm_s')} | {fmt(fr, 'peak_rss_gib', '.2f')} | {diff} | {fmt(lay, 'sum_minus_1', '.1e')} |",
            flush=True,
        )
    print()
    print("# target 2: Bernoulli reveal (RandomOrder: layered engine) and adaptive policies (Top-k confidence with")
    print("# the schedule's counts, EB gamma = 0.5: sparse engine), each against the frontier engine; warm = best of 2")
    print("# CPU s: process time of the best warm call (all threads; robust to the load of the shared cores)")
    print(
        "| L | policy, reveal | engine | first call s | warm s | warm CPU s | peak RSS GiB | E[NFE] | sum − 1 "
        "| max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for L in [8, 10] if args.quick else args.bernoulli_lengths:
        runs = [("random", "bernoulli", "layers"), ("topk", "fixed", "sparse"), ("eb", "fixed", "sparse")]
        for pol, reveal, engine in runs:
            r = child(V, L, engine, pol, reveal=reveal, timeout=args.timeout, save=str(tmp / "new.npy"))
            fr = None
            if L <= (args.bernoulli_frontier_max if pol == "random" else args.frontier_max):
                fr = child(V, L, "frontier", pol, reveal=reveal, timeout=args.timeout, save=str(tmp / "old.npy"))
            rows = [(engine, r)] + ([("frontier", fr)] if fr is not None else [])
            diff = "—"
            if fr is not None and "error" not in fr and "error" not in r:
                diff = f"{np.max(np.abs(np.load(tmp / 'new.npy') - np.load(tmp / 'old.npy'))):.1e}"
            for eng, x in rows:
                print(
                    f"| {L} | {pol}, {reveal} | {eng} | {fmt(x, 'first_s')} | **{fmt(x, 'warm_s')}** "
                    f"| {fmt(x, 'warm_cpu_s')} "
                    f"| {fmt(x, 'peak_rss_gib', '.2f')} | {fmt(x, 'nfe', '.4g')} | {fmt(x, 'sum_minus_1', '.1e')} "
                    f"| {diff if eng != 'frontier' else ''} |",
                    flush=True,
                )
    print()
    print("# largest L whose first call (cylinder table + compilation + law) finishes within 60 s, one process per L")
    print("| policy, reveal | engine | L | first call s | peak RSS GiB |")
    print("|---|---|---|---|---|")
    starts = {"random": 12, "topk": 14, "eb": 14}
    for pol, reveal, engine in (
        []
        if args.skip_search
        else [("random", "bernoulli", "layers"), ("topk", "fixed", "sparse"), ("eb", "fixed", "sparse")]
    ):
        L = 8 if args.quick else starts[pol]
        while L <= (10 if args.quick else args.max_length):
            r = child(V, L, engine, pol, reveal=reveal, timeout=3 * 60, repeats=0)
            print(
                f"| {pol}, {reveal} | {engine} | {L} | {fmt(r, 'first_s')} | {fmt(r, 'peak_rss_gib', '.2f')} |",
                flush=True,
            )
            if "error" in r or r["first_s"] > 60:
                break
            L += 1
    print()
    print("| L | policy | plain-Python reference s | layers warm s | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for L in [L for L in (4, 6, 8) if L <= args.reference_max]:
        for pol in ("random", "l2r"):
            r = child(V, L, "reference", pol)
            lay = child(V, L, "layers", pol)
            if "error" in r or "error" in lay:
                print(f"| {L} | {pol} | {r.get('error', '')} | {lay.get('error', '')} | | |")
                continue
            print(
                f"| {L} | {pol} | {r['warm_s']:.3g} | {lay['warm_s']:.3g} | {r['warm_s'] / lay['warm_s']:.3g}x "
                f"| {r['max_abs_diff_vs_layers']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
