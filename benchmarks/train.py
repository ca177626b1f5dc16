"""Throughput of the learned denoisers on this machine: training tokens/s and sampling tokens/s.

Default model (synthetic.models.ModelConfig defaults: d_model 64, 2 layers, 4 heads, d_ff 128) on a random
Markov language. Training tokens/s counts the B * L clean tokens of each batch (one optimizer step per
batch), after compilation. Sampling tokens/s counts generated tokens (num * L) of
``theory.sampling.sample`` with the learned denoiser, after compilation; the denoiser row counts positions
scored per second by ``marginals``. Also times one full default ``fit_denoiser`` run (with its evaluation).

    PYTHONPATH=. python benchmarks/train.py [--quick]   (XLA uses all cores: run on the 2-core machine)
"""

from __future__ import annotations

import argparse
import os
import time


def markov_chain_oracle(chain):
    """Exact conditionals of a first-order MarkovChain at any L (a cross-check local to this benchmark; the
    toolkit's scalable engine is synthetic.chain_oracle): for a masked i with nearest visible neighbours x_j (j < i)
    and x_k (k > i), q(x_i = v | z) is proportional to P^(i-j)[x_j, v] P^(k-i)[v, x_k] (init P^i instead of the
    left factor when there is no j; 1 instead of the right factor when there is no k)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from theory.denoiser import FunctionDenoiser

    V, L = chain.vocab_size, chain.length
    P = np.asarray(chain.trans)
    pw = [np.eye(V)]
    for _ in range(L):
        pw.append(pw[-1] @ P)
    pw = jnp.asarray(np.stack(pw))  # (L+1, V, V)
    pi = jnp.asarray(np.stack([np.asarray(chain.init) @ np.asarray(pw[i]) for i in range(L)]))  # (L, V)

    def one(z):  # (L,) -> (L, V)
        pos = jnp.arange(L)
        vis = z != V
        left = jax.lax.cummax(jnp.where(vis, pos, -1))  # nearest visible at or before i
        right = jax.lax.cummin(jnp.where(vis, pos, L), reverse=True)
        xl = z[jnp.clip(left, 0, L - 1)]
        xr = z[jnp.clip(right, 0, L - 1)]
        lf = jnp.where((left >= 0)[:, None], pw[jnp.clip(pos - left, 0, L)][pos, jnp.clip(xl, 0, V - 1)], pi)
        rf = jnp.where((right < L)[:, None], pw[jnp.clip(right - pos, 0, L)][pos, :, jnp.clip(xr, 0, V - 1)], 1.0)
        w = lf * rf
        return w / w.sum(-1, keepdims=True)

    return FunctionDenoiser(jax.vmap(one), V, L)


def markov_entropy(chain) -> float:
    """H(q) in nats of a MarkovChain: H(init) + sum_i sum_a P(x_{i-1} = a) H(trans[a])."""
    import numpy as np

    def h(p):
        p = np.asarray(p)
        return float(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)))

    P = np.asarray(chain.trans)
    pi = np.asarray(chain.init)
    rows = np.array([h(r) for r in P])
    total = h(pi)
    for _ in range(1, chain.length):
        total += float(pi @ rows)
        pi = pi @ P
    return total


def _timed(fn, repeat):
    fn()  # compile / warm up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import pandas as pd

    from synthetic import languages
    from synthetic import train as T
    from synthetic.models import init_denoiser
    from theory import elbo, policies, schedules
    from theory.sampling import sample

    key = jax.random.PRNGKey(args.seed)
    sizes = [(4, 8)] if args.quick else [(4, 8), (8, 16)]
    batch = 128
    rows = []
    print(f"CPU cores visible: {os.cpu_count()}; JAX devices: {jax.devices()}")
    for V, L in sizes:
        lang = languages.random_markov(key, V, L)
        den = init_denoiser("transformer", V, L, key=key)
        sample_fn = lang.sample
        opt = T._default_optimizer(T.DEFAULT_LR["transformer"], 1000)
        step = T._make_step(opt, schedules.linear(), V, elbo.uniform_t, elbo.bernoulli_mask(schedules.linear()))
        state = {"net": den.net, "opt": opt.init(den.net), "n": 0}
        x = sample_fn(key, batch).astype(jnp.int32)

        def one_step():
            state["n"] += 1
            net, o, loss = step(state["net"], state["opt"], jax.random.fold_in(key, state["n"]), x)
            state["net"], state["opt"] = net, o
            loss.block_until_ready()

        def one_data_step():
            sample_fn(jax.random.fold_in(key, state["n"]), batch).block_until_ready()
            one_step()

        reps = 5 if args.quick else 30
        t_step = _timed(one_step, reps)
        t_full = _timed(one_data_step, reps)
        rows.append(
            {
                "V": V,
                "L": L,
                "what": "train step (batch 128)",
                "params": den.num_parameters,
                "seconds": t_step,
                "tokens_per_s": batch * L / t_step,
            }
        )
        rows.append(
            {
                "V": V,
                "L": L,
                "what": "train step + data sampling",
                "params": den.num_parameters,
                "seconds": t_full,
                "tokens_per_s": batch * L / t_full,
            }
        )
        states = jnp.full((1024, L), V, dtype=jnp.int32)
        t_m = _timed(lambda: den.marginals(states).block_until_ready(), 3 if args.quick else 10)
        rows.append(
            {
                "V": V,
                "L": L,
                "what": "marginals (1024 states)",
                "params": den.num_parameters,
                "seconds": t_m,
                "tokens_per_s": 1024 * L / t_m,
            }
        )
        num = 256 if args.quick else 1024
        policy = policies.RandomOrder()  # one instance: the compiled sampler is cached per (denoiser, policy)
        for steps in (4, L):
            t_s = _timed(
                lambda: sample(key, den, policy, steps, num=num).tokens.block_until_ready(), 1 if args.quick else 3
            )
            rows.append(
                {
                    "V": V,
                    "L": L,
                    "what": f"sample {num} seqs, {steps} steps",
                    "params": den.num_parameters,
                    "seconds": t_s,
                    "tokens_per_s": num * L / t_s,
                }
            )
        if not args.quick:
            t0 = time.perf_counter()
            _, hist = T.fit_denoiser(lang, key=key, reference=markov_chain_oracle(lang), progress=False)
            t = time.perf_counter() - t0
            last = hist.iloc[-1]
            rows.append(
                {
                    "V": V,
                    "L": L,
                    "what": f"fit_denoiser default ({T.DEFAULT_STEPS['transformer']} steps, incl. compile + 11 evals)",
                    "params": den.num_parameters,
                    "seconds": t,
                    "tokens_per_s": T.DEFAULT_STEPS["transformer"] * batch * L / t,
                    "eps_learning": last["eps_learning"],
                    "eps_se": last["eps_learning_se"],
                    "elbo_minus_H_per_token": last["elbo_per_token"] - markov_entropy(lang) / L,
                    "elbo_se_per_token": last["elbo_se"] / L,
                }
            )
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return df


if __name__ == "__main__":
    main()
