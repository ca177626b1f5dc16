"""Jia2025: the exact variance of MDM training, its A/B/C split, P-POTS, MIRROR and the other estimators.

(a) Exact A (masking pattern), B (masking rate), C (data) of every estimator (theory.estimators) on three
    synthetic languages (a random Dirichlet table, a random Markov chain, copy pairs), for the exact
    denoiser and for a partly trained tabular one (loss; and the trace of the gradient covariance for the
    trained one), at the authors' clip eps = 1e-3 and unclipped (eps = 0: which estimators stay finite),
    per example and per denoiser call (MIRROR costs two). One library call per row:
    theory.variance.decompose. The divergence of the unclipped 1/t weight: A(eps) of the standard
    estimator over eps = 1e-1 .. 1e-10 next to c_1 log(1/eps) (theory.variance.divergence_coefficient).
(b) P-POTS's optimal density p*(t) ∝ sqrt(E[loss^2 | t]) (exact) next to the paper's fitted family
    sqrt(v(t) + g(t)^2), v = a t^r + b (1-t)^q, g = A exp(k t^m), fitted to the exact curves and to a
    pilot of a few samples per t (theory.estimators.pilot_moments / fit_proposal), with the exact variance
    each proposal attains and the Cauchy-Schwarz minimum.
(c) Training a tabular denoiser on the Dirichlet language with each estimator's hooks (synthetic.train),
    with Adam (the toolkit's default; the paper uses AdamW) and with plain SGD: the same number of denoiser
    evaluations per step (MIRROR: half the batch, two masks each), several seeds, exact evaluation
    (theory.elbo.exact_evaluation) along the way: ELBO gap (the NLL bound minus the entropy, nats /
    sequence) and eps_learning, with their spread across seeds.

Writes variance_reduction.{csv,png,json} (a), variance_reduction_eps.csv, variance_reduction_pstar.{csv,png}
(b), variance_reduction_training.{csv,png} and variance_reduction_summary.csv (c) under --out.

    python experiments/variance_reduction.py            # default run, a few minutes on one core
    python experiments/variance_reduction.py --quick    # seconds; every language, estimator and hook kind
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

EPS = 1e-3  # the authors' clip: rate s = eps + (1 - eps) t
EPS_SWEEP = [1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-10, 0.0]
BATCH = 16  # training batch (single-mask estimators); StraTS strata and EMA bins = BATCH
PARTIAL_STEPS = 60  # the "partly trained" denoiser of (a): standard training for this many steps
PILOT_GRID = 12  # P-POTS pilot: t-grid points
PILOT_PER_POINT = 32  # ... and samples per point ("a few samples", estimated before training)
STEPS, STEPS_QUICK = 400, 12
SEEDS, SEEDS_QUICK = 20, 2
EVAL_EVERY, EVAL_EVERY_QUICK = 20, 6
ESTIMATORS = ["standard", "P-POTS (p*)", "P-POTS (fit)", "MIRROR", "StraTS", "EMA", "ISAD", "P-POTS+MIRROR"]
TRAIN_METHODS = ["standard", "standard (eps=0)", "StraTS", "MIRROR", "ISAD", "P-POTS (fit)", "P-POTS+MIRROR"]
# --quick trains one method per hook kind (each method compiles its own training step): uniform t, stratified
# t, token-IS masks, and the P-POTS proposal with MIRROR's masks (the others combine the same hooks)
TRAIN_METHODS_QUICK = ["standard", "StraTS", "ISAD", "P-POTS+MIRROR"]
#: (c)'s optimizers: Adam (synthetic.train's default for the tabular model: lr 5e-2, warm-up, cosine; the paper
#: fine-tunes with AdamW) and plain SGD (lr 10, cosine decay to 5%), where the gradient noise is not normalised
OPTIMIZERS = ["adam", "sgd"]
SGD_LR = 10.0
PAPER = {
    "accuracy_gain": "+7.0 / +8.0 / +8.4 accuracy points (P-POTS+MIRROR vs standard; OpenScience, GSM8K, HiTab)",
    "seeds": "P-POTS+MIRROR's worst of 3 seeds beats standard's best",
}
COLORS = {"A": "#0072B2", "B": "#E69F00", "C": "#009E73"}


def languages(quick: bool, seed: int) -> list:
    """(name, Joint): a random Dirichlet table, a random Markov chain, copy pairs (quick: smaller)."""
    from synthetic import languages as langs
    from synthetic import tasks

    V, L = (2, 4) if quick else (3, 4)  # quick: one shape for all three (one compilation of the training step)
    k = _common.point_key(seed, 0)
    return [
        ("dirichlet", langs.dirichlet(jax_fold(k, 0), V, L, 0.5)),
        ("markov", langs.random_markov(jax_fold(k, 1), V, L, 0.5).joint()),
        ("copy_pairs", tasks.copy_pairs_task(4).joint()),
    ]


def jax_fold(key, i: int):
    import jax

    return jax.random.fold_in(key, i)


def partly_trained(q, seed: int, steps: int):
    """A tabular denoiser after ``steps`` standard steps (batch BATCH, clip EPS): the 'partly trained' one."""
    from synthetic.models import init_denoiser
    from synthetic.train import train

    den = init_denoiser("tabular", q.vocab_size, q.length, key=_common.point_key(seed, 1))
    est = _standard()
    den, _ = train(den, q, key=_common.point_key(seed, 2), steps=steps, batch_size=BATCH, t_sampler=est.t_sampler(EPS),
                   mask_sampler=est.mask_sampler(), progress=False)  # fmt: skip
    return den


@lru_cache(maxsize=1)
def _standard():
    """One standard Estimator for the whole run: its hooks are the same closures, so synthetic.train's jitted
    step compiles once per shape for the partly trained denoisers and the standard runs of (c)."""
    from theory import estimators as Es

    return Es.standard()


def log_probs_of(den):
    import jax.numpy as jnp

    return lambda z: jnp.log(den.marginals(z))


def pilot_proposal(q, den, key, eps: float = EPS):
    """The paper's P-POTS proposal from a pilot (PILOT_GRID t values x PILOT_PER_POINT samples): (Proposal, fits)."""
    import numpy as np

    from theory import estimators as Es

    grid = np.linspace(0.0, 1.0, PILOT_GRID + 1)[1:] ** 2  # denser near 0, where the loss^2 grows like 1/t
    means, varis = Es.pilot_moments(key, q.sample, log_probs_of(den), q.vocab_size, grid, PILOT_PER_POINT, eps)
    prop, fits = Es.fit_proposal(grid, means, varis, eps)
    return prop, fits, grid, means, varis


def estimators_for(tables, eps_opt: float, fit_prop):
    """The estimators of (a), tuned (p*, token rates) on ``tables`` at the clip ``eps_opt``."""
    from theory import estimators as Es

    knots, rates = Es.optimal_token_rate(tables, eps_opt)
    return {
        "standard": Es.standard(),
        "P-POTS (p*)": Es.ppots(Es.optimal_proposal(tables, eps_opt), "P-POTS (p*)"),
        "P-POTS (fit)": Es.ppots(fit_prop, "P-POTS (fit)"),
        "MIRROR": Es.mirror(),
        "StraTS": Es.strats(BATCH),
        "EMA": Es.ema(BATCH),
        "ISAD": Es.isad(knots, rates),
        "P-POTS+MIRROR": Es.ppots_mirror(Es.optimal_proposal(tables, eps_opt, Es.MirrorMask()), "P-POTS+MIRROR"),
    }


def variance_rows(lang: str, q, dname: str, kind: str, tables, fit_prop) -> tuple[list, list]:
    """(a): one row per (estimator, eps in {EPS, 0}); and the eps sweep of the standard estimator."""
    from theory import estimators as Es
    from theory import variance as Vr

    rows = []
    c1 = Vr.divergence_coefficient(tables)
    for eps in (EPS, 0.0):
        cov = Es.mirror_covariance(tables, eps)  # E_{x,t} Cov(G(m1), G(m2) | x, t): > 0 means positively correlated
        ests = estimators_for(tables, eps, fit_prop)
        ref = None
        for name in ESTIMATORS:
            d = ests[name].decompose(tables, eps)
            ref = d if name == "standard" else ref
            rows.append({"language": lang, "V": q.vocab_size, "L": q.length, "denoiser": dname, "kind": kind,
                         "estimator": name, "eps": eps, "mean": d.mean, "A": d.A, "B": d.B, "C": d.C,
                         "total": d.total, "evaluations": d.evaluations, "per_evaluation": d.per_evaluation,
                         "relative_to_standard": d.per_evaluation / ref.total if math.isfinite(ref.total) else math.nan,
                         "c1": c1, "mirror_pair_covariance": cov if name == "MIRROR" else math.nan})  # fmt: skip
    sweep = []
    for eps in EPS_SWEEP:
        d = Vr.decompose(tables, eps=eps)
        pred = c1 * math.log(1.0 / eps) if eps > 0 else math.inf
        sweep.append({"language": lang, "denoiser": dname, "kind": kind, "eps": eps, "A": d.A, "B": d.B, "C": d.C,
                      "total": d.total, "c1": c1, "c1_log_inv_eps": pred})  # fmt: skip
    return rows, sweep


def pstar_rows(lang: str, dname: str, tables, pilot) -> tuple[list, dict]:
    """(b): p*(t), the paper's family fitted to the exact curves and to the pilot, on a t-grid; their variances."""
    import numpy as np

    from theory import estimators as Es
    from theory import variance as Vr

    prop_pilot, fits_pilot, grid, means, varis = pilot
    law = Vr.BernoulliMask()
    gq = np.geomspace(1e-3, 1.0, 25)
    s = Vr.rate(EPS, gq)
    g_exact = law.first(s, tables.masks) @ tables.mean_vector
    v_exact = law.second(s, tables) - g_exact**2
    prop_exact, fits_exact = Es.fit_proposal(gq, g_exact, np.maximum(v_exact, 1e-300), EPS)
    cs = Es.cauchy_schwarz_minimum(tables, EPS)
    std = Vr.decompose(tables, eps=EPS)
    summary = {
        "language": lang, "denoiser": dname, "standard": std.total, "cauchy_schwarz_minimum": cs["minimum"],
        "p_star_histogram": Es.ppots(Es.optimal_proposal(tables, EPS)).decompose(tables, EPS).total,
        "fit_exact": Es.ppots(prop_exact).decompose(tables, EPS).total,
        "fit_pilot": Es.ppots(prop_pilot).decompose(tables, EPS).total,
        "fit_exact_params": {k: {p: float(v) for p, v in f.items() if p != "fn"} for k, f in fits_exact.items()},
        "fit_pilot_params": {k: {p: float(v) for p, v in f.items() if p != "fn"} for k, f in fits_pilot.items()},
    }  # fmt: skip
    t = np.geomspace(1e-4, 1.0, 121)[:-1]
    rows = []
    for name, pdf in (("p* (exact)", cs["pdf"]), ("fit to exact curves", prop_exact.pdf),
                      ("fit to pilot", prop_pilot.pdf), ("uniform", lambda t: np.ones_like(t))):  # fmt: skip
        for ti, p in zip(t, pdf(t)):
            rows.append({"language": lang, "denoiser": dname, "curve": name, "t": float(ti), "density": float(p)})
    return rows, summary


def train_hooks(q, quick: bool, seed: int) -> dict:
    """(c): method -> (Estimator, eps, batch). P-POTS's proposal and ISAD's rates are set before training from
    the initial (uniform, zero-logit) tabular model: a pilot of a few samples (the paper) and exact tables."""
    from synthetic.models import init_denoiser
    from theory import estimators as Es
    from theory import variance as Vr

    init = init_denoiser("tabular", q.vocab_size, q.length, key=_common.point_key(seed, 3))
    prop = pilot_proposal(q, init, _common.point_key(seed, 4))[0]
    tables = Vr.loss_moments(q, init)
    return {
        "standard": (_standard(), EPS, BATCH),
        "standard (eps=0)": (_standard(), 0.0, BATCH),
        "StraTS": (Es.strats(BATCH), EPS, BATCH),
        "MIRROR": (Es.mirror(), EPS, BATCH // 2),
        "ISAD": (Es.isad(*Es.optimal_token_rate(tables, EPS)), EPS, BATCH),
        "P-POTS (fit)": (Es.ppots(prop, "P-POTS (fit)"), EPS, BATCH),
        "P-POTS+MIRROR": (Es.ppots_mirror(prop, "P-POTS+MIRROR"), EPS, BATCH // 2),
    }


@lru_cache(maxsize=4)
def optimizer(name: str, steps: int):
    """None (synthetic.train's default Adam) or SGD with cosine decay; one object per run (one compilation)."""
    import optax

    if name == "adam":
        return None
    return optax.sgd(optax.cosine_decay_schedule(SGD_LR, steps, alpha=0.05))


def train_one(q, evaluation, hook, run_seed: int, seed: int, steps: int, eval_every: int, opt: str = "adam"):
    """One training run (its init and data keys depend only on (seed, run_seed): common to every method and
    optimizer)."""
    from synthetic.models import init_denoiser
    from synthetic.train import train

    est, eps, batch = hook
    den = init_denoiser("tabular", q.vocab_size, q.length, key=_common.point_key(seed, 5, run_seed))
    _, hist = train(den, q, key=_common.point_key(seed, 6, run_seed), steps=steps, batch_size=batch,
                    optimizer=optimizer(opt, steps), t_sampler=est.t_sampler(eps), mask_sampler=est.mask_sampler(),
                    evaluation=evaluation, eval_every=eval_every, progress=False)  # fmt: skip
    return hist


def summarize(train_frame):
    """Final ELBO gap and eps_learning per (optimizer, method): mean, sd, min, max across seeds; paired
    differences and wins vs standard with the same optimizer."""
    import numpy as np
    import pandas as pd

    last = train_frame[train_frame.step == train_frame.step.max()]
    rows = []
    for opt, m in dict.fromkeys(zip(train_frame.optimizer, train_frame.method)):
        base = last[(last.optimizer == opt) & (last.method == "standard")].set_index("run")
        f = last[(last.optimizer == opt) & (last.method == m)].set_index("run")
        row = {"optimizer": opt, "method": m, "seeds": len(f)}
        for col in ("elbo_gap", "eps_learning", "elbo"):
            v = f[col].to_numpy()
            row |= {f"{col}_mean": v.mean(), f"{col}_sd": v.std(ddof=1) if v.size > 1 else float("nan"),
                    f"{col}_min": v.min(), f"{col}_max": v.max()}  # fmt: skip
        d = f.elbo_gap - base.elbo_gap.loc[f.index]
        row["elbo_gap_paired_diff_mean"] = float(d.mean())
        row["elbo_gap_paired_diff_se"] = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
        row["wins_vs_standard"] = int((d < 0).sum())
        row["worst_beats_standard_best"] = bool(f.elbo_gap.max() < base.elbo_gap.min())
        rows.append(row)
    return pd.DataFrame(rows).astype({"seeds": np.int64})


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    import matplotlib.pyplot as plt
    import pandas as pd

    from theory import elbo
    from theory import variance as Vr

    quick, seed = args.quick, args.seed
    steps = STEPS_QUICK if quick else STEPS
    n_seeds = SEEDS_QUICK if quick else SEEDS
    eval_every = EVAL_EVERY_QUICK if quick else EVAL_EVERY
    partial = STEPS_QUICK if quick else PARTIAL_STEPS  # quick: the same optimizer as (c) (one compilation)

    # ---- (a) and (b)
    rows, sweep, prow, psum = [], [], [], []
    for li, (lang, q) in enumerate(_common.progress(languages(quick, seed), "(a) languages")):
        trained = partly_trained(q, seed * 1000 + li, partial)
        for dname, den in (("exact", q.denoiser()), (f"tabular ({partial} steps)", trained)):
            pilot = pilot_proposal(q, den, _common.point_key(seed, 7, li))
            tables = Vr.loss_moments(q, den)
            r, s = variance_rows(lang, q, dname, "loss", tables, pilot[0])
            rows += r
            sweep += s
            pr, ps = pstar_rows(lang, dname, tables, pilot)
            prow += pr
            psum.append(ps)
            if den is trained and (li == 0 or not quick):  # quick: one gradient table (one compilation)
                r, s = variance_rows(lang, q, dname, "gradient", Vr.gradient_moments(q, den), pilot[0])
                rows += r
                sweep += s
    frame = pd.DataFrame(rows)
    eps_frame = pd.DataFrame(sweep)
    pstar = pd.DataFrame(prow)

    # ---- (c)
    q = languages(quick, seed)[0][1]
    evaluation = elbo.exact_evaluation(q)
    hooks = train_hooks(q, quick, seed)
    curves = []
    runs = [(o, m) for o in OPTIMIZERS for m in (TRAIN_METHODS_QUICK if quick else TRAIN_METHODS)]
    if quick:  # SGD is only another optax object: one method (one more compilation)
        runs = [(o, m) for o, m in runs if o == "adam" or m == "standard"]
    for opt, m in _common.progress(runs, "(c) optimizer x method"):
        for r in range(n_seeds):
            h = train_one(q, evaluation, hooks[m], r, seed, steps, eval_every, opt)
            h.insert(0, "run", r)
            h.insert(0, "method", m)
            h.insert(0, "optimizer", opt)
            h["evaluations"] = h.step * BATCH  # denoiser calls so far (equal across methods)
            curves.append(h)
    train_frame = pd.concat(curves, ignore_index=True)
    summary = summarize(train_frame)

    # ---- figures
    fig = figure_bars(frame, plt)
    std_exact = frame[(frame.denoiser == "exact") & (frame.eps == EPS) & (frame.estimator == "standard")]
    settings = {
        "quick": quick, "seed": seed, "eps": EPS, "eps_sweep": EPS_SWEEP, "batch": BATCH,
        "partly_trained_steps": partial, "pilot_grid": PILOT_GRID, "pilot_per_point": PILOT_PER_POINT,
        "train_steps": steps, "train_seeds": n_seeds, "eval_every": eval_every, "model": "tabular",
        "optimizers": {"adam": "synthetic.train default (lr 5e-2, 5% warm-up, cosine to 5%)",
                       "sgd": f"optax.sgd, lr {SGD_LR}, cosine decay to 5%"},
        "train_language": f"dirichlet(V={q.vocab_size}, L={q.length}, concentration=0.5)",
        "languages": {lang: f"V={j.vocab_size}, L={j.length}" for lang, j in languages(quick, seed)},
        "standard_shares_exact_denoiser": {
            row.language: {"A": row.A / row.total, "B": row.B / row.total, "C": row.C / row.total}
            for row in std_exact.itertuples()
        },
        "pstar": psum, "paper": PAPER,
        "training_summary": summary.to_dict(orient="records"),
    }  # fmt: skip
    out = args.out
    _common.write_outputs(out, "variance_reduction", frame, fig, settings)
    _common.write_csv(out, "variance_reduction_eps", eps_frame)
    _common.write_csv(out, "variance_reduction_pstar", pstar)
    _common.write_png(out, "variance_reduction_pstar", figure_pstar(pstar, eps_frame, plt))
    _common.write_csv(out, "variance_reduction_training", train_frame)
    _common.write_csv(out, "variance_reduction_summary", summary)
    _common.write_png(out, "variance_reduction_training", figure_training(train_frame, summary, plt))
    return {"variance": frame, "eps": eps_frame, "pstar": pstar, "pstar_summary": psum, "training": train_frame,
            "summary": summary, "hooks": hooks}  # fmt: skip


# ================================ figures ==========================================================
def figure_bars(frame, plt):
    """(a) stacked A/B/C per denoiser call, relative to the standard estimator's total; unclipped: hatched x."""
    import numpy as np

    panels = list(dict.fromkeys(zip(frame.denoiser, frame.kind)))
    langs = list(dict.fromkeys(frame.language))
    fig, axes = plt.subplots(
        len(langs), len(panels), figsize=_style.figsize(len(panels), len(langs), 1.0), squeeze=False
    )
    for i, lang in enumerate(langs):
        for j, (dname, kind) in enumerate(panels):
            ax = axes[i, j]
            f = frame[(frame.language == lang) & (frame.denoiser == dname) & (frame.kind == kind)]
            if f.empty:  # quick: one gradient table
                ax.axis("off")
                continue
            f1 = f[f.eps == EPS].set_index("estimator").loc[ESTIMATORS]
            ref = f1.loc["standard", "total"]
            bottom = np.zeros(len(f1))
            x = np.arange(len(f1))
            for term in ("A", "B", "C"):
                h = f1[term].to_numpy() * f1.evaluations.to_numpy() / ref
                ax.bar(x, h, bottom=bottom, color=COLORS[term], label=term if (i, j) == (0, 0) else None)
                bottom += h
            f0 = f[f.eps == 0.0].set_index("estimator").loc[ESTIMATORS]
            for xi, tot in zip(x, f0.total):
                if not math.isfinite(tot):
                    ax.text(xi, bottom[xi], "∞", ha="center", va="bottom", fontsize=8, color="#D55E00")
            ax.set_xticks(x, ESTIMATORS, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{lang}, {dname}, {kind}")
            if j == 0:
                ax.set_ylabel("variance × calls / standard [ratio]")
    axes[0, 0].legend(
        title=f"eps = {EPS}; ∞: infinite at eps = 0",
        title_fontsize="x-small",
    )
    fig.tight_layout()
    return fig


def figure_pstar(pstar, eps_frame, plt):
    """(b) p*(t) and the paper's fitted family (one panel per language, both denoisers); A(eps) vs c_1 log(1/eps)."""
    langs = list(dict.fromkeys(pstar.language))
    fig, axes = plt.subplots(1, len(langs) + 1, figsize=_style.figsize(len(langs) + 1, 1, 1.1))
    lines = {"p* (exact)": "-", "fit to exact curves": "--", "fit to pilot": ":", "uniform": "-."}
    for ax, lang in zip(axes, langs):
        for di, dname in enumerate(dict.fromkeys(pstar.denoiser)):
            for curve, ls in lines.items():
                f = pstar[(pstar.language == lang) & (pstar.denoiser == dname) & (pstar.curve == curve)]
                if curve == "uniform" and di:
                    continue
                ax.loglog(f.t, f.density, ls, color=_common.series_color(di) if curve != "uniform" else "#777777",
                          label=f"{dname}: {curve}" if curve != "uniform" else "uniform")  # fmt: skip
        ax.set_title(lang)
        ax.set_xlabel(_style.label("t"))
    axes[0].set_ylabel("proposal density p(t) [1/unit t]")
    axes[0].legend(
        fontsize="x-small",
    )
    ax = axes[-1]
    for i, ((lang, dname, kind), f) in enumerate(eps_frame[eps_frame.eps > 0].groupby(["language", "denoiser", "kind"],
                                                                                      sort=False)):  # fmt: skip
        c = _common.series_color(i)
        ax.semilogx(f.eps, f.A / f.c1, "o", color=c, ms=3, label=f"{lang}, {dname[:7]}, {kind}")
        ax.semilogx(f.eps, f.c1_log_inv_eps / f.c1, "-", color=c, lw=0.6)
    ax.set_xlabel("clip eps [rate]")
    ax.set_ylabel("A(eps) / c_1 [nats^2 / nats^2]  (line: log(1/eps))")
    ax.set_title("unclipped 1/t weight: A diverges")
    ax.legend(
        fontsize="xx-small",
    )
    fig.tight_layout()
    return fig


def figure_training(train_frame, summary, plt):
    """(c) one row per optimizer: ELBO gap and eps_learning vs denoiser calls (median, min-max band over seeds);
    final ELBO gap per seed."""
    import numpy as np

    opts = list(dict.fromkeys(train_frame.optimizer))
    fig, axes = plt.subplots(len(opts), 3, figsize=_style.figsize(3, len(opts), 1.2), squeeze=False)
    colors = {m: _style.color(m) for m in TRAIN_METHODS}  # one colour per estimator, as in every figure
    for row, opt in zip(axes, opts):
        tf = train_frame[train_frame.optimizer == opt]
        methods = list(dict.fromkeys(tf.method))
        for i, m in enumerate(methods):
            f = tf[tf.method == m]
            for ax, col in zip(row[:2], ("elbo_gap", "eps_learning")):
                g = f.groupby("evaluations")[col]
                x = np.asarray(g.median().index)
                ax.plot(x, g.median(), color=colors[m], label=m, lw=1.2)
                ax.fill_between(x, g.min(), g.max(), color=colors[m], alpha=0.12)
                ax.set_yscale("log")
                ax.set_xlabel(_style.label("denoiser_calls"))
                ax.set_ylabel(f"{col} [nats] (median, min-max)")
                ax.set_title(opt)
            last = f[f.step == f.step.max()]
            row[2].plot(np.full(len(last), i) + np.linspace(-0.2, 0.2, len(last)), last.elbo_gap, "o", ms=3,
                        color=colors[m])  # fmt: skip
        row[2].set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        row[2].set_ylabel(f"final ELBO gap per seed [nats] ({opt})")
        row[0].legend()
    fig.tight_layout()
    return fig


def replot(out=_common.FIGURES) -> dict:
    """Redraw the three PNGs from the CSVs in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    import matplotlib.pyplot as plt

    frame, eps_frame, pstar, train_frame, summary = _common.read_csvs(
        out, "variance_reduction", "variance_reduction_eps", "variance_reduction_pstar", "variance_reduction_training",
        "variance_reduction_summary",
    )  # fmt: skip
    return {
        "png": _common.write_png(out, "variance_reduction", figure_bars(frame, plt)),
        "pstar_png": _common.write_png(out, "variance_reduction_pstar", figure_pstar(pstar, eps_frame, plt)),
        "training_png": _common.write_png(
            out, "variance_reduction_training", figure_training(train_frame, summary, plt)
        ),  # fmt: skip
    }


if __name__ == "__main__":
    main()
