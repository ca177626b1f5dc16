"""Yang2025: any-process generation (remask / insert / delete), self-correction and parallel time.

    python experiments/any_process.py            # default: a few minutes on one core
    python experiments/any_process.py --quick    # seconds (used by the tests)

Every number is a library call (theory/anyprocess.py, synthetic/controllers.py); this script only chooses
the grids, draws and writes. Writes under --out (default figures/):

  any_process_self_correction.csv / .png  (a) SER vs NFE vs L: plain MDM (Feng2025's sampler; SER closed
                                          form on copy pairs) against an N-step draft + remask-and-refill
                                          with exact conditionals (prefix / factor filters), copy pairs and
                                          the additive n-gram; NFE needed for SER <= delta vs L
  any_process_nfe_growth.csv              (a) closed forms of that NFE up to L = 2^20
  any_process_parity.csv / .png           (b) parity by deletion: exact step counts up to n >= 1000,
                                          every input up to length 12, and a tiny model trained on
                                          length-2 transitions tested at every length
  any_process_dyck.csv / .png             (c) the insertion generator's support vs the enumerated
                                          two-sided Dyck-k words, per length
  any_process_parallel_time.csv / .png    (d) steps vs n: left-to-right scratchpad (AR), MDM with a
                                          programmed denoiser (parity tree, prefix sums), AP-MDM deletion
  any_process.json                        every setting and the headline numbers
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _style  # noqa: E402

NAME = "any_process"
Z95 = 1.959963984540054
#: point_key labels of the figures (one namespace per figure)
FIG_SC, FIG_PARITY, FIG_DYCK = 1, 2, 3
SC_METHODS = ("plain MDM", "remask (prefix)", "remask (factor)")


def settings(quick: bool) -> dict:
    """The grids. --quick runs every code path of the default at small sizes, except the additive n-gram
    of (a) (the same functions with another language; its two sampler compilations would double the quick
    run; tests/test_anyprocess.py checks its controller)."""
    if quick:
        return dict(
            sc_lengths=[16],
            sc_steps=[1, 4],
            mdm_steps=[1, 4, 16],
            add_lengths=[],  # the additive n-gram: default only (two sampler compilations, ~15 s)
            add_steps=[1, 4],
            num=64,
            max_rounds=40,
            delta=[0.5, 0.1],
            growth_lengths=[2**j for j in range(2, 11, 2)],
            parity_ns=[1, 2, 3, 5, 8, 13, 64],
            parity_seq_max=64,
            parity_all_max=12,  # the shapes of tests/test_anyprocess.py: one compilation serves both
            head_lengths=[2, 5, 16],
            head_num=32,
            head_train_steps=100,
            dyck=[(1, 3), (2, 2)],
            dyck_mc=(2, 4, 200),
            pt_ns=[1, 2, 3, 5, 8, 17, 64],
            pt_ar_max=64,
        )
    return dict(
        sc_lengths=[16, 64, 256, 1024, 4096],
        sc_steps=[1, 4, 8],
        mdm_steps=[1, 4, 16, 64, 256],  # MC; the closed form covers every N (MC at N = L, L = 4096: minutes)
        add_lengths=[16, 64, 256, 1024],
        add_steps=[1, 4, 8],
        num=400,
        max_rounds=40,
        delta=[0.5, 0.1],
        growth_lengths=[2**j for j in range(2, 21)],
        parity_ns=list(range(1, 17)) + [31, 32, 33, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096],
        parity_seq_max=1024,
        parity_all_max=12,
        head_lengths=[2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
        head_num=200,
        head_train_steps=500,
        dyck=[(1, 5), (2, 4), (3, 3)],
        dyck_mc=(2, 10, 2000),
        pt_ns=list(range(1, 17)) + [31, 32, 33, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096],
        pt_ar_max=4096,
    )


# ---- (a) self-correction ------------------------------------------------------------------------------
def self_correction_rows(cfg, seed: int) -> list[dict]:
    """Monte-Carlo points (plain MDM by the core sampler, remasking by the AP-MDM sampler) and closed forms."""
    from synthetic import controllers as C
    from synthetic import worst_case as wc

    jobs = [("copy pairs", L, N) for L in cfg["sc_lengths"] for N in cfg["sc_steps"]]
    jobs += [("additive 3-gram", L, N) for L in cfg["add_lengths"] for N in cfg["add_steps"]]
    rows = []
    for name, L, N in _common.progress(jobs, "(a) self-correction"):
        lang = wc.copy_pairs(L) if name == "copy pairs" else wc.additive_ngram(2, L)
        filters = ("prefix", "factor") if name == "copy pairs" else ("prefix",)
        for f_i, filt in enumerate(filters):
            key = _common.point_key(seed, FIG_SC, 1 + f_i, name == "copy pairs", L, N)
            pt = C.self_correction_point(lang, N, filter=filt, key=key, num=cfg["num"], max_rounds=cfg["max_rounds"])
            rows.append(dict(language=name, length=L, steps=N, method=f"remask ({filt})", source="mc", **pt))
    mdm_jobs = [("copy pairs", L, N) for L in cfg["sc_lengths"] for N in cfg["mdm_steps"] if N <= L]
    mdm_jobs += [("additive 3-gram", L, N) for L in cfg["add_lengths"] for N in cfg["mdm_steps"] if N <= L]
    for name, L, N in _common.progress(mdm_jobs, "(a) plain MDM"):
        lang = wc.copy_pairs(L) if name == "copy pairs" else wc.additive_ngram(2, L)
        key = _common.point_key(seed, FIG_SC, 0, name == "copy pairs", L, N)
        pt = C.plain_mdm_point(lang, N, key=key, num=cfg["num"])
        rows.append(dict(language=name, length=L, steps=N, method="plain MDM", source="mc", **pt))
    for L in cfg["sc_lengths"]:
        dense = {2**j for j in range(0, int(math.log2(4 * L)) + 1)}  # closed forms: N = 1 .. 4L
        for N in sorted(set(cfg["sc_steps"]) | dense):
            cf = C.copy_pairs_closed_forms(L, N, cfg["max_rounds"])
            for m in SC_METHODS:
                if m != "plain MDM" and N not in cfg["sc_steps"]:
                    continue
                rows.append(dict(language="copy pairs", length=L, steps=N, method=m, source="closed form",
                                 ser=cf[m][0], nfe=cf[m][1]))  # fmt: skip
    return rows


def growth_rows(cfg) -> list[dict]:
    """NFE each method needs on copy pairs for SER <= delta, closed forms, L up to 2^20."""
    from synthetic import controllers as C

    rows = []
    for delta in cfg["delta"]:
        for L in cfg["growth_lengths"]:
            g = C.nfe_for_ser(L, delta)
            for m in SC_METHODS:
                rows.append(dict(delta=delta, length=L, method=m, nfe=g[m],
                                 draft_steps=g["plain_mdm_steps"] if m == "plain MDM" else 1))  # fmt: skip
    return rows


def growth_summary(growth) -> dict:
    """Measured growth of the NFE needed for SER <= delta between the two largest lengths: log-log slope
    for plain MDM (1 = linear), NFE added per doubling of L for the remasking filters."""
    out = {}
    for (delta, m), g in growth.groupby(["delta", "method"]):
        g = g.sort_values("length")
        (L0, n0), (L1, n1) = g[["length", "nfe"]].iloc[-2], g[["length", "nfe"]].iloc[-1]
        dl = math.log2(L1 / L0)
        out[f"delta={delta:g} {m}"] = {
            "nfe_at_max_length": float(n1),
            "max_length": int(L1),
            "loglog_slope": math.log2(n1 / n0) / dl,
            "nfe_per_doubling": (n1 - n0) / dl,
        }
    return out


def plot_self_correction(sc, growth):
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=_style.figsize(3, 1, scale=1.3))
    marks = {"plain MDM": "o", "remask (prefix)": "s", "remask (factor)": "^"}
    for ax, name in zip((axes[0], axes[2]), ("copy pairs", "additive 3-gram")):
        d = sc[sc.language == name]
        Ls = sorted(d.length.unique())
        for i, L in enumerate(Ls):
            col = _common.series_color(i)
            cf = d[(d.length == L) & (d.source == "closed form") & (d.method == "plain MDM")].sort_values("nfe")
            if len(cf):
                ax.plot(cf.nfe, cf.ser, color=col, lw=1.1)
            for m in SC_METHODS:
                g = d[(d.length == L) & (d.source == "mc") & (d.method == m)].sort_values("nfe")
                if not len(g):
                    continue
                ax.errorbar(g.nfe, g.ser, xerr=Z95 * g.nfe_se, yerr=Z95 * g.ser_se, fmt=marks[m], ms=4,
                            mfc="none" if m != "plain MDM" else col, color=col, capsize=2, lw=0.8,
                            ls="none" if len(cf) or m != "plain MDM" else "-")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(_style.label("nfe", "(calls that change the sequence)"))
        ax.set_ylabel(_style.label("ser"))
        ax.set_title(f"{name}: SER vs NFE (remasking: SER = 0 measured)")
        if not len(d):
            ax.text(0.5, 0.5, "not run (--quick)", ha="center", transform=ax.transAxes)
            continue
        handles = [Line2D([], [], color=_common.series_color(i), lw=2, label=f"L = {L}") for i, L in enumerate(Ls)]
        if (d.source == "closed form").any():
            handles.append(Line2D([], [], color="0.3", lw=1.1, label="plain MDM, closed form (Feng2025)"))
        handles += [Line2D([], [], color="0.3", marker=marks[m], ls="none", mfc="0.3" if m == "plain MDM" else "none",
                           label=f"{m}, MC (draft N = 1, 4, 8)" if m != "plain MDM" else f"{m}, MC")
                    for m in SC_METHODS if (d.method == m).any()]  # fmt: skip
        ax.legend(handles=handles, fontsize="x-small", loc="center right")
    ax = axes[1]
    dels = sorted(growth.delta.unique())
    for m, ls in zip(SC_METHODS, ("-", "--", ":")):
        for j, delta in enumerate(dels):
            g = growth[(growth.method == m) & (growth.delta == delta)].sort_values("length")
            if m != "plain MDM" and j:  # the remasking curves do not depend on delta (SER -> 0)
                continue
            lab = f"{m}, SER<={delta:g}" if m == "plain MDM" else f"{m} (draft N=1), SER=0"
            ax.plot(g.length, g.nfe, ls=ls, color=_style.color(m) if m != "plain MDM" else _common.series_color(3 + j),
                    lw=1.3, label=lab + ", closed form")  # fmt: skip
    mc = sc[(sc.language == "copy pairs") & (sc.source == "mc") & (sc.steps == 1) & (sc.method != "plain MDM")]
    for m in ("remask (prefix)", "remask (factor)"):
        g = mc[mc.method == m].sort_values("length")
        ax.errorbar(g.length, g.nfe, yerr=Z95 * g.nfe_se, fmt=marks[m], mfc="none", color=_style.color(m),
                    ms=4, capsize=2, ls="none", label=f"{m}, MC (N=1)")  # fmt: skip
    Ls = np.array(sorted(growth.length.unique()))
    ax.plot(Ls, Ls, color="0.6", lw=0.8, label="N = L (autoregressive)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel(_style.label("length"))
    ax.set_ylabel(_style.label("nfe", "needed"))
    ax.set_title("copy pairs: NFE for the SER target vs L")
    ax.legend(fontsize="xx-small", loc="upper left")
    fig.suptitle("Yang2025 x Feng2025: remasking escapes the Omega(L) SER bound (colour = L; MC: 95% error bars)")
    fig.tight_layout()
    return fig


# ---- (b) parity --------------------------------------------------------------------------------------
def parity_rows(cfg, seed: int) -> tuple[list[dict], dict]:
    import jax
    import numpy as np

    from synthetic import controllers as C
    from theory import anyprocess as ap

    rows = []
    jobs = [(m, n) for n in cfg["parity_ns"] for m in C.PARITY_MODES if m == "tree" or n <= cfg["parity_seq_max"]]
    for mode, n in _common.progress(jobs, "(b) parity, exact step counts"):
        x = np.random.default_rng([seed, n]).integers(0, 2, n)
        r = C.parity_run(x, mode)
        rows.append(dict(model=f"rule ({mode})", inputs="random", length=n, num=1, accuracy=float(r["correct"]),
                         accuracy_se=0.0, nfe=r["nfe"], calls=r["calls"], expected_nfe=r["expected_nfe"]))  # fmt: skip
    nmax = cfg["parity_all_max"]
    xs = [x for n in range(1, nmax + 1) for x in np.ndindex(*([2] * n))]
    lens = np.array([len(x) for x in xs])
    par = np.array([sum(x) % 2 for x in xs])
    for mode in C.PARITY_MODES:  # every input up to parity_all_max (deterministic: the sampler is exact here)
        pe = C.ParityElimination(mode)
        s = ap.sample(jax.random.PRNGKey(0), pe, xs, num=len(xs), max_steps=2 * nmax + 2, max_length=nmax)
        ok = s.finished & (s.lengths == 1) & (s.tokens[:, 0] == par)
        for n in range(1, nmax + 1):
            at = lens == n
            rows.append(dict(model=f"rule ({mode})", inputs="all", length=n, num=int(at.sum()),
                             accuracy=float(ok[at].mean()), accuracy_se=0.0, nfe=float(s.nfe[at].mean()),
                             calls=float(s.calls[at].mean()), expected_nfe=pe.expected_nfe(n)))  # fmt: skip
    w, loss = C.train_parity_head(_common.point_key(seed, FIG_PARITY, 0), steps=cfg["head_train_steps"])
    lmax = max(cfg["head_lengths"])  # one padded width: one compilation per decoding
    for greedy in (True, False):
        model = C.ParityHeadModel(w, greedy)
        decoding = "greedy" if greedy else "sampled"
        for n in _common.progress(cfg["head_lengths"], f"(b) trained head ({decoding})"):
            num = cfg["head_num"]
            X = np.random.default_rng([seed, 7, n]).integers(0, 2, (num, n))
            key = _common.point_key(seed, FIG_PARITY, 1 + greedy, n)
            s = ap.sample(key, model, list(X), num=num, max_steps=2 * n + 2, max_length=lmax)
            ok = s.finished & (s.lengths == 1) & (s.tokens[:, 0] == X.sum(1) % 2)
            p = float(ok.mean())
            rows.append(dict(model=f"trained on length 2 ({decoding})", inputs="random", length=n, num=num,
                             accuracy=p, accuracy_se=math.sqrt(p * (1 - p) / num), nfe=float(s.nfe.mean()),
                             calls=float(s.calls.mean()), expected_nfe=2 * (n - 1)))  # fmt: skip
    return rows, {"head_final_loss": loss, "head_train_steps": cfg["head_train_steps"]}


def plot_parity(par):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=_style.figsize(2, 1, scale=1.2))
    ax = axes[0]
    for i, mode in enumerate(("sequential", "tree")):
        g = par[(par.model == f"rule ({mode})") & (par.inputs == "random")].sort_values("length")
        col = _common.series_color(i)
        ax.plot(
            g.length, g.expected_nfe, color=col, lw=1, label=f"{mode}: " + ("2(n-1)" if i == 0 else "2 ceil(log2 n)")
        )
        ax.plot(g.length, g.nfe, "o", mfc="none", color=col, ms=4, label=f"{mode}: exact NFE")
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", base=2, linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("input length n [bits]")
    ax.set_ylabel(_style.label("nfe"))
    ax.set_title("parity by deletion: exact step counts (all correct)")
    ax.legend()
    ax = axes[1]
    for i, (m, g) in enumerate(par[par.model.str.startswith("trained")].groupby("model")):
        g = g.sort_values("length")
        ax.errorbar(g.length, g.accuracy, yerr=Z95 * g.accuracy_se, fmt="o-", ms=4, capsize=2, lw=1,
                    color=_common.series_color(2 + i), label=m)  # fmt: skip
    ax.axvline(2, color="0.6", lw=0.8, ls=":")
    ax.text(2.1, 0.5, "training length", fontsize=7, color="0.4")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("test length n [bits]")
    ax.set_ylabel("accuracy [probability] (95% error bars)")
    ax.set_title("tiny head model trained on length-2 transitions")
    ax.legend(loc="lower left")
    del np
    fig.suptitle("Yang2025: parity by deletion-based elimination")
    fig.tight_layout()
    return fig


# ---- (c) Dyck ----------------------------------------------------------------------------------------
def dyck_rows(cfg, seed: int) -> tuple[list[dict], dict]:
    from synthetic import controllers as C
    from theory import anyprocess as ap

    rows = []
    for k, m in _common.progress(cfg["dyck"], "(c) Dyck-k exact laws"):
        g = C.DyckGenerator(k, m)
        law = ap.exact_law(g, [g.bos], max_steps=g.budget(), max_length=g.max_length)
        gen = {s[1:] for s in law.support()}
        enum = C.two_sided_dyck(k, 2 * m)
        for ell in range(0, 2 * m + 1, 2):
            e = {w for w in enum if len(w) == ell}
            gl = {w for w in gen if len(w) == ell}
            mass = sum(p for s, p in law.probs.items() if len(s) == ell + 1)
            rows.append(dict(k=k, max_pairs=m, length=ell, enumerated=len(e), generated=len(gl), equal=e == gl,
                             generated_mass=mass, unfinished=law.unfinished))  # fmt: skip
    k, m, num = cfg["dyck_mc"]
    g = C.DyckGenerator(k, m)
    s = ap.sample(_common.point_key(seed, FIG_DYCK, k, m), g, [g.bos], num=num, max_steps=g.budget(),
                  max_length=g.max_length)  # fmt: skip
    seqs = s.sequences()
    mc = {"k": k, "max_pairs": m, "num": num, "finished": float(s.finished.mean()),
          "fraction_in_dyck": sum(C.reduces_to_empty(x[1:]) for x in seqs) / num,
          "distinct_words": len(set(seqs)), "mean_nfe": float(s.nfe.mean())}  # fmt: skip
    return rows, mc


def plot_dyck(dy):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=_style.figsize(1, 1, scale=1.4))
    groups = list(dy.groupby(["k", "max_pairs"]))
    wdt = 0.8 / len(groups)
    for i, ((k, _), g) in enumerate(groups):
        x = g.length.to_numpy() + (i - len(groups) / 2) * wdt
        col = _common.series_color(i)
        ax.bar(
            x,
            g.enumerated,
            width=wdt,
            align="center",
            color=col,
            alpha=0.35,
            label=f"k={k}: enumerated two-sided Dyck-k",
        )
        ax.plot(x, g.generated, "x", color=col, ms=7, label=f"k={k}: generator support (exact law)")
    ax.set_yscale("log")
    ax.set_xlabel("word length [tokens]")
    ax.set_ylabel("number of words")
    ax.set_title("Yang2025: insertion generator's support = two-sided Dyck-k")
    ax.legend()
    del np
    fig.tight_layout()
    return fig


# ---- (d) parallel time -------------------------------------------------------------------------------
PT_METHODS = {
    "AR (left-to-right scratchpad)": "n - 1",
    "MDM, programmed (parity tree)": "ceil(log2 n)",
    "MDM, programmed (prefix sums)": "ceil(log2 n)",
    "AP-MDM (tree deletion)": "2 ceil(log2 n)",
    "AP-MDM (sequential deletion)": "2 (n - 1)",
}


def parallel_time_rows(cfg, seed: int) -> list[dict]:
    import numpy as np

    from synthetic import controllers as C

    rows = []
    linear_time = ("AR", "AP-MDM (seq")  # n - 1 or 2 (n - 1) steps: capped at pt_ar_max
    jobs = [(n, m) for n in cfg["pt_ns"] for m in PT_METHODS if not m.startswith(linear_time) or n <= cfg["pt_ar_max"]]
    for n, m in _common.progress(jobs, "(d) parallel time"):
        x = np.random.default_rng([seed, 11, n]).integers(0, 2, n)
        lg = math.ceil(math.log2(n)) if n > 1 else 0
        if m.startswith("AP-MDM"):
            r = C.parity_run(x, "tree" if "tree" in m else "sequential")
            steps, ok = r["nfe"], r["correct"]
        else:
            circ = C.running_sum(n) if m.startswith("AR") else C.parity_tree(n) if "parity" in m else C.prefix_sums(n)
            r = C.circuit_run(circ, x, "sequential" if m.startswith("AR") else "parallel")
            steps, ok = r["nfe"], r["correct"]
        formula = {"n - 1": n - 1, "ceil(log2 n)": lg, "2 ceil(log2 n)": 2 * lg, "2 (n - 1)": 2 * (n - 1)}[
            PT_METHODS[m]
        ]
        rows.append(dict(method=m, n=n, steps=steps, formula=PT_METHODS[m], formula_steps=formula, correct=ok))
    return rows


def plot_parallel_time(pt):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=_style.figsize(1, 1, scale=1.5))
    for i, (m, g) in enumerate(pt.groupby("method", sort=False)):
        g = g.sort_values("n")
        col = _common.series_color(i)
        ls, mk = ("--", "x") if "prefix" in m else ("-", "o")  # prefix sums and the parity tree coincide
        ax.plot(g.n, g.formula_steps, color=col, lw=1, ls=ls, label=f"{m}: {g.formula.iloc[0]}")
        ax.plot(g.n, g.steps, mk, mfc="none", color=col, ms=3.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", base=2, linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("n [input bits]")
    ax.set_ylabel(_style.label("nfe", "= steps"))
    ax.set_title("Yang2025: parallel time of parity / prefix sums (lines: formula, o: exact run)")
    ax.legend()
    fig.tight_layout()
    return fig


# ---- main ------------------------------------------------------------------------------------------
def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    import pandas as pd

    cfg = settings(args.quick)
    sc = pd.DataFrame(self_correction_rows(cfg, args.seed))
    growth = pd.DataFrame(growth_rows(cfg))
    par_rows, head = parity_rows(cfg, args.seed)
    par = pd.DataFrame(par_rows)
    dy_rows, dyck_mc = dyck_rows(cfg, args.seed)
    dy = pd.DataFrame(dy_rows)
    pt = pd.DataFrame(parallel_time_rows(cfg, args.seed))

    summary = {
        "nfe_growth": growth_summary(growth),
        "self_correction_max_ser_mc": float(sc[(sc.source == "mc") & (sc.method != "plain MDM")].ser.max()),
        "parity_all_inputs_correct": bool(par[par.model.str.startswith("rule")].accuracy.eq(1).all()),
        "parity_max_length": int(par[par.model.str.startswith("rule")].length.max()),
        "parity_head": {
            **head,
            **{
                f"{m} accuracy at n={int(g.length.max())}": float(g.sort_values("length").accuracy.iloc[-1])
                for m, g in par[par.model.str.startswith("trained")].groupby("model")
            },
        },  # fmt: skip
        "dyck_support_equal": bool(dy.equal.all()),
        "dyck_mc": dyck_mc,
        "parallel_time_formula_holds": bool((pt.steps == pt.formula_steps).all() and pt.correct.all()),
    }
    run = {
        "script": "experiments/any_process.py", "paper": "Yang2025 (arXiv 2510.06190) x Feng2025 (arXiv 2502.09622)",
        **vars(args), **cfg, "draft": "RandomOrder, Bernoulli reveal, linear schedule, exact conditionals",
        "summary": summary,
    }  # fmt: skip
    out = Path(args.out).resolve()
    run["out"] = str(out.relative_to(_common.ROOT)) if out.is_relative_to(_common.ROOT) else str(out)
    for name, frame, fig in (
        ("self_correction", sc, plot_self_correction(sc, growth)),
        ("parity", par, plot_parity(par)),
        ("dyck", dy, plot_dyck(dy)),
        ("parallel_time", pt, plot_parallel_time(pt)),
    ):
        _common.write_csv(args.out, f"{NAME}_{name}", frame)
        _common.write_png(args.out, f"{NAME}_{name}", fig)
    _common.write_csv(args.out, f"{NAME}_nfe_growth", growth)
    _common.write_json(args.out, NAME, run)
    report(sc, summary)
    return {"self_correction": sc, "growth": growth, "parity": par, "dyck": dy, "parallel_time": pt, "settings": run}


def report(sc, summary) -> None:
    import json

    import pandas as pd

    pd.set_option("display.width", 160)
    d = sc[(sc.language == "copy pairs") & (sc.source == "mc")]
    print("\n(a) copy pairs, Monte Carlo: SER / NFE; rows (method, N), columns L")
    print(d.pivot_table(index=["method", "steps"], columns="length", values=["ser", "nfe"]).round(3).to_string())
    print("\nsummary:\n" + json.dumps(summary, indent=1, default=str))


def replot(out=_common.FIGURES) -> dict:
    """Redraw the four PNGs from the CSVs in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    sc, growth, par, dy, pt = _common.read_csvs(
        out, f"{NAME}_self_correction", f"{NAME}_nfe_growth", f"{NAME}_parity", f"{NAME}_dyck", f"{NAME}_parallel_time"
    )
    figs = {"self_correction": plot_self_correction(sc, growth), "parity": plot_parity(par), "dyck": plot_dyck(dy),
            "parallel_time": plot_parallel_time(pt)}  # fmt: skip
    return {f: _common.write_png(out, f"{NAME}_{f}", fig) for f, fig in figs.items()}


if __name__ == "__main__":
    main()
