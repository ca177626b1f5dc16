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

Not done here: the paper's part (c), low-step sampling on other tasks with a held-out grid search.

Writes energy_schedules.{csv,png,json} (the toy grid, heat maps), energy_schedules_landscape.{csv,png},
energy_schedules_laws.{csv,png} and energy_schedules_corr.{csv,png} under --out (default figures/).

    python experiments/energy_schedules.py            # default run, a few minutes on one core
    python experiments/energy_schedules.py --quick    # seconds; every part on a 3 x 3 grid
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common

GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))  # the paper's {0.1, ..., 1.0}
GRID_QUICK = (0.1, 0.5, 1.0)
LANDSCAPE = tuple(round(0.1 * k, 1) for k in range(1, 21))  # a, b in 0.1..2.0
LANDSCAPE_QUICK = (0.1, 0.5, 1.0, 2.0)
WEIGHTS = ((0.5, 0.5), (1.0, 1.0), (0.9, 0.3))  # gamma = I_tau(a_g, b_g): linear-, cos^2- and LLaDA-optimal
WEIGHTS_QUICK = ((0.5, 0.5), (0.9, 0.3))
STEPS = 3  # the paper's toy
CORR_STEPS = (2, 3, 4, 8)
CORR_STEPS_QUICK = (2, 3)
REVEALS = ("fixed", "bernoulli")
PAPER_FIG4 = "different targets prefer different (a, b) at 3 steps (no numbers given)"


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
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), constrained_layout=True)
    for i, target in enumerate(("A", "B")):
        for j, (reveal, col) in enumerate([(r, c) for c in ("kl", "tv") for r in REVEALS]):
            ax = axes[i, j]
            g = sub3[(sub3.target == target) & (sub3.reveal == reveal)]
            b = best[(best.target == target) & (best.reveal == reveal)].iloc[0]
            im = _heat(ax, g, col, grid, best=(float(b.a), float(b.b)) if col == "kl" else None, vmin=0.0)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(f"target {target}, {reveal}: exact {col.upper()} (N = {STEPS})", fontsize=9)
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
    fig, axes = plt.subplots(1, len(weights), figsize=(5 * len(weights), 4.3), constrained_layout=True)
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
        ax.set_title(f"log10(J / pi^2), weight gamma = Beta({ag:g}, {bg:g})", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Chen2025 Fig. 2: energy of alpha = sin^2((pi/2) I(a, b)) (grey: infinite)")
    return fig


def plot_laws(lw):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 1, figsize=(14, 7), constrained_layout=True)
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
        ax.set_ylabel("probability")
        ax.set_title(f"target {target}: exact laws of 3-step sampling over the 32 sequences", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def plot_corr(frame, corr):
    import matplotlib.pyplot as plt

    steps = sorted(set(frame.steps))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
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
            ax.set_xlabel("discrete N-step energy (linear weight)")
            ax.set_ylabel("exact KL(q || p_N)")
            ax.set_title(f"target {target}, {reveal}", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle("Does lower energy predict lower sampling error? (each point: one sin^2-Beta(a, b) grid schedule)")
    return fig


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    land = landscape(args.quick)
    frame = toy_grid(args.quick)
    best = best_schedules(frame)
    lw = laws(best)
    corr = correlations(frame)
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
        "note": "randomness-free: every number is exact (enumerated laws, closed forms, quadrature)",
    }
    paths = _common.write_outputs(args.out, "energy_schedules", frame, plot_toy(frame, best, args.quick), settings)
    paths["landscape_csv"] = _common.write_csv(args.out, "energy_schedules_landscape", land)
    paths["landscape_png"] = _common.write_png(args.out, "energy_schedules_landscape", plot_landscape(land))
    paths["laws_csv"] = _common.write_csv(args.out, "energy_schedules_laws", lw)
    paths["laws_png"] = _common.write_png(args.out, "energy_schedules_laws", plot_laws(lw))
    paths["corr_csv"] = _common.write_csv(args.out, "energy_schedules_corr", corr)
    paths["corr_png"] = _common.write_png(args.out, "energy_schedules_corr", plot_corr(frame, corr))
    return {"frame": frame, "landscape": land, "best": best, "laws": lw, "corr": corr, "paths": paths}


if __name__ == "__main__":
    main()
