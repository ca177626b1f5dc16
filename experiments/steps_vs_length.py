"""Feng2025: perplexity (TER) is flat in L, sequence error (SER) is linear in L.

    python experiments/steps_vs_length.py            # default: a few minutes on 2 cores
    python experiments/steps_vs_length.py --quick    # seconds (used by the tests)

Sampler: Feng2025's (RandomOrder, Bernoulli reveal with the linear schedule, values drawn independently
from the exact conditionals); fixed counts are shown for the copy-pairs SER too.

Writes under --out (default figures/):
  steps_vs_length_ter.csv / .png    Figure 1: log TER(p_N) - log TER(q) vs N for several L
  steps_vs_length_ser.csv / .png    Figure 2: SER vs N, worst-case languages, closed form over measurements
  steps_vs_length_min_steps.csv/.png Figure 3: smallest N reaching TER gap <= eps and SER <= delta vs L (AR: N = L)
  steps_vs_length_learning.csv      learning-error variant: smoothed denoiser, TER gap move vs bounds
  steps_vs_length.json              every setting of the run
and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --denoiser learned: Figure 1 adds Monte-Carlo TER gaps of a transformer trained on each n-gram language
# at each length in learned_lengths (synthetic.train.fit_denoiser; its eps_learning, Feng2025's per-token KL
# of the learned conditionals, is recorded next to the gap). Off by default (training costs minutes).
DENOISERS = ("exact", "learned")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="figures", help="output directory (default figures/)")
    ap.add_argument("--num", type=int, default=None, help="Monte-Carlo samples per point (TER)")
    ap.add_argument("--eps", type=float, default=0.05, help="TER-gap target (nats/token) for Figure 3")
    ap.add_argument("--delta", type=float, default=0.5, help="SER target for Figure 3")
    ap.add_argument(
        "--denoiser",
        choices=DENOISERS,
        default="exact",
        help="exact conditionals (default), or also a learned transformer per (n-gram, L) in Figure 1",
    )
    return ap.parse_args(argv)


def settings_for(args) -> dict:
    if args.quick:
        return dict(
            lengths=[16],
            exact_lengths=[4],
            steps=[1, 4],
            ser_steps_mc=[4, 16],
            num_ter=100,
            num_ser=50,
            fig3_lengths=[16, 32],
            learning_lam=0.05,
            fig3_fixed_max_length=32,
            learning_steps=[4],
            learning_lengths=[16],
            learning_exact_length=4,
            additive_max_steps=16,
            additive_reveals=["bernoulli"],
            learned_lengths=[16],
            learned_train_steps=30,
        )
    return dict(
        lengths=[16, 64, 256, 1024],
        exact_lengths=[6, 8],
        steps=[1, 2, 4, 8, 16, 32, 64],
        ser_steps_mc=[1, 4, 16, 64, 256, 1024, 4096],
        num_ter=1000,
        num_ser=200,
        fig3_lengths=[16, 32, 64, 128, 256, 512, 1024],
        fig3_fixed_max_length=512,
        learning_lam=0.05,
        learning_steps=[2, 8, 32],
        learning_lengths=[64, 1024],
        learning_exact_length=6,
        additive_max_steps=1024,
        additive_reveals=["bernoulli"],
        learned_lengths=[16, 64],
        learned_train_steps=500,
    )


def main(argv=None):
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from tqdm import tqdm

    from synthetic import languages as la
    from synthetic import steps_length as sl
    from synthetic import worst_case as wc
    from theory import bounds as B
    from theory import schedules as S
    from theory.denoiser import smoothed, smoothing_kl_bound

    args = parse_args(argv)
    cfg = settings_for(args)
    if args.num is not None:
        cfg["num_ter"] = args.num
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    sched = S.linear()
    key = jax.random.PRNGKey(args.seed)
    # ---- languages ---------------------------------------------------------------------------------
    ter_langs = {
        "bigram V=3 h=0.6": la.entropy_ngram(jax.random.fold_in(key, 1), 3, 2, 16, 0.6),
        "trigram V=2 h=0.35": la.entropy_ngram(jax.random.fold_in(key, 2), 2, 3, 16, 0.35),
        "noisy copy pairs": wc.noisy_copy_pairs(16, 0.1),
    }
    # --quick skips the Markov-engine Monte Carlo (its compilations dominate a seconds-long run)
    have_markov = not args.quick

    def at_length(lang, L):
        return lang.with_length(L)

    # ---- Figure 1: TER gap vs N --------------------------------------------------------------------
    rows = []
    jobs = []
    for name, lang in ter_langs.items():
        for L in cfg["exact_lengths"]:
            if isinstance(lang, wc.BlockLanguage) or (lang.vocab_size + 1) ** L <= 3**8:
                jobs.append((name, lang, L, "exact"))
        for L in cfg["lengths"]:
            if isinstance(lang, wc.BlockLanguage):
                jobs.append((name, lang, L, "exact (block product)"))
                jobs.append((name, lang, L, "mc"))
            elif have_markov:
                jobs.append((name, lang, L, "mc"))
    for j, (name, lang, L, method) in enumerate(tqdm(jobs, desc="Figure 1 (TER gap)", file=sys.stderr)):
        lg = at_length(lang, L)
        for N in cfg["steps"]:
            if method == "exact":
                m = sl.exact_metrics(lg, N, reveal="bernoulli", schedule=sched)
            elif method.startswith("exact (block"):
                m = wc.block_bernoulli_metrics(lg, N, schedule=sched)
                m["ter_gap_se"] = 0.0
            else:
                m = sl.mc_metrics(
                    sl.mc_key(args.seed, 1, j, N), lg, N, num=cfg["num_ter"], reveal="bernoulli", schedule=sched
                )
            rows.append(
                {
                    "language": name,
                    "length": L,
                    "steps": N,
                    "method": method,
                    "ter_gap": m["ter_gap"],
                    "ter_gap_se": m["ter_gap_se"],
                    "log_ter_q": m["log_ter_q"],
                }
            )
    if args.denoiser == "learned":
        from synthetic.train import fit_denoiser

        ljobs = [
            (n, lg, L)
            for n, lg in ter_langs.items()
            if not isinstance(lg, wc.BlockLanguage)
            for L in cfg["learned_lengths"]
        ]
        for j, (name, lang, L) in enumerate(tqdm(ljobs, desc="Figure 1 (learned denoisers)", file=sys.stderr)):
            lg = at_length(lang, L)
            den, hist = fit_denoiser(
                lg, key=sl.mc_key(args.seed, 4, j), steps=cfg["learned_train_steps"], progress=False
            )
            eps_l = float(hist["eps_learning"].iloc[-1]) if "eps_learning" in hist else float("nan")
            for N in cfg["steps"]:
                m = sl.mc_metrics(
                    sl.mc_key(args.seed, 5, j, N),
                    lg,
                    N,
                    num=cfg["num_ter"],
                    reveal="bernoulli",
                    schedule=sched,
                    denoiser=den,
                )
                rows.append(
                    {
                        "language": name,
                        "length": L,
                        "steps": N,
                        "method": "mc (learned)",
                        "ter_gap": m["ter_gap"],
                        "ter_gap_se": m["ter_gap_se"],
                        "log_ter_q": m["log_ter_q"],
                        "eps_learning": eps_l,
                    }
                )
    ter = pd.DataFrame(rows)
    ter.to_csv(os.path.join(args.out, "steps_vs_length_ter.csv"), index=False)

    fig, axes = plt.subplots(1, len(ter_langs), figsize=(5 * len(ter_langs), 4), squeeze=False)
    for ax, name in zip(axes[0], ter_langs):
        d = ter[ter.language == name]
        for (L, method), g in d.groupby(["length", "method"]):
            lab = f"L={L} ({method})"
            if method.startswith("mc"):
                ax.errorbar(
                    g.steps,
                    g.ter_gap,
                    yerr=1.96 * g.ter_gap_se,
                    fmt="o" if method == "mc" else "x",
                    ms=3,
                    capsize=2,
                    label=lab,
                )
            else:
                ax.plot(g.steps, g.ter_gap, "-" if method != "exact" else "--", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("steps N")
        ax.set_ylabel("log TER(p_N) - log TER(q)  [nats/token]")
        ax.set_title(name)
        ax.legend(fontsize=6)
    fig.suptitle("Feng2025 Fig. 1: TER gap vs steps is flat in L (95% error bars on MC)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "steps_vs_length_ter.png"), dpi=120)
    plt.close(fig)

    # ---- Figure 2: SER vs N, worst cases -------------------------------------------------------------
    rows = []
    ser_jobs = []
    for L in cfg["lengths"]:
        ser_jobs.append(("copy pairs", L))
        if have_markov:
            ser_jobs.append(("additive 3-gram V=2", L))
    for j, (name, L) in enumerate(tqdm(ser_jobs, desc="Figure 2 (SER)", file=sys.stderr)):
        grid = sorted({int(2**e) for e in range(0, int(np.log2(4 * L)) + 1)})
        if name == "copy pairs":
            for N in grid:
                rows.append(
                    {
                        "language": name,
                        "length": L,
                        "steps": N,
                        "reveal": "bernoulli",
                        "method": "closed form",
                        "ser": B.copy_pairs_ser_bernoulli(L, S.reveal_probs(sched, N)),
                        "ser_se": 0.0,
                    }
                )
                rows.append(
                    {
                        "language": name,
                        "length": L,
                        "steps": N,
                        "reveal": "fixed",
                        "method": "closed form",
                        "ser": B.copy_pairs_ser_fixed(L, S.fixed_counts(sched, N, L)),
                        "ser_se": 0.0,
                    }
                )
            lang = wc.copy_pairs(L)
            mc_grid = [N for N in cfg["ser_steps_mc"] if N <= 4 * L]
        else:
            lang = wc.additive_ngram(2, L)
            # around the threshold N ~ L (the Markov engine costs O(N L) per sample here)
            mc_grid = [
                N for N in sorted({1, 4, L // 8, L // 4, L // 2, L, 2 * L}) if 1 <= N <= cfg["additive_max_steps"]
            ]
        reveals = ("bernoulli", "fixed") if name == "copy pairs" else tuple(cfg["additive_reveals"])
        for N in mc_grid:
            for reveal in reveals:
                m = sl.mc_metrics(
                    sl.mc_key(args.seed, 2, j, N, reveal == "fixed"),
                    lang,
                    N,
                    num=cfg["num_ser"],
                    reveal=reveal,
                    schedule=sched,
                )
                rows.append(
                    {
                        "language": name,
                        "length": L,
                        "steps": N,
                        "reveal": reveal,
                        "method": "mc",
                        "ser": m["ser"],
                        "ser_se": m["ser_se"],
                    }
                )
    ser = pd.DataFrame(rows)
    ser.to_csv(os.path.join(args.out, "steps_vs_length_ser.csv"), index=False)
    names2 = list(dict.fromkeys(ser.language))
    fig, axes = plt.subplots(1, len(names2), figsize=(5.5 * len(names2), 4), squeeze=False)
    for ax, name in zip(axes[0], names2):
        d = ser[ser.language == name]
        for i, L in enumerate(sorted(d.length.unique())):
            col = f"C{i}"
            for reveal, ls, mk in (("bernoulli", "-", "o"), ("fixed", ":", "s")):
                cf = d[(d.length == L) & (d.reveal == reveal) & (d.method == "closed form")]
                if len(cf):
                    ax.plot(cf.steps, cf.ser, ls, color=col, label=f"L={L} {reveal} closed form")
                mc = d[(d.length == L) & (d.reveal == reveal) & (d.method == "mc")]
                if len(mc):
                    ax.errorbar(
                        mc.steps,
                        mc.ser,
                        yerr=1.96 * mc.ser_se,
                        fmt=mk,
                        color=col,
                        ms=3,
                        capsize=2,
                        mfc="none" if reveal == "fixed" else col,
                        label=f"L={L} {reveal} MC",
                    )
            ax.axvline(L, color=col, lw=0.5, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps N (thin lines: N = L)")
        ax.set_ylabel("SER")
        ax.set_title(name)
        ax.legend(fontsize=5, ncol=2)
    fig.suptitle("Feng2025 Fig. 2: SER vs steps (worst cases): needs N ~ L")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "steps_vs_length_ser.png"), dpi=120)
    plt.close(fig)

    # ---- Figure 3: smallest N vs L ---------------------------------------------------------------------
    rows = []
    for (name, L, method), g in ter[ter.method.isin(["mc", "exact (block product)"])].groupby(
        ["language", "length", "method"]
    ):
        if method == "mc" and name == "noisy copy pairs":
            continue
        N = sl.min_steps(g.steps, g.ter_gap, args.eps)
        rows.append(
            {"target": f"TER gap <= {args.eps:g}", "language": name, "length": L, "min_steps": N, "method": method}
        )
    for L in cfg["fig3_lengths"]:
        rows.append(
            {
                "target": f"SER <= {args.delta:g}",
                "language": "copy pairs (bernoulli)",
                "length": L,
                "min_steps": B.copy_pairs_min_steps_linear(L, args.delta),
                "method": "closed form",
            }
        )
        if L <= cfg["fig3_fixed_max_length"]:  # the exact scan over N costs ~L^2 DP steps
            rows.append(
                {
                    "target": f"SER <= {args.delta:g}",
                    "language": "copy pairs (fixed)",
                    "length": L,
                    "min_steps": B.copy_pairs_min_steps(L, args.delta, reveal="fixed"),
                    "method": "closed form",
                }
            )
    add = ser[(ser.language != "copy pairs") & (ser.method == "mc")]
    for (L, reveal), g in add.groupby(["length", "reveal"]):
        rows.append(
            {
                "target": f"SER <= {args.delta:g}",
                "language": f"additive 3-gram ({reveal})",
                "length": L,
                "min_steps": sl.min_steps(g.steps, g.ser, args.delta),
                "method": "mc (grid)",
            }
        )
    mins = pd.DataFrame(rows)
    mins.to_csv(os.path.join(args.out, "steps_vs_length_min_steps.csv"), index=False)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    Ls = np.array(sorted(set(cfg["fig3_lengths"]) | set(cfg["lengths"])))
    ax.plot(Ls, Ls, "k-", lw=2, label="autoregressive: N = L")
    for (tgt, name), g in mins.groupby(["target", "language"]):
        g = g.dropna(subset=["min_steps"]).sort_values("length")
        if len(g):
            ax.plot(g.length, g.min_steps, "o-" if tgt.startswith("SER") else "s--", ms=4, label=f"{tgt}: {name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("length L")
    ax.set_ylabel("smallest N reaching the target")
    ax.set_title("Feng2025 Fig. 3: TER flat, SER linear in L")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "steps_vs_length_min_steps.png"), dpi=120)
    plt.close(fig)

    # ---- learning-error variant --------------------------------------------------------------------
    lam = cfg["learning_lam"]
    eps_l = smoothing_kl_bound(lam)
    base = ter_langs["bigram V=3 h=0.6"]
    rows = []
    Le = cfg["learning_exact_length"]
    ge = base.with_length(Le)
    qe = ge.joint()

    dex = qe.denoiser()
    for N in tqdm(cfg["learning_steps"], desc="learning-error variant", file=sys.stderr):
        m0 = sl.exact_metrics(qe, N, schedule=sched)
        m1 = sl.exact_metrics(qe, N, schedule=sched, denoiser=smoothed(dex, lam))
        move = B.ter_gap_locality_bound(m1["law"], ge, reference=m0["law"])
        dec = B.dependence_kl_bound(qe, None, N, denoiser=smoothed(dex, lam), reveal="bernoulli", schedule=sched)
        rows.append(
            {
                "length": Le,
                "steps": N,
                "method": "exact",
                "lam": lam,
                "eps_learning": eps_l,
                "ter_gap_exact_denoiser": m0["ter_gap"],
                "ter_gap_smoothed": m1["ter_gap"],
                "move": m1["ter_gap"] - m0["ter_gap"],
                "move_se": 0.0,
                "locality_bound_on_move": move["bound"],
                "kl_rate": dec.kl / Le,
                "kl_rate_bound": (dec.model_error + dec.dependence) / Le,
            }
        )
        if have_markov:
            for L in cfg["learning_lengths"]:
                lg = base.with_length(L)
                d = lg.denoiser()
                k = sl.mc_key(args.seed, 3, L, N)
                a = sl.mc_metrics(k, lg, N, num=cfg["num_ter"], schedule=sched, denoiser=d)
                b = sl.mc_metrics(k, lg, N, num=cfg["num_ter"], schedule=sched, denoiser=smoothed(d, lam))
                rows.append(
                    {
                        "length": L,
                        "steps": N,
                        "method": "mc",
                        "lam": lam,
                        "eps_learning": eps_l,
                        "ter_gap_exact_denoiser": a["ter_gap"],
                        "ter_gap_smoothed": b["ter_gap"],
                        "move": b["ter_gap"] - a["ter_gap"],
                        "move_se": float(np.hypot(a["ter_gap_se"], b["ter_gap_se"])),
                        "locality_bound_on_move": np.nan,
                        "kl_rate": np.nan,
                        "kl_rate_bound": np.nan,
                    }
                )
    learn = pd.DataFrame(rows)
    learn.to_csv(os.path.join(args.out, "steps_vs_length_learning.csv"), index=False)

    # ---- settings + table ------------------------------------------------------------------------------
    import jax as _jax

    settings = {
        "script": "experiments/steps_vs_length.py",
        "paper": "Feng2025 (arXiv 2502.09622)",
        "seed": args.seed,
        "quick": args.quick,
        "out": args.out,
        "eps": args.eps,
        "delta": args.delta,
        "denoiser": args.denoiser,
        "schedule": repr(sched),
        "policy": "RandomOrder",
        "reveal": "bernoulli (TER); bernoulli and fixed (SER)",
        "dtype": "float64",
        "markov_engine": have_markov,
        "languages": list(ter_langs),
        **cfg,
        "versions": {
            "python": platform.python_version(),
            "jax": _jax.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(args.out, "steps_vs_length.json"), "w") as fh:
        json.dump(settings, fh, indent=2, default=str)

    pd.set_option("display.width", 160)
    print("\nFigure 1: TER gap (nats/token) vs N — columns L (mc/exact); rows N")
    for name in ter_langs:
        d = ter[(ter.language == name) & ter.method.isin(["mc", "exact (block product)"])]
        if d.empty:  # no Monte Carlo (--quick): the exact small-L rows
            d = ter[(ter.language == name) & (ter.method == "exact")]
        if name == "noisy copy pairs":
            d = d[d.method != "mc"]
        piv = d.pivot_table(index="steps", columns="length", values="ter_gap")
        print(f"  {name}:\n" + piv.round(4).to_string())
    if args.denoiser == "learned":
        d = ter[ter.method == "mc (learned)"]
        print("\nFigure 1, learned denoisers: TER gap (eps_learning in the column header)")
        print(
            d.pivot_table(index="steps", columns=["language", "length", "eps_learning"], values="ter_gap")
            .round(4)
            .to_string()
        )
    print("\nFigure 3: smallest N (AR needs N = L)")
    print(mins.pivot_table(index="length", columns="language", values="min_steps", aggfunc="first").to_string())
    print(f"\nLearning-error variant (lam={lam}, eps_learning={eps_l:.4f}):")
    print(
        learn[["length", "steps", "method", "move", "move_se", "locality_bound_on_move", "kl_rate", "kl_rate_bound"]]
        .round(4)
        .to_string(index=False)
    )
    if not have_markov:
        why = "--quick skips it" if args.quick else "synthetic.markov (issue 3) is not installed"
        print(f"\nnote: no Markov-engine Monte Carlo ({why}): n-gram curves are exact small-L only.")
    print(f"\nwrote {args.out}/steps_vs_length_*.csv/.png and steps_vs_length.json in {time.time() - t0:.0f} s")
    return settings


if __name__ == "__main__":
    main()
