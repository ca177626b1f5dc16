"""Exact KL(q || p_N) of parallel MDM sampling versus the number of steps N.

The sampling error of an MDM with the *exact* denoiser comes only from revealing several tokens at
once with independently drawn values. For a random 3-gram language (synthetic.languages.random_ngram),
random order, both reveal modes and three schedules, each point is one exact library call,
theory.dependence.error_decomposition: the sampler's law p_N, KL(q || p_N) and the summed joint
dependence along the data path, which bounds it (BenHamu2025; Feng2025 rests on the same sum); TV and
the log-TER gap come from theory.metrics. No Monte Carlo.

The figure draws KL on a log axis (KL >= 0); points where KL is exactly 0 (|KL| <= 1e-12, e.g. one token
per step) are drawn as open triangles on a floor line, the largest power of ten below every positive value.

    python experiments/kl_vs_steps.py            # V=2, L=8: under a minute
    python experiments/kl_vs_steps.py --quick    # V=2, L=6, seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

SCHEDULES = ("linear", "cosine", "cosine_squared")
REVEALS = ("fixed", "bernoulli")
ZERO = 1e-12  # |KL| at or below this is an exact zero (float64 rounding of an exact identity)


def language(vocab: int, length: int, seed: int, concentration: float):
    """The random 3-gram language of the run (key PRNGKey(seed))."""
    from synthetic import languages

    return languages.random_ngram(_common.point_key(seed), vocab, 3, length, concentration=concentration)


def point(q, schedule: str, reveal: str, steps: int) -> dict:
    """One row: exact KL, TV, log-TER gap, the dependence bound and the expected NFE of N-step sampling."""
    from theory import metrics, schedules
    from theory.dependence import error_decomposition

    dec = error_decomposition(q, None, steps, reveal=reveal, schedule=getattr(schedules, schedule)())
    p = dec.law.probs
    return {
        "schedule": schedule,
        "reveal": reveal,
        "steps": steps,
        "kl": dec.kl,
        "tv": metrics.tv(q.probs, p),
        "log_ter_gap": metrics.log_ter(p, q) - q.entropy() / q.length,
        "dependence_bound": dec.dependence,
        "expected_nfe": dec.expected_nfe,
    }


def run(vocab: int, length: int, seed: int, concentration: float):
    import pandas as pd

    q = language(vocab, length, seed, concentration).joint()
    grid = [(s, r, n) for s in SCHEDULES for r in REVEALS for n in range(1, length + 1)]
    rows = [
        {"language": "3-gram", "vocab_size": vocab, "length": length, **point(q, s, r, n)}
        for s, r, n in _common.progress(grid, "kl_vs_steps")
    ]
    return pd.DataFrame(rows)


def log_floor(values) -> float:
    """The largest power of ten strictly below the smallest value above ZERO (where exact zeros are drawn)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    pos = v[v > ZERO]
    return 10.0 ** (np.ceil(np.log10(pos.min())) - 1) if pos.size else 1e-3


def plot(df):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    floor = log_floor(list(df.kl) + list(df.dependence_bound))
    fig, axes = plt.subplots(1, 2, figsize=_style.figsize(2), sharey=True)

    def draw(ax, x, y, color, ls, marker, label):
        y = y.to_numpy()
        pos = y > ZERO
        ax.plot(x[pos], y[pos], color=color, ls=ls, marker=marker, ms=4, label=label)
        if (~pos).any():  # exact zeros: open triangles on the floor
            ax.plot(x[~pos], [floor] * int((~pos).sum()), ls="none", marker="v", ms=7, mfc="none", color=color)

    for ax, reveal in zip(axes, REVEALS):
        d = df[df.reveal == reveal]
        for name in SCHEDULES:
            g = d[d.schedule == name]
            draw(ax, g.steps.to_numpy(), g.kl, _common.style(name)["color"], "-", "o", f"KL, {name}")
        lin = d[d.schedule == "linear"]
        draw(ax, lin.steps.to_numpy(), lin.dependence_bound, _common.style("linear")["color"], "--", "",
             "dependence bound (linear)")  # fmt: skip
        ax.axhline(floor, color="0.6", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, None)
        ax.set_xlabel(_style.label("steps"))
        ax.set_title(f"{reveal} reveal, random order, V={d.vocab_size.iloc[0]}, L={d.length.iloc[0]}")
        ax.grid(alpha=0.3, which="major")
    axes[0].set_ylabel(_style.label("kl"))
    handles, labels = axes[1].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="v", mfc="none", color="0.3"))
    labels.append(f"exactly 0 (drawn at {floor:.0e})")
    axes[1].legend(handles, labels)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--vocab", type=int, default=2)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--concentration", type=float, default=0.3)
    args = p.parse_args(argv)
    _common.setup()
    V, L = (2, 6) if args.quick else (args.vocab, args.length)
    df = run(V, L, args.seed, args.concentration)
    settings = {
        "script": "experiments/kl_vs_steps.py",
        **{k: v for k, v in vars(args).items() if k != "out"},
        "vocab": V,
        "length": L,
        "language": "synthetic.languages.random_ngram(PRNGKey(seed), V, 3, L, concentration)",
        "policy": "RandomOrder",
        "schedules": list(SCHEDULES),
        "reveals": list(REVEALS),
    }
    paths = _common.write_outputs(args.out, "kl_vs_steps", df, plot(df), settings)
    show = df[df.schedule == "linear"][["reveal", "steps", "kl", "dependence_bound", "expected_nfe"]]
    print(show.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print("wrote", *paths.values())
    return df


def replot(out=_common.FIGURES) -> dict:
    """Redraw kl_vs_steps.png from kl_vs_steps.csv in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    (df,) = _common.read_csvs(out, "kl_vs_steps")
    return {"png": _common.write_png(out, "kl_vs_steps", plot(df))}


if __name__ == "__main__":
    main()
