"""Feng2025: perplexity (TER) is flat in L, sequence error (SER) is linear in L.

    python experiments/steps_vs_length.py                      # default: a few minutes on 2 cores
    python experiments/steps_vs_length.py --quick              # seconds (used by the tests)
    python experiments/steps_vs_length.py --denoiser learned   # also transformers trained per (n-gram, L)

Sampler: Feng2025's (RandomOrder, Bernoulli reveal with the linear schedule, values drawn independently
from the conditionals); fixed counts are shown for the copy-pairs SER too. The measurements are library
functions of synthetic/steps_length.py; this script only chooses the grids, draws and writes.

Writes under --out (default figures/):
  steps_vs_length_ter.csv / .png       Figure 1: log TER(p_N) - log TER(q) vs N for several L
  steps_vs_length_ser.csv / .png       Figure 2: SER vs N, worst-case languages, closed form over measurements
  steps_vs_length_min_steps.csv / .png Figure 3: smallest N reaching TER gap <= eps and SER <= delta vs L
  steps_vs_length_learning.csv         learning error: total TER gap of imperfect denoisers vs Feng2025's bound
  steps_vs_length.json                 every setting of the run
and prints short tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _style  # noqa: E402

NAME = "steps_vs_length"
Z95 = 1.959963984540054
TER_COLUMNS = ["language", "length", "steps", "method", "ter_gap", "ter_gap_se", "log_ter_q", "num", "point_key",
               "eps_learning", "feng_eps", "feng_bound"]  # fmt: skip
SER_COLUMNS = ["language", "length", "steps", "reveal", "method", "ser", "ser_se", "num", "point_key"]


def settings(quick: bool) -> dict:
    """The grids. --quick runs every code path of the default (exact, block product, closed forms, MC on
    n-grams and block languages, both reveal modes, the smoothed denoiser exactly and by MC) at small sizes;
    its Figure 1 Monte Carlo skips the trigram (each language object costs one sampler compilation)."""
    from synthetic.steps_length import TER_LANGUAGES

    if quick:
        return dict(
            lengths=[16],
            mc_languages=["bigram V=3 h=0.6", "noisy copy pairs"],
            exact_lengths=[4],
            steps=[1, 4],
            ser_steps_mc=[4, 16],
            num_ter=200,
            num_ser=200,
            additive_max_steps=16,
            fig3_lengths=[16, 32],
            fig3_fixed_max_length=32,
            learning_lam=0.05,
            learning_steps=[4],
            learning_lengths=[16],
            learning_exact_length=4,
            learned_lengths=[16],
            learned_train_steps=30,
        )
    return dict(
        lengths=[16, 64, 256, 1024],
        mc_languages=list(TER_LANGUAGES),
        exact_lengths=[6, 8],
        steps=[1, 2, 4, 8, 16, 32, 64],
        ser_steps_mc=[1, 4, 16, 64, 256, 1024, 4096],
        num_ter=1000,
        num_ser=200,
        additive_max_steps=1024,
        fig3_lengths=[16, 32, 64, 128, 256, 512, 1024],
        fig3_fixed_max_length=512,
        learning_lam=0.05,
        learning_steps=[2, 8, 32],
        learning_lengths=[64, 1024],
        learning_exact_length=6,
        learned_lengths=[16, 64],
        learned_train_steps=500,
    )


# ---- measurements (library calls) -------------------------------------------------------------------
def measure(curves, desc: str, *, seed: int, num: int):
    import pandas as pd

    from synthetic import steps_length as sl

    rows = [r for c in _common.progress(curves, desc) for r in sl.measure_curve(c, seed=seed, num=num)]
    return pd.DataFrame(rows)


def learning_rows(cfg, args) -> list[dict]:
    """The smoothed denoiser (1 - lam) q + lam / V of the bigram: exactly at a small L, by MC at larger L."""
    from synthetic import steps_length as sl
    from theory.denoiser import smoothed, smoothing_kl_bound

    lam, name = cfg["learning_lam"], sl.TER_LANGUAGES[0]
    eps_l, label = smoothing_kl_bound(lam), f"smoothed lam={lam:g}"
    Le = cfg["learning_exact_length"]
    jobs = [("exact", Le)] + [("mc", L) for L in cfg["learning_lengths"]]
    rows = []
    for method, L in _common.progress(jobs, "learning error (smoothed)"):
        lang = sl.feng_language(name, L, args.seed)
        den = smoothed(lang.joint().denoiser() if method == "exact" else lang.denoiser(), lam)
        rows += sl.learning_error_rows(
            name, L, den, cfg["learning_steps"], eps_learning=eps_l, denoiser_name=label, method=method, seed=args.seed,
            labels=(sl.FIG_TER, 0, L), num=cfg["num_ter"],
        )  # fmt: skip
    return rows


def learned_rows(cfg, args) -> list[dict]:
    """--denoiser learned: a transformer per (n-gram, L), its MC TER gap with the same keys as Figure 1."""
    from synthetic import steps_length as sl

    ngrams = [(i, n) for i, n in enumerate(sl.TER_LANGUAGES) if hasattr(sl.feng_language(n, 16), "order")]
    jobs = [(i, n, L) for i, n in ngrams for L in cfg["learned_lengths"]]
    rows = []
    for i, name, L in _common.progress(jobs, "learned denoisers"):
        key = _common.point_key(args.seed, sl.TRAIN, i, L)
        den, eps_l = sl.learned_denoiser(name, L, seed=args.seed, key=key, train_steps=cfg["learned_train_steps"])
        rows += sl.learning_error_rows(
            name, L, den, cfg["steps"], eps_learning=eps_l,
            denoiser_name=f"learned transformer ({cfg['learned_train_steps']} Adam steps)",
            seed=args.seed, labels=(sl.FIG_TER, i, L), num=cfg["num_ter"],
        )  # fmt: skip
    return rows


# ---- figures -------------------------------------------------------------------------------------------
def _log_errorbars(ax, x, y, se, floor, color, st, label):
    """MC points on a log axis: 95% bars with the lower end clipped at ``floor``; estimates <= floor
    (a gap within noise of 0; it cannot be negative) drawn as an open down-triangle on the floor."""
    import numpy as np

    x, y, se = (np.asarray(a, dtype=float) for a in (x, y, se))
    hi, lo = y + Z95 * se, np.maximum(y - Z95 * se, floor)
    ok = y > floor
    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt=st["marker"] or "o", color=color,
                ms=3.5, capsize=2, lw=0.9, label=label)  # fmt: skip
    if np.any(~ok):
        ax.errorbar(x[~ok], np.full((~ok).sum(), floor), yerr=[np.zeros((~ok).sum()), np.maximum(hi[~ok] - floor, 0)],
                    fmt="v", mfc="none", color=color, ms=4, capsize=2, lw=0.9)  # fmt: skip


def plot_ter(ter, floor: float = 1e-3):
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(ter.language))
    lengths = sorted(ter.length.unique())
    fig, axes = plt.subplots(1, len(names), figsize=_style.figsize(len(names), 1, 1.3), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        d = ter[ter.language == name]
        for (L, method), g in d.groupby(["length", "method"], sort=True):
            st, col = _common.style(method), _common.series_color(lengths.index(L))
            g = g.sort_values("steps")
            if method.startswith("mc"):
                _log_errorbars(ax, g.steps, g.ter_gap, g.ter_gap_se, floor, col, st, f"L={L} {method}")
            else:
                ax.plot(g.steps, np.maximum(g.ter_gap, floor), color=col, ls=st["linestyle"], lw=1.2,
                        label=f"L={L} {method}")  # fmt: skip
        fb = d.dropna(subset=["feng_bound"])
        fb = fb[fb.method == "mc"].drop_duplicates("steps").sort_values("steps")
        if len(fb):
            ax.plot(fb.steps, fb.feng_bound, color="0.5", ls="-.", lw=1, label="Feng2025 bound 4ε log|V| (const. 1)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(floor, float(np.min(d.ter_gap - Z95 * d.ter_gap_se))) / 1.6)
        ax.set_xlabel(_style.label("steps"))
        ax.set_title(name)
        ax.legend(fontsize="xx-small", ncol=2)
    axes[0][0].set_ylabel(_style.label("ter_gap"))
    fig.suptitle("Feng2025 Fig. 1: the TER gap vs steps is flat in L (colour = L)")
    fig.text(0.5, -0.02, f"Log y axis. Monte Carlo (points): 95% error bars, lower ends clipped at {floor:g}; "
             f"estimates ≤ {floor:g} (zero within noise; the true gap is ≥ 0) are drawn as ▽ on that floor.",
             ha="center", fontsize=7)  # fmt: skip
    fig.tight_layout()
    return fig


def plot_ser(ser):
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(ser.language))
    lengths = sorted(ser.length.unique())
    fig, axes = plt.subplots(1, len(names), figsize=_style.figsize(len(names), 1, 1.35), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        d = ser[ser.language == name]
        for L in sorted(d.length.unique()):
            col = _common.series_color(lengths.index(L))
            for reveal in ("bernoulli", "fixed"):
                ls = _common.style(reveal)["linestyle"]
                cf = d[(d.length == L) & (d.reveal == reveal) & (d.method == "closed form")].sort_values("steps")
                if len(cf):
                    ax.plot(cf.steps, cf.ser, ls=ls, color=col, lw=1.2, label=f"L={L} {reveal}, closed form")
                mc = d[(d.length == L) & (d.reveal == reveal) & (d.method == "mc")].sort_values("steps")
                if len(mc):
                    ax.errorbar(mc.steps, mc.ser, yerr=Z95 * mc.ser_se, fmt="o" if reveal == "bernoulli" else "s",
                                mfc=col if reveal == "bernoulli" else "none", color=col, ms=3.5, capsize=2, lw=0.9,
                                ls="none" if len(cf) else ls, label=f"L={L} {reveal}, MC")  # fmt: skip
            ax.axvline(L, color=col, lw=0.6, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(_style.label("steps", "(thin vertical lines: N = L)"))
        ax.set_title(name)
        ax.legend(fontsize="xx-small", ncol=2, loc="lower left")
    axes[0][0].set_ylabel(_style.label("ser", "(the sequence violates the language)"))
    fig.suptitle("Feng2025 Fig. 2: SER vs steps on worst cases needs N ~ L (colour = L; MC: 95% error bars)")
    fig.tight_layout()
    return fig


def plot_min_steps(mins, lengths):
    """Colour per (language, reveal), marker per method, solid for SER targets and dashed for TER targets."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=_style.figsize(1, 1, 1.6))
    Ls = np.array(sorted(lengths))
    ar = _common.style("autoregressive")
    ax.plot(Ls, Ls, color=ar["color"], lw=2, label="autoregressive: N = L")
    d = mins.dropna(subset=["min_steps"])
    series = list(dict.fromkeys(zip(d.language, d.reveal)))
    markers = {
        "closed form": "D",
        "exact search": "^",
        "exact (grid)": "s",
        "mc (grid)": "o",
        "mc (learned) (grid)": "x",
    }
    for (tgt, name, reveal, method), g in d.groupby(["target", "language", "reveal", "method"]):
        g = g.sort_values("length")
        ax.plot(g.length, g.min_steps, marker=markers.get(method, "o"), ms=4,
                color=_common.series_color(series.index((name, reveal))), ls="-" if tgt.startswith("SER") else "--",
                label=f"{tgt}: {name} ({reveal}), {method}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel(_style.label("length"))
    ax.set_ylabel(_style.label("steps", "needed: smallest N reaching the target"))
    ax.set_title("Feng2025 Fig. 3: steps for TER are flat in L, for SER linear")
    ax.legend(fontsize="xx-small", loc="upper left")
    fig.text(0.5, -0.03, "closed form / exact search: over every N; (grid): the first N of the measured grid "
             "(powers of 2) whose point estimate meets the target", ha="center", fontsize=7)  # fmt: skip
    fig.tight_layout()
    return fig


# ---- main ----------------------------------------------------------------------------------------------
def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--num", type=int, default=None, help="Monte-Carlo samples per TER point")
    p.add_argument("--eps", type=float, default=0.05, help="TER-gap target (nats/token) for Figure 3")
    p.add_argument("--delta", type=float, default=0.5, help="SER target for Figure 3")
    p.add_argument("--denoiser", choices=("exact", "learned"), default="exact",
                   help="exact conditionals (default), or also a transformer trained per (n-gram, L)")  # fmt: skip
    args = p.parse_args(argv)
    _common.setup()
    import pandas as pd

    from synthetic import steps_length as sl

    cfg = settings(args.quick)
    if args.num is not None:
        cfg["num_ter"] = args.num

    curves = sl.ter_curves(
        lengths=cfg["lengths"], exact_lengths=cfg["exact_lengths"], steps=cfg["steps"], mc_languages=cfg["mc_languages"]
    )
    ter = measure(curves, "Figure 1 (TER gap)", seed=args.seed, num=cfg["num_ter"])
    learn = pd.DataFrame(learning_rows(cfg, args))
    if args.denoiser == "learned":
        lr = pd.DataFrame(learned_rows(cfg, args))
        learn = pd.concat([learn, lr], ignore_index=True)
        ter = pd.concat([ter, lr.assign(method="mc (learned)")[TER_COLUMNS]], ignore_index=True)
    ter = ter[TER_COLUMNS]
    curves = sl.ser_curves(
        lengths=cfg["lengths"], mc_steps=cfg["ser_steps_mc"], additive_max_steps=cfg["additive_max_steps"]
    )
    ser = measure(curves, "Figure 2 (SER)", seed=args.seed, num=cfg["num_ser"])[SER_COLUMNS]
    mins = pd.DataFrame(
        sl.min_steps_rows(
            ter.to_dict("records"), ser.to_dict("records"), eps=args.eps, delta=args.delta,
            lengths=cfg["fig3_lengths"], fixed_max_length=cfg["fig3_fixed_max_length"], seed=args.seed,
        )
    )  # fmt: skip
    mins["min_steps"] = mins["min_steps"].astype("Int64")

    run = {
        "script": "experiments/steps_vs_length.py", "paper": "Feng2025 (arXiv 2502.09622)", **vars(args), **cfg,
        "schedule": "linear()", "policy": "RandomOrder", "reveal": "bernoulli (TER); bernoulli and fixed (SER)",
        "mc_batch": sl.MC_BATCH, "languages": list(sl.TER_LANGUAGES + sl.SER_LANGUAGES),
        "feng_bound": "eps_learning + 4 eps log|V| at eps = ((n-1)/N)^(1/n) (O-constant taken as 1)",
    }  # fmt: skip
    out = Path(args.out).resolve()
    run["out"] = str(out.relative_to(_common.ROOT)) if out.is_relative_to(_common.ROOT) else str(out)
    lengths = sorted(set(cfg["fig3_lengths"]) | set(cfg["lengths"]))
    for f, frame, fig in (("ter", ter, plot_ter(ter)), ("ser", ser, plot_ser(ser)),
                          ("min_steps", mins, plot_min_steps(mins, lengths))):  # fmt: skip
        _common.write_csv(args.out, f"{NAME}_{f}", frame)
        _common.write_png(args.out, f"{NAME}_{f}", fig)
    _common.write_csv(args.out, f"{NAME}_learning", learn)
    _common.write_json(args.out, NAME, run)
    report(ter, mins, learn)
    return {"ter": ter, "ser": ser, "min_steps": mins, "learning": learn, "settings": run}


def report(ter, mins, learn) -> None:
    import pandas as pd

    pd.set_option("display.width", 160)
    print("\nFigure 1: TER gap (nats/token); rows N, columns L")
    for name, d in ter[ter.method.isin(["mc", "exact (block product)"])].groupby("language", sort=False):
        d = d[d.method == ("exact (block product)" if (d.method != "mc").any() else "mc")]
        print(f"  {name}:\n" + d.pivot_table(index="steps", columns="length", values="ter_gap").round(4).to_string())
    print("\nFigure 3: smallest N (AR needs N = L)")
    print(mins.pivot_table(index="length", columns=["target", "language", "reveal"], values="min_steps",
                           aggfunc="first").to_string())  # fmt: skip
    print("\nLearning error: total TER gap vs Feng2025's bound (constant 1); move = gap - exact-denoiser gap")
    cols = ["language", "length", "steps", "method", "denoiser", "eps_learning", "ter_gap", "ter_gap_se",
            "feng_bound", "total_gap_within_bound", "move", "move_se"]  # fmt: skip
    print(learn[cols].round(4).to_string(index=False))


def replot(out=_common.FIGURES) -> dict:
    """Redraw the three PNGs from the CSVs (and the lengths in the JSON) in ``out`` (no recomputation)."""
    _common.setup()
    ter, ser, mins = _common.read_csvs(out, f"{NAME}_ter", f"{NAME}_ser", f"{NAME}_min_steps")
    cfg = _common.read_settings(out, NAME)
    lengths = sorted(set(cfg["fig3_lengths"]) | set(cfg["lengths"]))
    mins["min_steps"] = mins["min_steps"].astype("Int64")
    figs = {"ter": plot_ter(ter), "ser": plot_ser(ser), "min_steps": plot_min_steps(mins, lengths)}
    return {f: _common.write_png(out, f"{NAME}_{f}", fig) for f, fig in figs.items()}


if __name__ == "__main__":
    main()
