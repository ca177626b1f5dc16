"""BenHamu2025: accuracy versus expected NFE for entropy-bounded (EB) unmasking and Top-k.

Tasks (synthetic.tasks): a random sparse Markov language, copy pairs, 4x4 Sudoku completion (exact laws)
and the empty 4x4 Sudoku grid (Monte Carlo). Denoisers: the exact one and a deliberately imperfect one,
p = (1 - eps) q + eps / V (theory.denoiser.smoothed; per-token KL <= -log(1 - eps)). Proxies: confidence,
margin, entropy. Policies: EB over a gamma sweep and Top-k over k (k = 1: one token per step).

Each point is one library call: synthetic.tasks.evaluate_sampler (exact law: expected NFE, accuracy =
1 - SER, KL and BenHamu2025's decomposition) or evaluate_sampler_mc (means and standard errors, key
experiments._common.point_key(seed, *labels)). The headline, the NFE reduction at equal accuracy versus
one token per step, is theory.metrics.nfe_speedups (MC rows: within 2 SE of the difference).

Writes eb_sampler.{csv,png,json} and eb_sampler_speedup.csv under --out (default figures/).

    python experiments/eb_sampler.py             # default run, about 4 minutes on 2 cores
    python experiments/eb_sampler.py --quick     # seconds; every task kind, policy, proxy and denoiser
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

GAMMAS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 1.5, float("inf")]
GAMMAS_QUICK = [0.0, 0.5, float("inf")]
EPS = 0.05  # smoothing of the imperfect denoiser
NUM = 2000  # Monte-Carlo samples per point (quick: NUM_QUICK)
NUM_QUICK = 200
TOLERANCES = (0.0, 0.01)
POLICIES = ("EB", "TopK")
PAPER_SPEEDUP = "2-3x (up to 4x) on LLaDA-8B / Dream-7B code and math"
# figure: colour = policy (experiments._common.style), line style and marker = proxy
PROXY_LINE = {"confidence": "-", "margin": "--", "entropy": ":"}
PROXY_MARKER = {"confidence": "o", "margin": "^", "entropy": "s"}


class Config(NamedTuple):
    """One measured point: its CSV labels, the objects it runs, and the labels of its PRNG key."""

    task_name: str
    method: str  # "exact" (enumerated law) | "mc"
    denoiser_name: str
    policy_name: str  # "EB" | "TopK"
    proxy: str
    param: float  # gamma (EB) or k (TopK)
    task: Any
    denoiser: Any
    policy: Any
    labels: tuple  # point_key(seed, *labels) for Monte-Carlo points


def build_tasks(quick: bool, seed: int) -> list:
    """(name, Task, method) of the run; quick: the same kinds at the smallest sizes."""
    from synthetic import tasks

    key = _common.point_key(seed)
    if quick:
        return [
            ("markov", tasks.markov_task(key, 3, 4, concentration=0.5, forbid=0.6), "exact"),
            ("copy_pairs", tasks.copy_pairs_task(4), "exact"),
            ("sudoku", tasks.sudoku_task(num_blanks=5, seed=seed, min_solutions=2), "exact"),
            ("sudoku_mc", tasks.sudoku_task(num_blanks=8, seed=seed, min_solutions=2), "mc"),
        ]
    import numpy as np

    return [
        ("markov", tasks.markov_task(key, 4, 7, concentration=0.5, forbid=0.5), "exact"),
        ("copy_pairs", tasks.copy_pairs_task(8), "exact"),
        ("sudoku", tasks.sudoku_task(num_blanks=8, seed=seed, min_solutions=3), "exact"),
        ("sudoku_mc", tasks.sudoku_task(np.full(16, -1)), "mc"),
    ]


def ks_for(length: int, quick: bool, method: str = "exact") -> list:
    """Top-k's k values: 1 (the baseline), 2, 3, 4, L/2 and L. Quick: 1 and L for exact laws, only 1 for
    Monte Carlo (each k compiles the sampler once; k > 1 runs through the same code as k = 1)."""
    if quick:
        return [1, length] if method == "exact" else [1]
    return [k for k in sorted({1, 2, 3, 4, length // 2, length}) if 1 <= k <= length]


def proxies_for(task_index: int, quick: bool) -> tuple:
    """Every proxy on every task; quick: one per task, in rotation (all three appear)."""
    from theory.policies import PROXIES

    return (PROXIES[task_index % len(PROXIES)],) if quick else PROXIES


def grid(quick: bool, seed: int) -> list:
    """Every Config of the run, in CSV order (task, denoiser, proxy, EB gammas then Top-k ks)."""
    from theory import policies
    from theory.denoiser import smoothed

    gammas = GAMMAS_QUICK if quick else GAMMAS
    out = []
    for ti, (tname, task, method) in enumerate(build_tasks(quick, seed)):
        exact = task.denoiser()
        dens = [("exact", exact), (f"smoothed(eps={EPS})", smoothed(exact, EPS))]
        for di, (dname, den) in enumerate(dens):
            for proxy in proxies_for(ti, quick):
                pi = policies.PROXIES.index(proxy)
                for j, g in enumerate(gammas):
                    pol = policies.EntropyBounded(g, proxy)
                    out.append(Config(tname, method, dname, "EB", proxy, float(g), task, den, pol, (ti, di, pi, 0, j)))
                for j, k in enumerate(ks_for(task.length, quick, method)):
                    pol = policies.TopK(proxy, k=k)
                    out.append(
                        Config(tname, method, dname, "TopK", proxy, float(k), task, den, pol, (ti, di, pi, 1, j))
                    )
    return out


def measure(cfg: Config, seed: int, num: int, joints: dict):
    """The point's SamplerEval: the exact law, or Monte Carlo with the key of its labels."""
    from synthetic.tasks import evaluate_sampler, evaluate_sampler_mc

    if cfg.method == "exact":
        if cfg.task_name not in joints:  # one enumerated Joint per task: its exact denoiser is built once
            joints[cfg.task_name] = cfg.task.joint()
        return evaluate_sampler(cfg.task, cfg.policy, cfg.denoiser, joint=joints[cfg.task_name])
    return evaluate_sampler_mc(_common.point_key(seed, *cfg.labels), cfg.task, cfg.policy, cfg.denoiser, num=num)


def run(quick: bool, seed: int):
    """The tidy frame: one row per Config with its SamplerEval fields."""
    import pandas as pd

    num = NUM_QUICK if quick else NUM
    joints: dict = {}
    rows = []
    for cfg in _common.progress(grid(quick, seed), "eb_sampler"):
        rows.append(
            {
                "task": cfg.task_name,
                "task_detail": cfg.task.name,
                "length": cfg.task.length,
                "vocab_size": cfg.task.vocab_size,
                "method": cfg.method,
                "denoiser": cfg.denoiser_name,
                "policy": cfg.policy_name,
                "proxy": cfg.proxy,
                "param": cfg.param,
                **measure(cfg, seed, num, joints).as_dict(),
            }
        )
    return pd.DataFrame(rows)


def speedups(frame):
    """The headline table: theory.metrics.nfe_speedups per (task, denoiser, proxy) at TOLERANCES."""
    from theory.metrics import nfe_speedups

    return nfe_speedups(frame, TOLERANCES, by=("task", "denoiser", "proxy"))


def pareto_front(g):
    """Best accuracy at NFE <= x: the points of ``g`` (nfe, accuracy) that raise the running maximum."""
    g = g.sort_values(["nfe", "accuracy"], ascending=[True, False])
    best = g["accuracy"].cummax()
    return g[g["accuracy"] >= best.shift(fill_value=-1.0) + 1e-12]


def plot(frame, sp):
    import matplotlib.pyplot as plt

    from theory.policies import PROXIES

    tasks_ = list(dict.fromkeys(frame.task))
    dens = list(dict.fromkeys(frame.denoiser))
    fig, axes = plt.subplots(len(tasks_), len(dens), figsize=_style.figsize(len(dens), len(tasks_), 1.2), squeeze=False)
    for i, t in enumerate(tasks_):
        for j, d in enumerate(dens):
            ax = axes[i, j]
            panel = frame[(frame.task == t) & (frame.denoiser == d)]
            xmax = float(panel.nfe.max())
            for pol in POLICIES:
                color = _common.style(pol)["color"]
                for proxy in PROXIES:
                    g = panel[(panel.policy == pol) & (panel.proxy == proxy)]
                    if g.empty:
                        continue
                    mk = PROXY_MARKER[proxy]
                    ax.errorbar(g.nfe, g.accuracy, yerr=2 * g.accuracy_se, xerr=2 * g.nfe_se, ls="none", marker=mk,
                                ms=4, color=color, alpha=0.3, elinewidth=0.8)  # fmt: skip
                    f = pareto_front(g)
                    xs, ys = list(f.nfe) + [xmax], list(f.accuracy) + [f.accuracy.iloc[-1]]
                    ax.plot(xs, ys, drawstyle="steps-post", color=color, ls=PROXY_LINE[proxy], lw=1.6,
                            label=f"{pol}, {proxy}")  # fmt: skip
                    ax.plot(f.nfe, f.accuracy, ls="none", marker=mk, ms=4, color=color)
            s = sp[(sp.task == t) & (sp.denoiser == d) & (sp.tolerance == 0) & (sp.policy == "EB")]
            gain = " / ".join(f"{v:.2f}" for v in s.speedup)
            first = panel.iloc[0]
            law = "exact law" if first.method == "exact" else f"Monte Carlo, n = {int(first.n)}"
            ax.set_title(f"{first.task_detail}, {d} denoiser, {law}\nEB speed-up at equal accuracy: {gain}×",
                         fontsize=8)  # fmt: skip
            ax.set_xlabel(_style.label("expected_nfe"))
            ax.set_ylabel(_style.label("accuracy"))
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(loc="lower right")
    fig.suptitle(
        "BenHamu2025: accuracy/NFE Pareto fronts (best accuracy at NFE ≤ x); faint markers: every point, "
        "error bars 2 SE (MC)\nspeed-ups: one token per step (Top-k, k = 1) NFE / EB's smallest NFE at its "
        f"accuracy, per proxy ({' / '.join(PROXIES)})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    frame = run(args.quick, args.seed)
    sp = speedups(frame)
    settings = {
        "script": "experiments/eb_sampler.py",
        "quick": bool(args.quick),
        "seed": args.seed,
        "gammas": GAMMAS_QUICK if args.quick else GAMMAS,
        "topk_ks": {t: ks_for(int(L), args.quick, m) for t, L, m in zip(frame.task, frame.length, frame.method)},
        "smoothing_eps": EPS,
        "mc_samples": NUM_QUICK if args.quick else NUM,
        "mc_keys": "experiments._common.point_key(seed, task, denoiser, proxy, policy, param index)",
        "tasks": list(dict.fromkeys(frame.task_detail)),
        "tolerances": list(TOLERANCES),
        "paper_speedup": PAPER_SPEEDUP,
        "speedup_definition": "theory.metrics.nfe_speedups: NFE(Top-k, k=1) / min NFE with accuracy >= "
        "accuracy(Top-k, k=1, same task/denoiser/proxy) - tolerance - 2 SE of the difference (MC) - 1e-9",
    }
    paths = _common.write_outputs(args.out, "eb_sampler", frame, plot(frame, sp), settings)
    paths["speedup_csv"] = _common.write_csv(args.out, "eb_sampler_speedup", sp)
    wide = sp.pivot_table(
        index=["task", "denoiser", "proxy", "tolerance", "baseline_accuracy"],
        columns="policy",
        values=["nfe", "speedup"],
        sort=False,
    )
    print(wide.round(3).to_string())
    print("wrote", *paths.values())
    return frame, sp


def replot(out=_common.FIGURES) -> dict:
    """Redraw eb_sampler.png from the CSVs in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    frame, sp = _common.read_csvs(out, "eb_sampler", "eb_sampler_speedup")
    return {"png": _common.write_png(out, "eb_sampler", plot(frame, sp))}


if __name__ == "__main__":
    main()
