"""Chen2025: the energy landscape of the sin^2-Beta schedules (Fig. 2), the 5-token toy (Fig. 4) exactly, and
whether lower energy predicts lower few-step sampling error (beyond the paper).

(a) Landscape. For a Beta weight gamma = I_tau(a_g, b_g), the one-token energy of alpha = sin^2((pi/2) I_tau(a, b))
    (theory.schedules.sin2_beta) over a grid of (a, b): the closed form theory.energy.beta_energy
    (pi^2 (1 + chi^2(Beta(a, b) || Beta(a_g, b_g))), inf when 2a <= a_g or 2b <= b_g) next to the tanh-sinh
    quadrature theory.energy.one_token_energy with its reported error; the minimiser (a, b) = (a_g, b_g) is marked.
    Every energy of Chen2025 is a constant multiple of this one (theory.energy module docstring), so the landscape
    is the same for E_k, E_c and E_g up to scale.
(b) Fig. 4 toy (theory.energy.toy_targets): L = 5 over {a, b}, exact denoiser, random order, 3 steps; target A
    uniform on {aaaaa, bbbbb}, target B uniform on the sequences with 2 or 3 a's. Over the grid
    (a, b) in {0.1, ..., 1.0}^2 the exact generated law (theory.sampling.exact_law) of sin2_beta(a, b), with both
    reveal modes: fixed counts (theory.schedules.fixed_counts: some steps reveal zero tokens) and Bernoulli; its
    exact KL(q || p) and TV. The laws over the 32 sequences for the two schedules each target prefers.
(d) Energy versus error: for every grid schedule, its one-token energy J under the linear weight (gamma = tau, so
    that the uniform sampling grid is equally spaced in gamma), its discrete N-step energy sum chord^2 / Delta gamma
    on that grid (theory.energy.discrete_energy_on_grid) and the exact KL at N = 2, 3, 4, 8; Spearman's rank
    correlation per target, reveal mode and N.

(c) Low-step sampling on the toolkit's tasks (synthetic.tasks: a sparse Markov language, copy pairs, 4x4 Sudoku),
    exact laws with fixed counts (LLaDA-style, as in the paper's LLaDA runs): for each N the best sin^2-Beta (a, b)
    on the paper's grid is chosen by mean exact KL over *tuning* instances (other seeds; copy pairs: a shorter
    length), then linear, Chen's sine, squared sine and that Beta schedule are evaluated on held-out instances.
    The step saving at equal error: the fewest steps linear needs to reach the tuned Beta's error at N, over N.
    With fixed counts the law depends on the schedule only through its counts, so each distinct count vector is
    computed once.

Writes energy_schedules.{csv,png,json} (the toy grid, heat maps), energy_schedules_landscape.{csv,png},
energy_schedules_laws.{csv,png}, energy_schedules_corr.{csv,png}, energy_schedules_tasks.{csv,png} and
energy_schedules_speedup.csv under --out (default figures/).

    python experiments/energy_schedules.py            # default run, a few minutes on one core
    python experiments/energy_schedules.py --quick    # seconds; every part on a 3 x 3 grid
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))  # the paper's {0.1, ..., 1.0}
GRID_QUICK = (0.1, 0.5, 1.0)
LANDSCAPE = tuple(round(0.1 * k, 1) for k in range(1, 21))  # a, b in 0.1..2.0
LANDSCAPE_QUICK = (0.3, 1.0, 2.0)  # infinite, the minimiser, finite
WEIGHTS = ((0.5, 0.5), (1.0, 1.0), (0.9, 0.3))  # gamma = I_tau(a_g, b_g): linear-, cos^2- and LLaDA-optimal
WEIGHTS_QUICK = ((1.0, 1.0),)
STEPS = 3  # the paper's toy
CORR_STEPS = (2, 3, 4, 8)
CORR_STEPS_QUICK = (2, 3)
REVEALS = ("fixed", "bernoulli")
PAPER_FIG4 = "different targets prefer different (a, b) at 3 steps (no numbers given)"
PAPER_SPEEDUP = "LLaDA-8B: 2x fewer steps on code (MBPP), 4x on MATH at equal quality; no gain on GSM8K / BBH"
TASK_STEPS = (1, 2, 3, 4, 5, 6)  # L = 6: N = L is one token per step
TASK_STEPS_QUICK = (2, 3)
TUNE_SEEDS, EVAL_SEEDS = (1, 2), (11, 12)


def build_tasks(quick: bool, seed: int) -> list:
    """(family, split, instance, Task): tuning and held-out evaluation instances of each task family."""
    from synthetic import tasks

    if quick:
        return [
            ("markov", "tune", 0, tasks.markov_task(_common.point_key(seed, 1), 2, 4, concentration=0.3, forbid=0.5)),
            ("markov", "eval", 0, tasks.markov_task(_common.point_key(seed, 11), 2, 4, concentration=0.3, forbid=0.5)),
            ("copy_pairs", "tune", 0, tasks.copy_pairs_task(2)),  # N = 3 > L: skipped, as N = 5, 6 by default
            ("copy_pairs", "eval", 0, tasks.copy_pairs_task(4)),
            ("sudoku", "tune", 0, tasks.sudoku_task(num_blanks=4, seed=seed + 1, min_solutions=2)),
            ("sudoku", "eval", 0, tasks.sudoku_task(num_blanks=4, seed=seed + 11, min_solutions=2)),
        ]
    out = []
    for split, seeds in (("tune", TUNE_SEEDS), ("eval", EVAL_SEEDS)):
        for i, sd in enumerate(seeds):
            key = _common.point_key(seed, sd)
            out.append(("markov", split, i, tasks.markov_task(key, 3, 6, concentration=0.3, forbid=0.6)))
            out.append(("sudoku", split, i, tasks.sudoku_task(num_blanks=6, seed=seed + sd, min_solutions=2)))
    out.append(("copy_pairs", "tune", 0, tasks.copy_pairs_task(4)))  # held out by length
    out.append(("copy_pairs", "eval", 0, tasks.copy_pairs_task(6)))
    return out


def task_errors(quick: bool, seed: int):
    """(c): exact KL of every grid schedule and the baselines on every task instance, per N (fixed counts).

    One row per (family, split, instance, N, schedule). Schedules: "beta" rows for each grid (a, b), and the
    baselines "linear", "chen_sine", "cosine_squared"."""
    import pandas as pd

    from theory import metrics, schedules
    from theory.sampling import exact_law

    grid = GRID_QUICK if quick else GRID
    steps = TASK_STEPS_QUICK if quick else TASK_STEPS
    scheds = [("beta", a, b, schedules.sin2_beta(a, b)) for a in grid for b in grid]
    scheds += [(n, float("nan"), float("nan"), f()) for n, f in
               (("linear", schedules.linear), ("chen_sine", schedules.chen_sine),
                ("cosine_squared", schedules.cosine_squared))]  # fmt: skip
    rows = []
    for family, split, inst, task in _common.progress(build_tasks(quick, seed), "tasks"):
        q = task.joint()
        L = q.length
        cache: dict = {}
        for N in steps:
            if N > L:
                continue
            for name, a, b, s in scheds:
                counts = tuple(int(k) for k in schedules.fixed_counts(s, N, L))
                if counts not in cache:
                    law = exact_law(q, None, N, reveal="fixed", counts=list(counts))
                    cache[counts] = metrics.kl(q.probs, law.probs)
                rows.append(
                    {
                        "family": family,
                        "task": task.name,
                        "split": split,
                        "instance": inst,
                        "length": L,
                        "steps": N,
                        "schedule": name,
                        "a": a,
                        "b": b,
                        "counts": "-".join(map(str, counts)),
                        "kl": cache[counts],
                    }
                )
    return pd.DataFrame(rows)


def tuned_speedups(tf):
    """(c): per family and N, the grid (a, b) of least mean tuning KL (ties: smallest a, then b), its held-out mean
    KL next to the baselines', and the step saving at equal error: the fewest steps N_lin at which linear's
    held-out KL is <= the tuned Beta's at N (within 1e-12), saving = N_lin / N (NaN if linear never gets there)."""
    import numpy as np
    import pandas as pd

    rows = []
    mean = tf.groupby(["family", "split", "steps", "schedule", "a", "b"], dropna=False, sort=True).kl.mean()
    mean = mean.reset_index()
    for (family, N), g in mean.groupby(["family", "steps"], sort=True):
        tune = g[(g.split == "tune") & (g.schedule == "beta")].assign(kl_r=lambda d: _ties(d.kl))
        if tune.empty or not (g.split == "eval").any():
            continue  # N exceeds the length of the tuning (or evaluation) instances
        best = tune.sort_values(["kl_r", "a", "b"], kind="mergesort").iloc[0]
        ev = g[g.split == "eval"]
        beta_kl = float(ev[(ev.schedule == "beta") & (ev.a == best.a) & (ev.b == best.b)].kl.iloc[0])
        row = {"family": family, "steps": int(N), "best_a": float(best.a), "best_b": float(best.b),
               "tune_kl": float(best.kl), "beta_kl": beta_kl}  # fmt: skip
        for base in ("linear", "chen_sine", "cosine_squared"):
            row[f"{base}_kl"] = float(ev[ev.schedule == base].kl.iloc[0])
        lin = mean[(mean.family == family) & (mean.split == "eval") & (mean.schedule == "linear")].sort_values("steps")
        ok = lin[lin.kl <= beta_kl + 1e-12]
        row["linear_steps_needed"] = int(ok.steps.iloc[0]) if len(ok) else np.nan
        row["saving"] = row["linear_steps_needed"] / N if len(ok) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def landscape(quick: bool):
    """(a): one row per (weight, a, b): closed form, quadrature value and reported error."""
    import numpy as np
    import pandas as pd

    from theory import energy, schedules

    grid = LANDSCAPE_QUICK if quick else LANDSCAPE
    rows = []
    items = [(w, a, b) for w in (WEIGHTS_QUICK if quick else WEIGHTS) for a in grid for b in grid]
    for (ag, bg), a, b in _common.progress(items, "landscape"):
        closed = energy.beta_energy(a, b, ag, bg)
        J = energy.one_token_energy(schedules.sin2_beta(a, b), schedules.beta_weight(ag, bg))
        rows.append(
            {
                "a_gamma": ag,
                "b_gamma": bg,
                "a": a,
                "b": b,
                "energy_closed": closed,
                "energy_quad": float(J.value),
                "quad_error": float(J.error) if np.isfinite(J.value) else np.inf,
                "energy_over_pi2": closed / np.pi**2,
            }
        )
    return pd.DataFrame(rows)


def toy_grid(quick: bool):
    """(b) + (d): one row per (target, reveal, N, a, b): exact KL, TV, energies, fixed counts."""
    import numpy as np
    import pandas as pd

    from theory import energy, metrics, schedules
    from theory.sampling import exact_law

    targets = energy.toy_targets()
    grid = GRID_QUICK if quick else GRID
    steps = sorted({STEPS, *(CORR_STEPS_QUICK if quick else CORR_STEPS)})
    lin = schedules.linear_weight()
    items = [(a, b) for a in grid for b in grid]
    rows = []
    for a, b in _common.progress(items, "toy grid"):
        s = schedules.sin2_beta(a, b)
        J = energy.beta_energy(a, b, 1.0, 1.0)  # one-token energy under the linear weight gamma = tau
        for N in steps:
            e_N = energy.discrete_energy_on_grid(s, lin, N)
            counts = schedules.fixed_counts(s, N, 5)
            for reveal in REVEALS:
                for name, q in targets.items():
                    law = exact_law(q, None, N, reveal=reveal, schedule=s)
                    rows.append(
                        {
                            "target": name,
                            "reveal": reveal,
                            "steps": N,
                            "a": a,
                            "b": b,
                            "kl": metrics.kl(q.probs, law.probs),
                            "tv": metrics.tv(q.probs, law.probs),
                            "energy": J,
                            "discrete_energy": e_N,
                            "counts": "-".join(str(int(k)) for k in counts),
                            "zero_steps": int(np.sum(np.asarray(counts) == 0)),
                        }
                    )
    return pd.DataFrame(rows)


def best_schedules(frame):
    """The (a, b) of least KL at the toy's 3 steps, per target and reveal mode. KLs equal to 10 digits tie
    (:func:`_ties`); ties go to the smallest a, then b; ``ties`` counts the grid schedules that attain the minimum."""
    g = frame[frame.steps == STEPS]
    g = g.assign(kl_r=_ties(g.kl))
    g = g.sort_values(["kl_r", "a", "b"], kind="mergesort")
    best = g.groupby(["target", "reveal"], sort=True).head(1).reset_index(drop=True)
    ties = g.groupby(["target", "reveal"], sort=True).kl_r.agg(lambda k: int((k == k.min()).sum()))
    best["ties"] = [int(ties[(t, r)]) for t, r in zip(best.target, best.reveal)]
    return best.drop(columns="kl_r")


def laws(best):
    """(b): the exact laws over the 32 sequences of the fixed-count schedules each target prefers."""
    import numpy as np
    import pandas as pd

    from theory import energy, schedules
    from theory.sampling import exact_law
    from theory.states import all_sequences

    targets = energy.toy_targets()
    fixed = best[best.reveal == "fixed"]
    chosen = [(r.target, float(r.a), float(r.b)) for r in fixed.itertuples()]
    seqs = ["".join("ab"[int(v)] for v in x) for x in all_sequences(2, 5)]
    rows = []
    for name, q in targets.items():
        rows += [{"target": name, "law": "target", "sequence": s, "prob": float(p)} for s, p in zip(seqs, q.probs)]
        for who, a, b in chosen:
            for reveal in REVEALS:
                law = exact_law(q, None, STEPS, reveal=reveal, schedule=schedules.sin2_beta(a, b))
                label = f"{reveal} Beta({a:g}, {b:g}) [best for {who}]"
                rows += [
                    {"target": name, "law": label, "sequence": s, "prob": float(p)}
                    for s, p in zip(seqs, np.asarray(law.probs))
                ]
    return pd.DataFrame(rows)


def _ties(x):
    """Values equal to 10 significant digits (and within 1e-12 of 0) are ties: equal energies or KLs computed along
    different float paths (e.g. every symmetric Beta(a, a) has alpha = 1/2 at the midpoint) must rank equal."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.abs(x) < 1e-12, 0.0, x)
    return np.array([float(f"{v:.10g}") for v in x])


def correlations(frame):
    """(d): Spearman's rank correlation of energy (continuous J and discrete N-step) with exact KL (ties: _ties)."""
    import pandas as pd
    from scipy.stats import spearmanr

    rows = []
    for (target, reveal, N), g in frame.groupby(["target", "reveal", "steps"], sort=True):
        for col in ("energy", "discrete_energy"):
            rho, p = spearmanr(_ties(g[col]), _ties(g["kl"]))
            rows.append(
                {"target": target, "reveal": reveal, "steps": int(N), "energy_kind": col, "spearman": rho, "p": p}
            )
    return pd.DataFrame(rows)


def task_correlations(tf):
    """(d) on the tasks: Spearman's rho of the one-token energy (linear weight) and of the discrete N-step energy of
    each grid schedule against its mean exact KL over all instances of a family (fixed counts)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from theory import energy, schedules

    g = tf[tf.schedule == "beta"].groupby(["family", "steps", "a", "b"], sort=True).kl.mean().reset_index()
    lin = schedules.linear_weight()
    g["energy"] = [energy.beta_energy(a, b, 1.0, 1.0) for a, b in zip(g.a, g.b)]
    g["discrete_energy"] = [energy.discrete_energy_on_grid(schedules.sin2_beta(a, b), lin, int(N))
                            for a, b, N in zip(g.a, g.b, g.steps)]  # fmt: skip
    rows = []
    for (fam, N), h in g.groupby(["family", "steps"], sort=True):
        if N == 1:
            continue  # one step: every schedule reveals everything at once
        for col in ("energy", "discrete_energy"):
            rho, p = spearmanr(_ties(h[col]), _ties(h.kl))
            rows.append({"target": fam, "reveal": "fixed", "steps": int(N), "energy_kind": col, "spearman": rho,
                         "p": p})  # fmt: skip
    return pd.DataFrame(rows)


_FIG_SCALE = {"scale": 1.0}  # --quick draws the same figures at half size (faster to save; the tests only need them)


def _fs(w, h):
    return (w * _FIG_SCALE["scale"], h * _FIG_SCALE["scale"])


def _heat(ax, sub, col, grid, best=None, vmin=None, vmax=None, cmap="viridis"):
    import numpy as np

    M = sub.pivot(index="b", columns="a", values=col).reindex(index=list(grid), columns=list(grid)).to_numpy()
    im = ax.imshow(M, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(grid)), [f"{g:g}" for g in grid], fontsize=6)
    ax.set_yticks(range(len(grid)), [f"{g:g}" for g in grid], fontsize=6)
    ax.set_xlabel("a")
    ax.set_ylabel("b")
    F = np.where(np.isfinite(M), M, np.nan)
    tied = np.argwhere(np.round(F, 12) == np.round(np.nanmin(F), 12))  # every grid schedule attaining the minimum
    ax.plot(tied[:, 1], tied[:, 0], "w.", ms=4)
    if best is not None:
        ax.plot(grid.index(best[0]), grid.index(best[1]), "r*", ms=10)
    return im


def plot_toy(frame, best, quick):
    import matplotlib.pyplot as plt

    grid = list(GRID_QUICK if quick else GRID)
    sub3 = frame[frame.steps == STEPS]
    fig, axes = plt.subplots(2, 4, figsize=_fs(*_style.figsize(4, 2, 1.0)), constrained_layout=True)
    for i, target in enumerate(("A", "B")):
        for j, (reveal, col) in enumerate([(r, c) for c in ("kl", "tv") for r in REVEALS]):
            ax = axes[i, j]
            g = sub3[(sub3.target == target) & (sub3.reveal == reveal)]
            b = best[(best.target == target) & (best.reveal == reveal)].iloc[0]
            im = _heat(ax, g, col, grid, best=(float(b.a), float(b.b)) if col == "kl" else None, vmin=0.0)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(f"target {target}, {reveal}: exact {col.upper()} (N = {STEPS})")
    fig.suptitle(
        "Chen2025 Fig. 4 toy: sin^2-Beta(a, b) schedules, L = 5 over {a, b}, exact denoiser\n"
        "(red star: least KL, ties to the smallest a then b; white dots: every grid schedule at the minimum)"
    )
    return fig


def plot_landscape(land):
    import matplotlib.pyplot as plt
    import numpy as np

    weights = list(dict.fromkeys(zip(land.a_gamma, land.b_gamma)))
    grid = sorted(set(land.a))
    fig, axes = plt.subplots(
        1, len(weights), figsize=_fs(*_style.figsize(len(weights), 1, 1.25)), constrained_layout=True
    )
    for ax, (ag, bg) in zip(np.atleast_1d(axes), weights):
        g = land[(land.a_gamma == ag) & (land.b_gamma == bg)].copy()
        g["log10"] = np.log10(g.energy_closed / np.pi**2)
        M = g.pivot(index="b", columns="a", values="log10").reindex(index=grid, columns=grid).to_numpy()
        im = ax.imshow(np.where(np.isfinite(M), M, np.nan), origin="lower", cmap="magma", aspect="auto",
                       extent=(grid[0] - 0.05, grid[-1] + 0.05, grid[0] - 0.05, grid[-1] + 0.05))  # fmt: skip
        ax.set_facecolor("#cccccc")  # grey: infinite energy (2a <= a_g or 2b <= b_g)
        ax.plot(ag, bg, "c*", ms=14, label=f"minimiser ({ag:g}, {bg:g}): J = pi^2")
        ax.set_xlabel("a")
        ax.set_ylabel("b")
        ax.set_title(f"log10(J / pi^2), weight gamma = Beta({ag:g}, {bg:g})")
        ax.legend(loc="upper right")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Chen2025 Fig. 2: energy of alpha = sin^2((pi/2) I(a, b)) (grey: infinite)")
    return fig


def plot_laws(lw):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 1, figsize=_fs(*_style.figsize(3.5, 2, 1.0)), constrained_layout=True)
    for ax, target in zip(axes, ("A", "B")):
        g = lw[lw.target == target]
        labels = list(dict.fromkeys(g.law))
        seqs = list(dict.fromkeys(g.sequence))
        width = 0.8 / len(labels)
        for k, lab in enumerate(labels):
            p = g[g.law == lab].set_index("sequence").loc[seqs, "prob"].to_numpy()
            color = "#000000" if lab == "target" else _common.series_color(k - 1)
            ax.bar(np.arange(len(seqs)) + (k - (len(labels) - 1) / 2) * width, p, width, label=lab, color=color)
        ax.set_xticks(range(len(seqs)), seqs, rotation=90, fontsize=7, family="monospace")
        ax.set_ylabel(_style.label("probability"))
        ax.set_title(f"target {target}: exact laws of 3-step sampling over the 32 sequences")
        ax.legend(ncol=len(labels), loc="lower center", bbox_to_anchor=(0.5, 1.06))
    return fig


def plot_corr(frame, corr):
    import matplotlib.pyplot as plt

    steps = sorted(set(frame.steps))
    fig, axes = plt.subplots(2, 2, figsize=_fs(*_style.figsize(2, 2, 1.25)), constrained_layout=True)
    for i, target in enumerate(("A", "B")):
        for j, reveal in enumerate(REVEALS):
            ax = axes[i, j]
            for k, N in enumerate(steps):
                g = frame[(frame.target == target) & (frame.reveal == reveal) & (frame.steps == N)]
                c = corr[(corr.target == target) & (corr.reveal == reveal) & (corr.steps == N)]
                rho = float(c[c.energy_kind == "discrete_energy"].spearman.iloc[0])
                ax.scatter(
                    g.discrete_energy, g.kl, s=10, color=_common.series_color(k), label=f"N = {N}: rho = {rho:.2f}"
                )
            ax.set_xscale("log")
            ax.set_xlabel("discrete N-step energy (linear weight) [dimensionless]")
            ax.set_ylabel(_style.label("kl"))
            ax.set_title(f"target {target}, {reveal}")
            ax.legend()
    fig.suptitle("Does lower energy predict lower sampling error? (each point: one sin^2-Beta(a, b) grid schedule)")
    return fig


def plot_tasks(tf, sp):
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(sp.family))
    fig, axes = plt.subplots(1, len(fams), figsize=_fs(*_style.figsize(len(fams), 1, 1.25)), constrained_layout=True)
    ev = tf[tf.split == "eval"]
    for ax, fam in zip(axes, fams):
        g = ev[ev.family == fam]
        for base in ("linear", "chen_sine", "cosine_squared"):
            m = g[g.schedule == base].groupby("steps").kl.mean()
            ax.plot(m.index, m.values, marker="o", color=_style.color(base), label=base)
        s = sp[sp.family == fam]
        ax.plot(s.steps, s.beta_kl, marker="*", ms=10, color=_style.color("beta"), label="tuned sin^2-Beta (held out)")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel(_style.label("steps", "(fixed counts)"))
        ax.set_ylabel(_style.label("kl", "held-out mean"))
        ax.set_title(f"{fam}: {g.task.iloc[0]}")
        ax.legend()
    fig.suptitle("Chen2025 low-step sampling: grid-tuned Beta schedule vs baselines (exact laws)")
    return fig


def main(argv=None):
    import pandas as pd

    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    _FIG_SCALE["scale"] = 0.5 if args.quick else 1.0
    land = landscape(args.quick)
    frame = toy_grid(args.quick)
    best = best_schedules(frame)
    lw = laws(best)
    corr = correlations(frame)
    tf = task_errors(args.quick, args.seed)
    sp = tuned_speedups(tf)
    corr = pd.concat([corr, task_correlations(tf)], ignore_index=True)
    settings = {
        "seed": args.seed,
        "quick": args.quick,
        "grid": GRID_QUICK if args.quick else GRID,
        "landscape_grid": LANDSCAPE_QUICK if args.quick else LANDSCAPE,
        "weights": WEIGHTS_QUICK if args.quick else WEIGHTS,
        "steps": STEPS,
        "corr_steps": CORR_STEPS_QUICK if args.quick else CORR_STEPS,
        "reveals": REVEALS,
        "policy": "RandomOrder",
        "denoiser": "exact",
        "schedule": "theory.schedules.sin2_beta(a, b)",
        "energy_weight_for_correlation": "linear (Beta(1, 1))",
        "best_at_3_steps": best[["target", "reveal", "a", "b", "kl", "tv", "counts", "ties"]].to_dict("records"),
        "paper_fig4": PAPER_FIG4,
        "paper_speedup": PAPER_SPEEDUP,
        "task_steps": TASK_STEPS_QUICK if args.quick else TASK_STEPS,
        "task_reveal": "fixed",
        "tune_seeds": TUNE_SEEDS,
        "eval_seeds": EVAL_SEEDS,
        "tuned": sp.to_dict("records"),
        "note": "randomness-free: every number is exact (enumerated laws, closed forms, quadrature)",
    }
    paths = _common.write_outputs(args.out, "energy_schedules", frame, plot_toy(frame, best, args.quick), settings)
    paths["landscape_csv"] = _common.write_csv(args.out, "energy_schedules_landscape", land)
    paths["landscape_png"] = _common.write_png(args.out, "energy_schedules_landscape", plot_landscape(land))
    paths["laws_csv"] = _common.write_csv(args.out, "energy_schedules_laws", lw)
    paths["laws_png"] = _common.write_png(args.out, "energy_schedules_laws", plot_laws(lw))
    paths["corr_csv"] = _common.write_csv(args.out, "energy_schedules_corr", corr)
    paths["corr_png"] = _common.write_png(args.out, "energy_schedules_corr", plot_corr(frame, corr))
    paths["tasks_csv"] = _common.write_csv(args.out, "energy_schedules_tasks", tf)
    paths["tasks_png"] = _common.write_png(args.out, "energy_schedules_tasks", plot_tasks(tf, sp))
    paths["speedup_csv"] = _common.write_csv(args.out, "energy_schedules_speedup", sp)
    return {"frame": frame, "landscape": land, "best": best, "laws": lw, "corr": corr, "tasks": tf, "speedup": sp,
            "paths": paths}  # fmt: skip


def replot(out=_common.FIGURES) -> dict:
    """Redraw the five PNGs from the CSVs in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    _FIG_SCALE["scale"] = 1.0
    frame, land, lw, corr, tf, sp = _common.read_csvs(
        out, "energy_schedules", "energy_schedules_landscape", "energy_schedules_laws", "energy_schedules_corr",
        "energy_schedules_tasks", "energy_schedules_speedup",
    )  # fmt: skip
    best = best_schedules(frame)
    figs = {"energy_schedules": plot_toy(frame, best, False), "energy_schedules_landscape": plot_landscape(land),
            "energy_schedules_laws": plot_laws(lw), "energy_schedules_corr": plot_corr(frame, corr),
            "energy_schedules_tasks": plot_tasks(tf, sp)}  # fmt: skip
    return {f: _common.write_png(out, f, fig) for f, fig in figs.items()}


if __name__ == "__main__":
    main()
