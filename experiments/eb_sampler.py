"""BenHamu2025: accuracy and KL versus expected NFE for entropy-bounded (EB) unmasking and Top-k.

For each task (random Markov language, copy pairs, 4x4 Sudoku completion with exact laws, and the
empty 4x4 Sudoku grid by Monte Carlo), each denoiser (the exact one and a deliberately imperfect one,
p = (1 - eps) q + eps / V, per-token KL <= -log(1 - eps)), each proxy (confidence, margin, entropy):

* EB over a gamma sweep and Top-k over k (k = 1 is one token per step);
* exact laws where (V+1)**L is enumerable — expected NFE, accuracy = 1 - SER (mass on valid answers),
  KL(q || p), and BenHamu2025's decomposition along q_phi (model error + dependence = KL for these
  deterministic policies; the entropy bound sum H - max H);
* Monte Carlo otherwise (mean NFE and accuracy with standard errors).

Reports the NFE reduction at equal accuracy relative to one token per step (Top-k with k = 1 and the
same proxy): L / (smallest expected NFE whose accuracy is >= that of k = 1 minus a tolerance), for EB and
for Top-k, next to the paper's 2-3x. Writes figures/eb_sampler.{csv,png,json} and
figures/eb_sampler_speedup.csv.

    python experiments/eb_sampler.py             # default run, about 3.5 minutes on 2 cores
    python experiments/eb_sampler.py --quick     # seconds-long version used by the tests
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments._common import parser, quiet_progress, setup, write_outputs  # noqa: E402

GAMMAS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 1.5, float("inf")]
GAMMAS_QUICK = [0.0, 0.5, float("inf")]
PAPER_SPEEDUP = "2-3x (up to 4x) on LLaDA-8B / Dream-7B code and math"


def build_tasks(quick: bool, seed: int):
    import jax

    from synthetic import tasks

    key = jax.random.PRNGKey(seed)
    if quick:
        return [
            ("markov", tasks.markov_task(key, 3, 4, concentration=0.5, forbid=0.6), "exact"),
            ("sudoku", tasks.sudoku_task(num_blanks=5, seed=seed, min_solutions=2), "exact"),
            ("sudoku_mc", tasks.sudoku_task(num_blanks=8, seed=seed, min_solutions=2), "mc"),
        ]
    return [
        ("markov", tasks.markov_task(key, 4, 7, concentration=0.5, forbid=0.5), "exact"),
        ("copy_pairs", tasks.copy_pairs_task(8), "exact"),
        ("sudoku", tasks.sudoku_task(num_blanks=8, seed=seed, min_solutions=3), "exact"),
        ("sudoku_mc", tasks.sudoku_task(np.full(16, -1)), "mc"),
    ]


def ks_for(L: int, quick: bool):
    ks = [1, L] if quick else sorted({1, 2, 3, 4, L // 2, L})
    return [k for k in ks if 1 <= k <= L]


def run_point(task, method, denoiser, policy, num, seed, joint):
    """One measured point: dict of nfe, accuracy (+ se), and for exact laws KL and the decomposition."""
    import jax

    from theory.dependence import error_decomposition
    from theory.metrics import mean_se
    from theory.sampling import sample

    if method == "exact":
        dec = error_decomposition(joint, policy, denoiser=denoiser)
        p = np.asarray(dec.law.probs)
        acc = float(p[np.asarray(joint.probs) > 0].sum())
        return {
            "nfe": dec.expected_nfe,
            "nfe_se": 0.0,
            "accuracy": acc,
            "accuracy_se": 0.0,
            "kl": dec.kl,
            "model_error": dec.model_error,
            "dependence": dec.dependence,
            "bound": dec.bound,
            "entropy_bound": dec.entropy_bound,
            "n": 0,
        }
    s = sample(jax.random.PRNGKey(seed), denoiser, policy, num=num)
    nfe = mean_se(np.asarray(s.nfe, dtype=np.float64))
    acc = mean_se(task.correct(np.asarray(s.tokens)).astype(np.float64))
    return {
        "nfe": nfe.mean,
        "nfe_se": nfe.se,
        "accuracy": acc.mean,
        "accuracy_se": acc.se,
        "kl": np.nan,
        "model_error": np.nan,
        "dependence": np.nan,
        "bound": np.nan,
        "entropy_bound": np.nan,
        "n": num,
    }


def speedups(df: pd.DataFrame, tols=(0.0, 0.01)) -> pd.DataFrame:
    """NFE reduction at equal accuracy vs one token per step (Top-k, k = 1, same proxy and denoiser)."""
    rows = []
    for (task, den, proxy), g in df.groupby(["task", "denoiser", "proxy"], sort=False):
        base = g[(g.policy == "TopK") & (g.param == 1)].iloc[0]
        for tol in tols:
            slack = tol + 1e-9 + 2 * np.hypot(base.accuracy_se, g.accuracy_se)  # MC: 2 SE of the difference
            ok = g[g.accuracy >= base.accuracy - slack]
            row = {
                "task": task,
                "denoiser": den,
                "proxy": proxy,
                "tolerance": tol,
                "L": int(base.length),
                "baseline_nfe": base.nfe,
                "baseline_accuracy": base.accuracy,
            }
            for pol in ("EB", "TopK"):
                o = ok[ok.policy == pol]
                best = o.loc[o.nfe.idxmin()] if len(o) else None
                row[f"{pol}_nfe"] = np.nan if best is None else best.nfe
                row[f"{pol}_param"] = np.nan if best is None else best.param
                row[f"{pol}_accuracy"] = np.nan if best is None else best.accuracy
                row[f"{pol}_speedup"] = np.nan if best is None else base.nfe / best.nfe
            rows.append(row)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    tasks_ = list(dict.fromkeys(df.task))
    dens = list(dict.fromkeys(df.denoiser))
    fig, axes = plt.subplots(len(tasks_), len(dens), figsize=(5 * len(dens), 3.2 * len(tasks_)), squeeze=False)
    colors = {"confidence": "C0", "margin": "C1", "entropy": "C2"}
    for i, t in enumerate(tasks_):
        for j, d in enumerate(dens):
            ax = axes[i, j]
            for (pol, proxy), g in df[(df.task == t) & (df.denoiser == d)].groupby(["policy", "proxy"]):
                g = g.sort_values("nfe")
                ax.errorbar(
                    g.nfe,
                    g.accuracy,
                    yerr=2 * g.accuracy_se,
                    xerr=2 * g.nfe_se,
                    color=colors[proxy],
                    ls="-" if pol == "EB" else "--",
                    marker="o" if pol == "EB" else "s",
                    ms=3,
                    label=f"{pol} {proxy}",
                )
            ax.set_title(f"{t} — {d} denoiser", fontsize=9)
            ax.set_xlabel("expected NFE")
            ax.set_ylabel("accuracy (1 - SER)")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle("BenHamu2025: EB (solid) vs Top-k (dashed); error bars 2 SE (MC rows)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    setup()
    from tqdm import tqdm

    from theory import policies
    from theory.denoiser import smoothed

    eps = 0.05
    num = 200 if args.quick else 2000
    gammas = GAMMAS_QUICK if args.quick else GAMMAS
    configs = []
    for tname, task, method in build_tasks(args.quick, args.seed):
        joint = task.joint() if method == "exact" else None
        for dname, den in (("exact", task.denoiser()), (f"smoothed(eps={eps})", smoothed(task.denoiser(), eps))):
            for proxy in ("entropy",) if args.quick else policies.PROXIES:
                for g in gammas:
                    configs.append(
                        (tname, task, method, joint, dname, den, "EB", proxy, g, policies.EntropyBounded(g, proxy))
                    )
                for k in ks_for(task.length, args.quick):
                    configs.append(
                        (tname, task, method, joint, dname, den, "TopK", proxy, k, policies.TopK(proxy, k=k))
                    )
    rows = []
    for i, (tname, task, method, joint, dname, den, pol, proxy, param, policy) in enumerate(
        tqdm(configs, desc="eb_sampler", disable=quiet_progress())
    ):
        r = run_point(task, method, den, policy, num, args.seed + i, joint)
        rows.append(
            {
                "task": tname,
                "task_detail": task.name,
                "length": task.length,
                "vocab_size": task.vocab_size,
                "method": method,
                "denoiser": dname,
                "policy": pol,
                "proxy": proxy,
                "param": float(param),
                **r,
            }
        )
    df = pd.DataFrame(rows)
    sp = speedups(df)
    fig = plot(df)
    settings = {
        "script": "experiments/eb_sampler.py",
        "quick": bool(args.quick),
        "seed": args.seed,
        "gammas": gammas,
        "smoothing_eps": eps,
        "mc_samples": num,
        "tasks": list(dict.fromkeys(df.task_detail)),
        "paper_speedup": PAPER_SPEEDUP,
        "speedup_definition": "L / min expected NFE with accuracy >= accuracy(Top-k, k=1, same proxy) - tolerance "
        "(MC rows: minus 2 SE of the difference too)",
        "speedups": sp.to_dict(orient="records"),
    }
    paths = write_outputs(args.out, "eb_sampler", df, fig, settings)
    sp.to_csv(Path(args.out) / "eb_sampler_speedup.csv", index=False, float_format="%.6g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            sp[
                [
                    "task",
                    "denoiser",
                    "proxy",
                    "tolerance",
                    "L",
                    "baseline_accuracy",
                    "EB_nfe",
                    "EB_speedup",
                    "TopK_nfe",
                    "TopK_speedup",
                ]
            ]
            .round(3)
            .to_string(index=False)
        )
    return paths


if __name__ == "__main__":
    main()
