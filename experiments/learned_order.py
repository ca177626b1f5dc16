"""Garg2025: learn the decoding order (per-position schedules 1 - t**w_l) jointly with a small denoiser.

Languages (V = 2, L = 6, full support, exact tables): a **reversed Markov chain** (x_5 uniform, x_i | x_{i+1}
by a sticky 2x2 kernel), **key then payload** (x_5 = key uniform, x_0..x_4 = key flipped with probability 0.1),
and a random **Dirichlet** table (no planted order: the control). Denoiser: synthetic.models' rank-1 low-rank
model (one scalar per partial state: capacity-limited, so the order it is trained for matters).

Objective: the NLL bound E_q ELBO under alpha_{t,l} = 1 - t**w_l = sum_d PL_w(d) AR(d) (Garg2025, Prop. 3.1;
theory.orders), minimised with Adam over the network and theta = log w (theory.orders.fit_order) by

* ``exact``: the exact bound and its exact gradient (closed-form Plackett-Luce weights W[A, l], all sums exact);
* ``rloo_orders``: RLOO over K = 4 decoding orders per x (batch of x ~ q);
* ``rloo_masks``: the MDM form (t ~ Beta(min w / 4, 1), K = 4 masks per x, RLOO on the mask law's score):
  our reading of the paper's estimator;
* ``uniform``: w fixed at 1 (uniform order: the shared-schedule baseline, any shared schedule gives it).

Recorded along training (every --record steps, every seed): the exact bound, the uniform-order bound of the
same network, w, and the per-sample variances of both RLOO estimators of d bound / d w at the current
parameters (theory.orders.gradient_variances). Then the learned order is used as a sampling policy:
exact KL(q || p_N) of the learned network (and of the exact denoiser) at N = 2, L/2, 4, L steps with
PlackettLuceOrder(w) (orders drawn from P(d)) against RandomOrder, and of the uniform-trained network with
RandomOrder (theory.sampling.exact_law).

Writes learned_order.{csv,png,json} (training curves), learned_order_sampling.{csv,png} under --out.

    python experiments/learned_order.py            # default run, about 3 minutes on one busy core
    python experiments/learned_order.py --quick    # seconds: every language, method and policy, 2 seeds
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common, _style

V, L = 2, 6
LANGUAGES = ("reversed_markov", "key_payload", "dirichlet")
METHODS = ("uniform", "exact", "rloo_orders", "rloo_masks")
RANK = 1
LR = 0.03
BATCH = 256  # x ~ q per RLOO step
SAMPLES = 4  # orders / masks per x (RLOO)
STEPS, STEPS_QUICK = 600, 20
RECORD, RECORD_QUICK = 50, 10
SEEDS, SEEDS_QUICK = 5, 2
VARIANCE_NUM, VARIANCE_NUM_QUICK = 2000, 200
STEP_COUNTS = (2, L // 2, 4, L)  # N = 2, L/2, 4, L
STEP_COUNTS_QUICK = (2, L)
FLIP = 0.1  # key_payload noise
KERNEL = ((0.9, 0.1), (0.2, 0.8))  # reversed_markov: P(x_i | x_{i+1})
PAPER = "validation NLL lower on 4 of 6 tabular datasets (e.g. Default 18.33 vs 19.42), worse on 2"


def language(name: str, seed: int):
    """The exact table of a language (theory.joint.Joint); the Dirichlet table depends on ``seed``."""
    import numpy as np

    from synthetic import languages
    from theory.joint import Joint
    from theory.states import all_sequences

    if name == "dirichlet":
        return languages.dirichlet(_common.point_key(seed, 99), V, L)
    x = all_sequences(V, L)
    if name == "key_payload":
        key = x[:, -1]
        p = 0.5 * np.prod(np.where(x[:, :-1] == key[:, None], 1 - FLIP, FLIP), axis=1)
    elif name == "reversed_markov":
        T = np.asarray(KERNEL)
        p = np.full(len(x), 0.5)
        for i in range(L - 1):
            p = p * T[x[:, i + 1], x[:, i]]
    else:
        raise ValueError(f"unknown language {name!r}; choose from {LANGUAGES}.")
    return Joint(p / p.sum(), V, L)


def log_probs(net, states):
    """The network as fit_order's model: float64 log-softmax of its logits at the states (S, L) -> (S, L, V)."""
    import jax
    import jax.numpy as jnp

    from synthetic.models import network_logits

    return jax.nn.log_softmax(network_logits(net, states).astype(jnp.float64), axis=-1)


def init_model(seed: int, lang_index: int):
    """The rank-1 low-rank denoiser's initial network: the same for every method of a (language, seed)."""
    from synthetic.models import init_denoiser

    return init_denoiser("lowrank", V, L, key=_common.point_key(seed, lang_index, 1), rank=RANK)


def fit(q, seed: int, lang_index: int, method: str, steps: int, record: tuple, variance_num: int, progress=None):
    """One training run (theory.orders.fit_order) -> OrderFit; key point_key(seed, lang_index, method index)."""
    from theory import orders

    den = init_model(seed, lang_index)
    learn = method != "uniform"
    return orders.fit_order(
        log_probs,
        den.net,
        orders.enumeration(q),
        key=_common.point_key(seed, lang_index, 2 + METHODS.index(method)),
        method="exact" if method == "uniform" else method,
        steps=steps,
        lr=LR,
        batch=BATCH,
        samples=SAMPLES,
        learn_weights=learn,
        record=record,
        variance_num=variance_num if learn else 0,
        progress=progress,
    )


def learned_denoiser(net):
    from synthetic.models import LearnedDenoiser, ModelConfig

    return LearnedDenoiser(net, ModelConfig("lowrank", V, L, rank=RANK))


def sampling_kl(q, den, policy, steps: int) -> tuple[float, float]:
    """Exact KL(q || p_N) and expected NFE of ``den`` sampled with ``policy`` in N = ``steps`` fixed-count steps."""
    from theory import metrics
    from theory.sampling import exact_law

    law = exact_law(q, policy, steps, denoiser=den)
    return float(metrics.kl(q.probs, law.probs)), float(law.expected_nfe)


def run(quick: bool, seed0: int):
    import numpy as np
    import pandas as pd

    from theory import orders, policies

    steps = STEPS_QUICK if quick else STEPS
    every = RECORD_QUICK if quick else RECORD
    seeds = [seed0 + i for i in range(SEEDS_QUICK if quick else SEEDS)]
    vnum = VARIANCE_NUM_QUICK if quick else VARIANCE_NUM
    record = tuple(range(0, steps + 1, every))
    train_rows, samp_rows = [], []
    total = len(LANGUAGES) * len(seeds) * len(METHODS) * steps
    bar = _common.progress(range(total), "learned_order: training")
    for li, name in enumerate(LANGUAGES):
        for seed in seeds:
            q = language(name, seed)
            H = float(q.entropy())
            fits = {}
            for method in METHODS:
                f = fit(q, seed, li, method, steps, record, vnum, progress=bar.update)
                fits[method] = f
                for h in f.history:
                    row = {"language": name, "method": method, "seed": seed, "step": h["step"], "entropy": H,
                           "elbo": h["elbo"], "uniform_elbo": h["uniform_elbo"], "gap": h["elbo"] - H}  # fmt: skip
                    row.update({f"w_{i}": float(h["weights"][i]) for i in range(L)})
                    for k in ("grad_norm2", "grad_var_orders", "grad_var_masks", "grad_z_orders", "grad_z_masks"):
                        row[k] = h.get(k, np.nan)
                    train_rows.append(row)
            w = tuple(float(x) for x in np.exp(fits["exact"].log_weights))
            cases = [
                ("learned_order", learned_denoiser(fits["exact"].params)),
                ("uniform_order", learned_denoiser(fits["uniform"].params)),
                ("exact_denoiser", q.denoiser()),
            ]
            for model, den in cases:
                pols = [("RandomOrder", policies.RandomOrder())]
                if model != "uniform_order":
                    pols.append(("PlackettLuce", orders.PlackettLuceOrder(w)))
                for pname, pol in pols:
                    for N in STEP_COUNTS_QUICK if quick else STEP_COUNTS:
                        kl, nfe = sampling_kl(q, den, pol, N)
                        samp_rows.append({"language": name, "seed": seed, "model": model, "policy": pname,
                                          "steps": N, "kl": kl, "expected_nfe": nfe})  # fmt: skip
    bar.close()
    return pd.DataFrame(train_rows), pd.DataFrame(samp_rows)


def summarize(train, samp) -> dict:
    """Final bounds per (language, method) (mean, SD over seeds), learned-vs-uniform wins, variance ratios, KLs."""
    import numpy as np

    last = train[train.step == train.step.max()]
    out: dict = {"final_gap": {}, "wins_vs_uniform": {}, "grad_var_ratio_masks_over_orders": {}, "kl": {}}
    for name in LANGUAGES:
        d = last[last.language == name]
        out["final_gap"][name] = {
            m: [float(d[d.method == m].gap.mean()), float(d[d.method == m].gap.std(ddof=1))] for m in METHODS
        }
        base = d[d.method == "uniform"].set_index("seed").elbo
        out["wins_vs_uniform"][name] = {
            m: f"{int((d[d.method == m].set_index('seed').elbo < base).sum())}/{len(base)}" for m in METHODS[1:]
        }
        g = train[(train.language == name) & (train.method == "exact") & (train.step > 0)]
        out["grad_var_ratio_masks_over_orders"][name] = float(np.median(g.grad_var_masks / g.grad_var_orders))
        s = samp[samp.language == name]
        out["kl"][name] = {
            f"{mo}/{po}/N={n}": float(s[(s.model == mo) & (s.policy == po) & (s.steps == n)].kl.mean())
            for mo, po in (
                ("learned_order", "PlackettLuce"),
                ("learned_order", "RandomOrder"),
                ("uniform_order", "RandomOrder"),
                ("exact_denoiser", "PlackettLuce"),
                ("exact_denoiser", "RandomOrder"),
            )  # fmt: skip
            for n in sorted(samp.steps.unique())
        }
    return out


def _band(ax, frame, x, y, label, color, log=False):
    import numpy as np

    g = frame.groupby(x)[y]
    m, s = g.mean(), g.std(ddof=1).fillna(0.0)
    if log:  # mean and SD of log10, back-transformed
        lg = frame.assign(_l=np.log10(frame[y])).groupby(x)["_l"]
        m, s = 10 ** lg.mean(), lg.std(ddof=1).fillna(0.0)
        ax.fill_between(m.index, m / 10**s, m * 10**s, color=color, alpha=0.2, lw=0)
    else:
        ax.fill_between(m.index, m - s, m + s, color=color, alpha=0.2, lw=0)
    ax.plot(m.index, m.values, color=color, label=label)


#: the methods' display names (their colours come from experiments/_style.py, the same in every figure)
NAMES = {"uniform": "uniform order", "exact": "exact gradient", "rloo_orders": "RLOO over orders",
         "rloo_masks": "RLOO over masks"}  # fmt: skip
COLORS = {m: _style.color(n) for m, n in NAMES.items()}


def plot_training(train):
    import matplotlib.pyplot as plt
    import numpy as np

    from theory import orders

    fig, axes = plt.subplots(len(LANGUAGES), 4, figsize=_style.figsize(4, len(LANGUAGES), 1.2), squeeze=False)
    last = train[train.step == train.step.max()]
    t = np.linspace(0, 1, 201)
    for r, name in enumerate(LANGUAGES):
        d = train[train.language == name]
        ax = axes[r, 0]
        for m in METHODS:
            _band(ax, d[d.method == m], "step", "gap", NAMES[m], COLORS[m], log=True)
        ax.set(yscale="log", xlabel=_style.label("training_step"), ylabel=_style.label("nll_gap"),
               title=f"{name}: bound over training (mean, SD band, seeds)")  # fmt: skip
        ax.legend()
        ax = axes[r, 1]  # learned schedules, every seed of the exact method (seed 0 bold)
        e = last[(last.language == name) & (last.method == "exact")]
        for k, (_, row) in enumerate(e.iterrows()):
            w = np.array([row[f"w_{i}"] for i in range(L)])
            for i in range(L):
                ax.plot(t, 1 - t ** w[i], color=_common.series_color(i), lw=2.0 if k == 0 else 0.6,
                        alpha=1.0 if k == 0 else 0.5, label=f"position {i}" if k == 0 else None)  # fmt: skip
        ax.set(xlabel=_style.label("t"), ylabel="alpha_{t,l} = 1 - t^{w_l} [probability]",
               title="learned per-position schedules (exact gradient)")  # fmt: skip
        ax.legend()
        ax = axes[r, 2]  # P(position l decoded at step i) under the first seed's learned w
        row = e.iloc[0]
        law = orders.order_probabilities(orders.PolynomialFamily([row[f"w_{i}"] for i in range(L)]))
        P = np.stack([np.bincount(law.orders[:, i], weights=law.probs, minlength=L) for i in range(L)])
        im = ax.imshow(P, vmin=0, vmax=1, cmap="Greys")
        ax.set(xlabel="position l", ylabel="decoding step i",
               title=f"learned order law P(d(i) = l), seed {int(row.seed)}")  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[r, 3]
        g = d[(d.method == "exact") & (d.step > 0)]
        _band(ax, g, "step", "grad_var_orders", "RLOO over orders", COLORS["rloo_orders"], log=True)
        _band(ax, g, "step", "grad_var_masks", "RLOO over masks (MDM form)", COLORS["rloo_masks"], log=True)
        _band(ax, g, "step", "grad_norm2", "|exact gradient|^2", COLORS["exact"], log=True)
        ax.set(yscale="log", xlabel="training step (exact-gradient run)",
               ylabel="per-sample variance of dB/dw (sum over l)", title="RLOO gradient variance (K = 4)")  # fmt: skip
        ax.legend()
    fig.tight_layout()
    return fig


FLOOR = 1e-6  # KL below this (the exact denoiser at N = L: 0) is drawn at the floor of the log axis


def plot_sampling(samp):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(LANGUAGES), figsize=_style.figsize(len(LANGUAGES), 1, 1.3), squeeze=False)
    pl, ro = _style.color("PlackettLuce"), _style.color("RandomOrder")
    looks = {("learned_order", "PlackettLuce"): (pl, "-"), ("learned_order", "RandomOrder"): (ro, "-"),
             ("uniform_order", "RandomOrder"): (_style.GREY, ":"), ("exact_denoiser", "PlackettLuce"): (pl, "--"),
             ("exact_denoiser", "RandomOrder"): (ro, "--")}  # fmt: skip
    for c, name in enumerate(LANGUAGES):
        ax = axes[0, c]
        d = samp[samp.language == name]
        for (mo, po), (col, ls) in looks.items():
            g = d[(d.model == mo) & (d.policy == po)].groupby("steps").kl
            m, lo, hi = (np.maximum(v, FLOOR) for v in (g.mean(), g.min(), g.max()))
            ax.fill_between(m.index, lo.values, hi.values, color=col, alpha=0.12, lw=0)
            ax.plot(m.index, m.values, color=col, ls=ls, marker="o", ms=3, label=f"{mo} + {po}")
        ax.set(yscale="log", xlabel=_style.label("steps"), ylabel=_style.label("kl", f"(floor {FLOOR:g})"),
               title=f"{name}: mean, min-max band over seeds", xticks=sorted(d.steps.unique()))  # fmt: skip
        ax.set_ylim(bottom=FLOOR / 2)
        ax.legend()
    fig.tight_layout()
    return fig


def main(argv=None):
    args = _common.parser(__doc__).parse_args(argv)
    _common.setup()
    train, samp = run(args.quick, args.seed)
    summary = summarize(train, samp)
    steps = STEPS_QUICK if args.quick else STEPS
    settings = {
        "script": "experiments/learned_order.py",
        "quick": bool(args.quick),
        "seed": args.seed,
        "seeds": SEEDS_QUICK if args.quick else SEEDS,
        "vocab_size": V,
        "length": L,
        "languages": list(LANGUAGES),
        "key_payload_flip": FLIP,
        "reversed_markov_kernel": KERNEL,
        "model": f"synthetic.models lowrank, rank {RANK}",
        "optimizer": f"adam(lr={LR}) on (network, theta = log w), theta0 = 0",
        "steps": steps,
        "record_every": RECORD_QUICK if args.quick else RECORD,
        "rloo_batch": BATCH,
        "rloo_samples": SAMPLES,
        "variance_samples": VARIANCE_NUM_QUICK if args.quick else VARIANCE_NUM,
        "sampling_steps": list(STEP_COUNTS_QUICK if args.quick else STEP_COUNTS),
        "sampling": "exact_law, reveal='fixed' (fixed_counts), values independent",
        "keys": "point_key(seed, language index, 1) init; point_key(seed, language index, 2 + method index) fit",
        "paper": PAPER,
        "summary": summary,
    }
    paths = _common.write_outputs(args.out, "learned_order", train, plot_training(train), settings)
    paths["sampling_csv"] = _common.write_csv(args.out, "learned_order_sampling", samp)
    paths["sampling_png"] = _common.write_png(args.out, "learned_order_sampling", plot_sampling(samp))
    for name in LANGUAGES:
        print(
            name,
            "final bound - H (mean, SD):",
            {m: [round(x, 4) for x in v] for m, v in summary["final_gap"][name].items()},
        )
        print("  wins vs uniform:", summary["wins_vs_uniform"][name],
              " var(masks)/var(orders):", round(summary["grad_var_ratio_masks_over_orders"][name], 1))  # fmt: skip
        print("  KL:", {k: round(v, 4) for k, v in summary["kl"][name].items()})
    print("wrote", *paths.values())
    return train, samp, summary


def replot(out=_common.FIGURES) -> dict:
    """Redraw the two PNGs from the CSVs in ``out`` in the current figure style (no recomputation)."""
    _common.setup()
    train, samp = _common.read_csvs(out, "learned_order", "learned_order_sampling")
    return {
        "png": _common.write_png(out, "learned_order", plot_training(train)),
        "sampling_png": _common.write_png(out, "learned_order_sampling", plot_sampling(samp)),
    }


if __name__ == "__main__":
    main()
