"""Benchmark: generated tokens per second of the Monte-Carlo MDM sampler with exact Markov conditionals.

Sampler: the core's :func:`theory.sampling.sample` (jit + vmap, float64 inverse-CDF draws, PRNG keys
folded per step) with ``RandomOrder`` and fixed counts from the linear schedule (N steps), driven by
the exact Markov-chain denoiser of :mod:`synthetic.chain_oracle` (``marginals_at``: conditionals at the
revealed positions from matrix powers and the nearest visible neighbours). For comparison the same
sampler (same order-based reveal, same conditionals, same tables) written in plain numpy runs in the
same process.

Policies (``--policies``, default all three): ``random`` (RandomOrder, the static-order path: conditionals
only at the revealed positions), ``topk`` (TopK("confidence"), the schedule's counts) and ``eb``
(EntropyBounded with the entropy proxy; it chooses its own counts, so gamma is set to (L/N - 1) times the
chain's entropy rate, about L/N tokens per step; the ``nfe`` column says how many steps it took). Top-k and
EB need every masked position's conditional at every step (the full ``marginals``) and take the ranked
path; ``--path general`` times the general path they replaced (the "before" of issue 14).

Grid: L in {64, 256, 1024, 4096}, N in {4, 64, L}, |V| in {2, 8, 32}; batch B = max(1, 2**18 // L)
sequences per call (fewer if a run would exceed the time budget). Timings exclude compilation (one
warm-up call first) and are the best of ``--repeats`` calls. A configuration whose estimated run time
exceeds ``--budget`` seconds is skipped and marked so.

    PYTHONPATH=. python benchmarks/monte_carlo.py            # full grid
    PYTHONPATH=. python benchmarks/monte_carlo.py --quick    # L in {64, 256}, N in {4, 64}, V = 8
    PYTHONPATH=. python benchmarks/monte_carlo.py --lengths 1024 --steps 64 --vocab 8   # issue 14's size
    XLA_FLAGS=--xla_force_host_platform_device_count=2 PYTHONPATH=. python benchmarks/monte_carlo.py --devices 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np
import pandas as pd


def numpy_sampler(rng, left, right, counts, num, V, L, positive=False):
    """Plain-numpy version of the same sampler: uniform random order, ``counts[n]`` tokens at step n,
    exact Markov conditionals at the revealed positions (nearest visible neighbours + matrix-power
    tables, uniform if the state is impossible), float64 inverse-CDF draws."""
    B = num
    rows = np.arange(B)[:, None]
    perm = np.argsort(rng.random((B, L)), axis=1)  # uniform random orders
    states = np.full((B, L), V, dtype=np.int64)
    idx = np.arange(L)
    leftflat = left.reshape(-1)
    r = 0
    for c in counts:
        c = int(c)
        if c == 0:
            continue
        vis = states != V
        tok = np.where(vis, states, 0)
        le = np.maximum.accumulate(np.where(vis, idx, -1), axis=1)
        ri = np.minimum.accumulate(np.where(vis, idx, L)[:, ::-1], axis=1)[:, ::-1]
        a_all = np.concatenate([np.full((B, 1), -1), le[:, :-1]], axis=1)
        b_all = np.concatenate([ri[:, 1:], np.full((B, 1), L)], axis=1)
        if positive:  # all transitions positive: every state is possible (same shortcut as the JAX denoiser)
            ok = np.ones(B, bool)
        else:  # possibility check: every visible token has positive probability given its left neighbour
            xa_all = tok[rows, np.maximum(a_all, 0)]
            lrow_all = np.where(a_all >= 0, (idx - a_all) * V + xa_all, (L + 1) * V + idx)
            ok = np.all(~vis | (leftflat[lrow_all * V + tok] > 0), axis=1)
        pos = perm[:, r : r + c]  # (B, c)
        a, b = a_all[rows, pos], b_all[rows, pos]
        lrow = np.where(a >= 0, (pos - a) * V + tok[rows, np.maximum(a, 0)], (L + 1) * V + pos)
        rrow = np.where(b < L, (b - pos) * V + tok[rows, np.minimum(b, L - 1)], (L + 1) * V)
        num_ = left[lrow] * right[rrow]  # (B, c, V)
        cdf = np.cumsum(num_, axis=-1)
        cdf = np.where(ok[:, None, None] & (cdf[..., -1:] > 0), cdf, np.arange(1, V + 1) / V)
        u = rng.random((B, c, 1))
        vals = np.minimum(np.sum(cdf <= u * cdf[..., -1:], axis=-1), V - 1)
        states[rows, pos] = vals
        r += c
    return states


POLICIES = ("random", "topk", "eb")


def make_policy(name: str, lang, L: int, N: int):
    """The benchmark's policy objects (see the module docstring for EB's gamma)."""
    from theory import policies

    if name == "random":
        return policies.RandomOrder()
    if name == "topk":
        return policies.TopK("confidence")
    return policies.EntropyBounded(max(L / N - 1.0, 0.0) * lang.entropy_rate())


CPU_S: list = []  # process CPU seconds of the best wall-clock call of the last _time


def _time(fn, repeats):
    """Best wall-clock time of ``repeats`` calls (also records that call's process CPU time in ``CPU_S``: on
    a loaded machine, tokens per CPU second is the steadier measure of the work)."""
    best, cpu = np.inf, np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - t, time.process_time() - c
        if w < best:
            best, cpu = w, c
    CPU_S[:] = [cpu]
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=20.0, help="skip a configuration estimated to take longer (s)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2**18, help="target generated tokens per timed call")
    ap.add_argument("--devices", type=int, default=1, help="shard the batch over this many JAX devices")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--lengths", type=int, nargs="*", default=None, help="override the grid of L")
    ap.add_argument(
        "--steps", type=str, nargs="*", default=None, help="override the grid of N ('L' = one token per step)"
    )
    ap.add_argument("--vocab", type=int, nargs="*", default=None, help="override the grid of |V|")
    ap.add_argument("--out", default=None, help="optional CSV path for the table")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES), help="policies to time")
    ap.add_argument("--path", default="auto", choices=["auto", "general"], help="sampler path (general: the old one)")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    from synthetic import languages
    from theory import policies, sampling, schedules

    lengths = args.lengths or ([64, 256] if args.quick else [64, 256, 1024, 4096])
    vocab = args.vocab or ([8] if args.quick else [2, 8, 32])
    key = jax.random.PRNGKey(args.seed)
    sharding = None
    if args.devices > 1:
        sharding = sampling.batch_sharding(args.devices)
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"{jax.device_count()} device(s) ({jax.devices()[0].platform}), sharded over {args.devices}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    rows = []
    for L in lengths:
        if args.steps:
            steps_list = [L if x == "L" else int(x) for x in args.steps]
        else:
            steps_list = [4, 64] if args.quick else [4, 64, L]
        for N in sorted(set(steps_list)):
            for V in vocab:
                for pname in args.policies:
                    lang = languages.random_markov(jax.random.fold_in(key, L * 1000 + V), V, L, 1.0)
                    d = lang.denoiser()
                    policy = make_policy(pname, lang, L, N)
                    plan = sampling.make_plan(policies.RandomOrder(), L, N, reveal="fixed", schedule=schedules.linear())
                    counts = plan.values
                    B = max(args.devices, args.tokens // L)
                    B -= B % args.devices

                    def run_jax(b, k):
                        s = sampling.sample(k, d, policy, N, num=b, sharding=sharding, path=args.path)
                        nfe.append(float(np.mean(np.asarray(s.nfe))))
                        return jax.block_until_ready(s.tokens)

                    nfe: list = []
                    row = {"policy": pname, "path": args.path, "L": L, "N": N, "V": V}
                    # probe with a small batch (includes compilation for that shape), then size the batch
                    b0 = max(args.devices, min(B, 8))
                    t = time.perf_counter()
                    run_jax(b0, key)
                    compile_s = time.perf_counter() - t
                    t0 = _time(lambda: run_jax(b0, jax.random.fold_in(key, 1)), 1)
                    est = t0 * B / b0
                    if est > args.budget:
                        B = max(b0, int(b0 * args.budget / max(t0, 1e-9) / 2))
                        B -= B % args.devices
                    if t0 > args.budget:
                        row.update(batch=b0, jax_s=np.nan, jax_tok_s=np.nan, note=f"skipped: > {args.budget:g} s")
                        rows.append(row)
                        print(row, flush=True)
                        continue
                    run_jax(B, key)  # compile for the full batch shape
                    tj = _time(lambda: run_jax(B, jax.random.fold_in(key, 2)), args.repeats)
                    row.update(
                        batch=B,
                        compile_s=round(compile_s, 2),
                        jax_s=tj,
                        jax_tok_s=B * L / tj,
                        cpu_tok_s=B * L / CPU_S[0],
                        nfe=nfe[-1],
                        note="",
                    )
                    if not args.no_numpy and pname == "random":
                        left, right = np.asarray(d.left), np.asarray(d.right)
                        rng = np.random.default_rng(args.seed)
                        bn = max(1, min(B, 8))
                        tn0 = _time(lambda: numpy_sampler(rng, left, right, counts, bn, V, L, d.positive), 1)
                        bnum = B if tn0 * B / bn <= args.budget else max(bn, int(bn * args.budget / max(tn0, 1e-9) / 2))
                        if tn0 > args.budget:
                            row.update(numpy_tok_s=np.nan, note=f"numpy skipped: > {args.budget:g} s")
                        else:
                            tn = _time(lambda: numpy_sampler(rng, left, right, counts, bnum, V, L, d.positive), 1)
                            row.update(numpy_batch=bnum, numpy_tok_s=bnum * L / tn)
                            row["speedup"] = row["jax_tok_s"] / row["numpy_tok_s"]
                    rows.append(row)
                    print({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    df = pd.DataFrame(rows)
    cols = [
        c
        for c in [
            "policy",
            "path",
            "L",
            "N",
            "V",
            "batch",
            "jax_tok_s",
            "cpu_tok_s",
            "nfe",
            "numpy_batch",
            "numpy_tok_s",
            "speedup",
            "compile_s",
            "note",
        ]  # fmt: skip
        if c in df
    ]
    print()
    print(df[cols].to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else df[cols].to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    return df


def _has_tabulate():
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
