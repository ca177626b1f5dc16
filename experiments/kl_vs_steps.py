"""Exact KL(q || p_N) of parallel MDM sampling versus the number of steps N.

The sampling error of an MDM with the *exact* denoiser comes only from revealing several tokens at
once with independently drawn values. This script computes it exactly (no Monte Carlo) for random
languages, random order, both reveal modes and several schedules, and plots KL against N next to the
dependence bound of BenHamu2025/Feng2025 (theory.dependence). Used as the core's demo.

    python experiments/kl_vs_steps.py            # V=2, L=8: under a minute
    python experiments/kl_vs_steps.py --quick    # V=2, L=6
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def run(args) -> pd.DataFrame:  # noqa: F821
    import jax
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from synthetic import languages
    from theory import metrics, schedules
    from theory.dependence import error_decomposition
    from theory.sampling import exact_law

    V, L = (2, 6) if args.quick else (args.vocab, args.length)
    key = jax.random.PRNGKey(args.seed)
    lang = languages.random_ngram(key, V, 3, L, concentration=args.concentration)
    q = lang.joint()
    scheds = {"linear": schedules.linear(), "cosine": schedules.cosine(), "cosine_squared": schedules.cosine_squared()}
    rows = []
    grid = [(name, reveal, N) for name in scheds for reveal in ("fixed", "bernoulli") for N in range(1, L + 1)]
    for name, reveal, N in tqdm(grid, desc="kl_vs_steps", disable=_common.quiet_progress()):
        law = exact_law(q, None, N, reveal=reveal, schedule=scheds[name])
        dep = (
            error_decomposition(q, None, N, reveal=reveal, schedule=scheds[name]).dependence
            if name == "linear"
            else np.nan
        )
        rows.append(
            {
                "language": "3-gram",
                "vocab_size": V,
                "length": L,
                "schedule": name,
                "reveal": reveal,
                "steps": N,
                "kl": metrics.kl(q.probs, law.probs),
                "tv": metrics.tv(q.probs, law.probs),
                "log_ter_gap": metrics.log_ter(law.probs, q) - q.entropy() / L,
                "dependence_bound": dep,
                "expected_nfe": law.expected_nfe,
            }
        )
    return pd.DataFrame(rows)


def plot(df):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, reveal in zip(axes, ("fixed", "bernoulli")):
        d = df[df.reveal == reveal]
        for name, g in d.groupby("schedule", sort=False):
            ax.plot(g.steps, g.kl, marker="o", label=f"KL, {name}")
        lin = d[d.schedule == "linear"]
        ax.plot(lin.steps, lin.dependence_bound, "k--", label="dependence bound (linear)")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel("steps N")
        ax.set_title(f"{reveal} reveal, V={d.vocab_size.iloc[0]}, L={d.length.iloc[0]}")
    axes[0].set_ylabel("KL(q || p_N) [nats]")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=2)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--concentration", type=float, default=0.3)
    args = p.parse_args(argv)
    _common.setup()
    df = run(args)
    paths = _common.write_outputs(args.out, "kl_vs_steps", df, plot(df), vars(args))
    show = df[(df.schedule == "linear")][["reveal", "steps", "kl", "dependence_bound", "expected_nfe"]]
    print(show.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print("wrote", *paths.values())
    return df


if __name__ == "__main__":
    main()
