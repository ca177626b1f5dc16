"""Sampler benchmark (issue 16): error against expected NFE for every registered sampler on every task.

Samplers: theory.samplers (the registry, each with its exact denoiser = the task's true conditionals, so
every error is the sampler's own). Tasks: synthetic.benchmark_tasks. Knobs: the step count N for the
step-budget samplers, gamma for the EB-sampler, tau for the confidence-threshold sampler.

* Enumerable tasks: the exact law p of the generated sequence (Sampler.exact_law) gives the exact
  expected NFE, KL(q ‖ p) (forward KL: finite for every sampler here, since every sequence of q's
  support keeps positive probability), SER = mass of p outside q's support, and the log-TER gap
  log TER(p) - H(q)/L (theory.metrics.log_ter; +inf as soon as SER > 0).
* Long-L tasks (chains through their exact oracles): Monte Carlo (Sampler.sample, key
  experiments._common.point_key(seed, task, sampler, knob index)): mean NFE, SER and TER gap with
  standard errors (theory.metrics.ser_mc, log_ter_mc; H(q) exact).

The error on the y axis is KL(q ‖ p) for enumerable tasks, SER (markov, forbidden transitions) or the
absolute TER gap (full-support n-gram: a negative gap, output more likely under q than q's own samples,
is a deviation too) for the Monte-Carlo ones; ``pareto`` marks the rows no other row of the
same task beats in both expected NFE and error. The leaderboard (Markdown) lists per task and sampler the
smallest expected NFE with SER <= 0.1, and the smallest with TER gap <= 0.05 ("—": never reached on the
grid; Monte-Carlo rows use the point estimate).

Writes sampler_benchmark.{csv,png,json} and sampler_benchmark_leaderboard.md under --out (figures/).

    python experiments/sampler_benchmark.py           # default run, 4.5 min on one contended core
    python experiments/sampler_benchmark.py --quick   # seconds: copy pairs (every sampler, exact) and
                                                      # markov-L32 (LLaDA, MC); its rows are rows of the
                                                      # default run (the tests compare them)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

#: task label -> (registry name, keyword arguments, method). Exact tasks are enumerable ((V+1)**L <= 4096).
TASKS = {
    "dirichlet": ("dirichlet", {"vocab_size": 2, "length": 4}, "exact"),
    "markov": ("markov", {"vocab_size": 3, "length": 4}, "exact"),
    "ngram": ("ngram", {"vocab_size": 3, "order": 3, "length": 4}, "exact"),
    "hmm": ("hmm", {"length": 4}, "exact"),
    "additive-ngram": ("additive-ngram", {"vocab_size": 2, "length": 6}, "exact"),
    "copy-pairs": ("copy-pairs", {"length": 4}, "exact"),
    "sudoku": ("sudoku", {"num_blanks": 4}, "exact"),
    "parity": ("parity", {"length": 4}, "exact"),
    "dyck": ("dyck", {"length": 6}, "exact"),
    "markov-L32": ("markov", {"vocab_size": 3, "length": 32}, "mc"),
    "ngram-L32": ("ngram", {"vocab_size": 3, "order": 3, "length": 32, "forbid": 0.0}, "mc"),
}
QUICK_TASKS = ("copy-pairs", "markov-L32")
#: --quick runs every sampler on its exact task, and this one by Monte Carlo (the MC branch of the script;
#: each extra sampler costs a compilation, and the tests run --quick)
QUICK_MC_SAMPLERS = ("llada-low-confidence",)
#: knob grids: steps as fractions of L (rounded, unique), gamma (nats), tau
STEP_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
GAMMAS = (0.0, 0.01, 0.1, 0.3, 1.0, float("inf"))
TAUS = (0.5, 0.7, 0.9, 0.99, 1.0)
QUICK_STEP_FRACTIONS = (0.5,)
QUICK_GAMMAS = (0.1,)
QUICK_TAUS = (0.9,)
NUM = 1000  # Monte-Carlo samples per point (the same in --quick: its rows equal the default run's)
SER_TARGET, TER_TARGET, KL_TARGET = 0.1, 0.05, 0.05
KNOB = {"eb-sampler": "gamma", "confidence-threshold": "tau"}


def knobs(sampler: str, length: int, quick: bool) -> list:
    """(knob name, values) of a sampler on a task of length L."""
    if sampler == "eb-sampler":
        return list(QUICK_GAMMAS if quick else GAMMAS)
    if sampler == "confidence-threshold":
        return list(QUICK_TAUS if quick else TAUS)
    steps = sorted({max(1, round(f * length)) for f in (QUICK_STEP_FRACTIONS if quick else STEP_FRACTIONS)})
    if sampler == "llada-semi-ar":  # two blocks: N a multiple of 2
        steps = sorted({max(2, 2 * round(n / 2)) for n in steps})
    return steps


def make_sampler(name: str, length: int, knob: float):
    """The registry's sampler with the point's knob (semi-AR: two blocks of L/2)."""
    from theory.samplers import get_sampler

    if name in KNOB:
        return get_sampler(name, **{KNOB[name]: knob})
    if name == "llada-semi-ar":
        return get_sampler(name, block_size=length // 2)
    return get_sampler(name)


def exact_row(task, q, sampler, steps: int) -> dict:
    from theory import metrics

    law = sampler.exact_law(q, steps)
    p = law.probs
    ser = metrics.sequence_error_rate(p, q)
    return {
        "expected_nfe": law.expected_nfe,
        "nfe_se": 0.0,
        "kl_q_p": metrics.kl(q.probs, p),
        "ser": ser,
        "ser_se": 0.0,
        "ter_gap": metrics.log_ter(p, q) - q.entropy() / q.length,
        "ter_gap_se": 0.0,
        "num": 0,
    }


def mc_row(task, entropy: float, sampler, steps: int, key) -> dict:
    import numpy as np

    from theory import metrics

    out = sampler.sample(key, task.denoiser(), steps, num=NUM)
    toks = np.asarray(out.tokens)
    nfe = metrics.mean_se(np.asarray(out.nfe, dtype=np.float64))
    ser = metrics.ser_mc(np.asarray(task.correct(toks), dtype=bool))
    ter = metrics.log_ter_mc(np.asarray(task.log_prob(toks)), task.length)
    return {
        "expected_nfe": nfe.mean,
        "nfe_se": nfe.se,
        "kl_q_p": float("nan"),
        "ser": ser.mean,
        "ser_se": ser.se,
        "ter_gap": ter.mean - entropy / task.length,
        "ter_gap_se": ter.se,
        "num": NUM,
    }


def grid(quick: bool) -> list:
    """(task label, sampler name, knob index, knob value) of every point."""
    from synthetic.benchmark_tasks import get_task
    from theory.samplers import list_samplers

    pts = []
    for t_label in QUICK_TASKS if quick else TASKS:
        name, kw, method = TASKS[t_label]
        L = get_task(name, **kw).length
        for s in list_samplers():
            if quick and method == "mc" and s not in QUICK_MC_SAMPLERS:
                continue
            for j, k in enumerate(knobs(s, L, False)):
                if quick and k not in knobs(s, L, True):
                    continue
                pts.append((t_label, s, j, k))
    return pts


def pareto(frame):
    """Boolean Series: rows of their task that no other row beats in both expected NFE and error."""
    import numpy as np
    import pandas as pd

    out = pd.Series(False, index=frame.index)
    for _, g in frame.groupby("task"):
        x, y = g["expected_nfe"].to_numpy(), g["error"].to_numpy()
        for i, idx in enumerate(g.index):
            dominated = np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i])))
            out[idx] = bool(np.isfinite(y[i]) and not dominated)
    return out


def run(quick: bool, seed: int):
    import numpy as np
    import pandas as pd

    from synthetic.benchmark_tasks import get_task
    from theory.samplers import list_samplers

    names = list(TASKS)
    snames = list_samplers()
    cache: dict = {}
    rows = []
    for t_label, s, j, k in _common.progress(grid(quick), "sampler_benchmark"):
        name, kw, method = TASKS[t_label]
        if t_label not in cache:
            task = get_task(name, **kw)
            cache[t_label] = (task, task.joint() if method == "exact" else None, float(task.entropy()))
        task, q, ent = cache[t_label]
        smp = make_sampler(s, task.length, k)
        steps = int(k) if s not in KNOB else task.length  # adaptive samplers ignore steps
        if method == "exact":
            res = exact_row(task, q, smp, steps)
        else:
            key = _common.point_key(seed, names.index(t_label), snames.index(s), j)
            res = mc_row(task, ent, smp, steps, key)
        error_name = "kl_q_p" if method == "exact" else ("abs_ter_gap" if t_label.startswith("ngram") else "ser")
        res["abs_ter_gap"] = abs(res["ter_gap"])
        rows.append(
            {
                "task": t_label,
                "task_name": task.name,
                "V": task.vocab_size,
                "L": task.length,
                "sampler": s,
                "knob": KNOB.get(s, "steps"),
                "value": float(k),
                "method": method,
                **res,
                "error_name": error_name,
                "error": res[error_name],
            }
        )
    frame = pd.DataFrame(rows)
    frame["pareto"] = pareto(frame)
    frame["error"] = frame["error"].astype(np.float64)
    return frame


def leaderboard(frame) -> str:
    """Markdown: per task and sampler, the smallest expected NFE with SER <= 0.1, with log-TER gap <= 0.05
    (starred when that row's gap is negative beyond 2 standard errors: reached by sharpening q, not by
    matching it) and, on enumerable tasks, with KL(q || p) <= 0.05."""
    lines = [
        "# Sampler benchmark leaderboard",
        "",
        "Smallest expected NFE (over the knob grid of `experiments/sampler_benchmark.py`) at which a sampler, run",
        "with the task's exact conditionals, reaches the target; — = never on the grid. Enumerable tasks: exact",
        "law; `-L32` tasks: Monte Carlo, 1000 samples per point (point estimates; the CSV has standard errors).",
        "Generated by the script; do not edit.",
        "",
    ]
    samplers = list(dict.fromkeys(frame["sampler"]))
    tables = (
        (f"SER <= {SER_TARGET}", "ser", SER_TARGET, frame),
        (f"log-TER gap <= {TER_TARGET}", "ter_gap", TER_TARGET, frame),
        (f"KL(q ‖ p) <= {KL_TARGET} (enumerable tasks)", "kl_q_p", KL_TARGET, frame[frame["method"] == "exact"]),
    )
    for crit, col, target, fr in tables:
        lines += [f"## NFE to reach {crit}", "", "| task | " + " | ".join(samplers) + " |"]
        lines.append("|---" * (len(samplers) + 1) + "|")
        for task, g in fr.groupby("task", sort=False):
            cells = []
            for s in samplers:
                ok = g[(g["sampler"] == s) & (g[col] <= target)]
                if ok.empty:
                    cells.append("—")
                    continue
                best = ok.loc[ok["expected_nfe"].idxmin()]
                star = col == "ter_gap" and best["ter_gap"] < -max(2 * best["ter_gap_se"], 1e-12)
                cells.append(f"{best['expected_nfe']:.2f}" + ("*" if star else ""))
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
        if col == "ter_gap":
            lines += [
                "\\* the gap is negative: the sampler's output is *more* likely under q than q's own samples (mode",
                "seeking), so log TER rewards it although its law differs from q (see the KL table and the CSV).",
                "",
            ]
    return "\n".join(lines)


def plot(frame):
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(frame["task"]))
    samplers = list(dict.fromkeys(frame["sampler"]))
    ncol = min(4, len(tasks))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=_style.figsize(ncol, nrow), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        g = frame[frame["task"] == task]
        floor = 1e-6
        for s in samplers:
            h = g[g["sampler"] == s].sort_values("expected_nfe")
            mc = len(h) and h["method"].iloc[0] == "mc"
            y = np.clip(h["error"].to_numpy(dtype=float), floor, None)
            look = _style.style(s)  # one colour and marker per sampler, as in every figure
            ax.plot(h["expected_nfe"], y, marker=look["marker"], ms=3, lw=1, color=look["color"],
                    linestyle="--" if mc else "-", label=s)  # fmt: skip
        pf = g[g["pareto"]].sort_values("expected_nfe")
        ax.step(pf["expected_nfe"], np.clip(pf["error"].to_numpy(dtype=float), floor, None), where="post",
                color="black", lw=2, alpha=0.35, label="Pareto front")  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"{task} ({g['task_name'].iloc[0]})")
        ax.set_xlabel(_style.label("expected_nfe"))
        names = {"kl_q_p": "KL(q ‖ p) [nats]", "ser": _style.label("ser"), "abs_ter_gap": "|log-TER gap| [nats/token]"}
        ax.set_ylabel(names[g["error_name"].iloc[0]])
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="x-small", loc="best")
    fig.suptitle("Sampler benchmark: error vs expected NFE (exact conditionals; floor 1e-6 on the log axis)")
    fig.tight_layout()
    return fig


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    frame = run(args.quick, args.seed)
    settings = {
        "script": "experiments/sampler_benchmark.py",
        "quick": args.quick,
        "seed": args.seed,
        "tasks": {t: TASKS[t] for t in (QUICK_TASKS if args.quick else TASKS)},
        "quick_mc_samplers": QUICK_MC_SAMPLERS if args.quick else "all",
        "step_fractions": QUICK_STEP_FRACTIONS if args.quick else STEP_FRACTIONS,
        "gammas": QUICK_GAMMAS if args.quick else GAMMAS,
        "taus": QUICK_TAUS if args.quick else TAUS,
        "num_mc": NUM,
        "mc_keys": "experiments._common.point_key(seed, task index, sampler index, knob index)",
        "error": "exact tasks: KL(q || p) (forward); markov-L32: SER; ngram-L32: |log-TER gap|",
        "denoiser": "the task's exact conditionals (Joint.denoiser / chain oracle)",
    }
    paths = _common.write_outputs(args.out, "sampler_benchmark", frame, plot(frame), settings)
    md = Path(args.out) / "sampler_benchmark_leaderboard.md"
    md.write_text(leaderboard(frame) + "\n")
    paths["leaderboard"] = md
    return frame, paths


def replot(out=_common.FIGURES) -> dict:
    """Redraw sampler_benchmark.png from sampler_benchmark.csv in ``out`` (current figure style, no recomputation)."""
    _common.setup()
    (frame,) = _common.read_csvs(out, "sampler_benchmark")
    return {"png": _common.write_png(out, "sampler_benchmark", plot(frame))}


if __name__ == "__main__":
    main()
