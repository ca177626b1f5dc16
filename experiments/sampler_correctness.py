"""Tang et al. 2026: few-step MDM samplers are not distributionally correct; on Markov data the
transition-level mismatch vanishes only as N -> L. Measured exactly (small L) and with check_sampler
(long L, the toolkit's float64 oracle), for the toolkit's own (correct) RandomOrder sampler.

    python experiments/sampler_correctness.py           # default: ~12 min on 2 cores at load 12 (20000-sample checks)
    python experiments/sampler_correctness.py --quick   # seconds (used by the tests)

(a) exact: a random Markov chain (V = 3, L = 8), RandomOrder with fixed counts and with Bernoulli reveal
    (linear schedule), N = 1 .. 4L: the mean over adjacent pairs of TV(pair law of p_N, pair law of q)
    (theory.check.transition_mismatch on the exact laws).
(b) check_sampler: a random Markov chain at L = 256, the N-step sampler tested against q itself (the
    reference RandomOrder with N = L reveals one token per step: its law is q, so the 2L - 1
    position/pair tests use q's exact marginals), num = 2000 and 20000, alpha = 0.01: verdict,
    Bonferroni-adjusted p-value, the worst pair and its standardized residual, and the TV per pair law the
    check detects with power 0.9 at that num.

Writes under --out (default figures/): sampler_correctness.csv / .png / .json; ``replot(out)`` redraws the PNG
from the CSV.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "sampler_correctness"
COLUMNS = ["part", "length", "steps", "reveal", "mean_pair_tv", "max_pair_tv", "passed", "adjusted_p", "statistic",
           "dof", "worst", "residual", "num", "alpha", "detectable_tv"]  # fmt: skip


def settings(quick: bool) -> dict:
    """The grids; --quick runs both parts, both reveal modes, at small sizes."""
    if quick:
        return dict(vocab=3, exact_length=4, exact_steps=[1, 2, 4, 8], check_length=16, check_steps=[1, 16],
                    nums=[256], alpha=0.01, concentration=0.5)  # fmt: skip
    return dict(vocab=3, exact_length=8, exact_steps=[1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64], check_length=256,
                check_steps=[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024], nums=[2000, 20000], alpha=0.01,
                concentration=0.5)  # fmt: skip


def exact_rows(cfg: dict, seed: int) -> list:
    """Part (a): exact transition-level mismatch of the N-step RandomOrder laws."""
    from synthetic.languages import random_markov
    from theory import policies, sampling
    from theory.check import transition_mismatch

    V, L = cfg["vocab"], cfg["exact_length"]
    chain = random_markov(_common.point_key(seed, 0), V, L, cfg["concentration"])
    q = chain.joint()
    rows = []
    for reveal in ("fixed", "bernoulli"):
        for N in _common.progress(cfg["exact_steps"], f"exact ({reveal})"):
            law = sampling.exact_law(q, policies.RandomOrder(), N, reveal=reveal).probs
            tv = transition_mismatch(law, q.probs, V, L)
            rows.append(dict(part="exact", length=L, steps=N, reveal=reveal, mean_pair_tv=float(tv.mean()),
                             max_pair_tv=float(tv.max())))  # fmt: skip
    return rows


def check_rows(cfg: dict, seed: int) -> list:
    """Part (b): check_sampler of the toolkit's N-step RandomOrder sampler against q (reference N = L)."""
    from synthetic.languages import random_markov
    from theory import policies, sampling
    from theory.check import Reference, check_sampler

    V, L = cfg["vocab"], cfg["check_length"]
    chain = random_markov(_common.point_key(seed, 1), V, L, cfg["concentration"])
    rows = []
    grid = [(num, r, N) for num in cfg["nums"] for r in ("fixed", "bernoulli") for N in cfg["check_steps"]]
    for i, (num, reveal, N) in enumerate(_common.progress(grid, "check_sampler")):

        def user(key, den, num, N=N, reveal=reveal):
            return sampling.sample(key, den, policies.RandomOrder(), N, num=num, reveal=reveal)

        rep = check_sampler(user, chain, reference=Reference(policies.RandomOrder()), steps=L, num=num,
                            alpha=cfg["alpha"], key=_common.point_key(seed, 2, i))  # fmt: skip
        worst = rep.deviations[0]
        rows.append(dict(part="check_sampler", length=L, steps=N, reveal=reveal, passed=rep.passed,
                         adjusted_p=rep.adjusted_p, statistic=rep.statistic, dof=rep.dof, worst=worst.what,
                         residual=worst.residual, num=rep.num, alpha=rep.alpha,
                         detectable_tv=rep.detectable_tv))  # fmt: skip
    return rows


def figure(frame):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=_common._style.figsize(2, scale=1.25))
    ex = frame[frame.part == "exact"]
    for reveal in ("fixed", "bernoulli"):
        d = ex[ex.reveal == reveal]
        a.plot(d.steps, np.maximum(d.mean_pair_tv, 1e-17), label=reveal, **_common.style(reveal))
    L = int(ex.length.iloc[0])
    a.axvline(L, color="#888888", lw=0.8, ls=":")
    a.set(xscale="log", yscale="log", xlabel="steps N", ylabel="mean pair TV (p_N vs q)",
          title=f"(a) exact, Markov V = 3, L = {L} (fixed, N >= L: 0 up to rounding)")  # fmt: skip
    a.legend()
    ck = frame[frame.part == "check_sampler"]
    for j, num in enumerate(sorted(ck.num.unique())):
        for reveal in ("fixed", "bernoulli"):
            d = ck[(ck.reveal == reveal) & (ck.num == num)]
            y = -np.log10(np.maximum(d.adjusted_p.astype(float), 1e-300))
            st = dict(_common.style(reveal), color=_common.series_color(j))
            b.plot(d.steps, y, label=f"{reveal}, num = {int(num)}", **st)
    alpha = float(ck.alpha.iloc[0])
    Lc = int(ck.length.iloc[0])
    b.axhline(-np.log10(alpha), color="#888888", lw=0.8, ls="--", label=f"alpha = {alpha:g}")
    b.axvline(Lc, color="#888888", lw=0.8, ls=":")
    b.set_yscale("symlog", linthresh=1.0)  # linear below 1 (p > 0.1), logarithmic above: the alpha line stays visible
    b.set_ylim(bottom=0.0)
    b.set(xscale="log", xlabel="steps N", ylabel="-log10 Bonferroni-adjusted p",
          title=f"(b) check_sampler vs q, L = {Lc} (300: p < 1e-300)")  # fmt: skip
    b.legend()
    fig.tight_layout()
    return fig


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    import pandas as pd

    cfg = settings(args.quick)
    rows = exact_rows(cfg, args.seed) + check_rows(cfg, args.seed)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    paths = _common.write_outputs(args.out, NAME, frame, figure(frame), dict(cfg, seed=args.seed, quick=args.quick))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(frame.drop(columns=["alpha"]).to_string(index=False))
    return frame, paths


def replot(out=_common.FIGURES) -> dict:
    """Redraw sampler_correctness.png from the CSV in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    (frame,) = _common.read_csvs(out, NAME)
    return {"png": _common.write_png(out, NAME, figure(frame))}


if __name__ == "__main__":
    main()
