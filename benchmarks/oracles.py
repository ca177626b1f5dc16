"""Exact oracles at real sizes: sparse-row Markov chains (V = 4096) and HMM forward–backward, timed.

1. Sparse chain (synthetic.sparse_chain): random top-K rows (K = 32, 64), teleport eps = 1e-4 with a
   Dirichlet(1) nu (the setting of Tang et al. 2026's ground-truth chains: top-K rows of a 4096-token BPE
   vocabulary, eps = 1e-4), B = 64 states of length L = 1024 sampled from the chain, half the positions masked
   at random. Reported: the time of ``marginals`` (all positions) and of ``marginals_at`` (16 positions per
   row, one sampler step), best of k warm calls; the max absolute error against a plain float64
   forward–backward written here (numpy + scipy.sparse, all rows); and, when a copy of Tang et al.'s oracle
   (LuhanTang/dllm_sampler, sampler/oracle_hmm_posterior.py, class OracleHMMPosterior_LogRank1Teleport;
   torch) is present in ``--tang-dir``, its time and error on the same chain and states, run in a subprocess
   with ``--tang-python`` (their defaults: float16 storage, float32 compute). Their code is never part of
   this repository; without the copy that row is skipped with a message.
2. HMM (synthetic.forward_backward): V = H = 8, L = 1024, B = 64, half masked: conditionals per second.

    PYTHONPATH=. python benchmarks/oracles.py [--quick] [--ks 32 64] [--repeats 3]
        [--tang-dir /tmp/oracle_tang --tang-python /tmp/oracle_tang/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TANG_CHILD = r"""
import sys, time, json
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from sampler.oracle_hmm_posterior import OracleHMMPosterior_LogRank1Teleport, SparseTeleportPrior
d = np.load(sys.argv[2])
V = int(d["init"].shape[0])
prior = SparseTeleportPrior(torch.tensor(d["idx"]).long(), torch.tensor(d["prob"]), torch.tensor(d["nu"]),
                            float(d["eps"]))
m = OracleHMMPosterior_LogRank1Teleport(prior, torch.tensor(d["init"]), V)
z = torch.tensor(d["states"]).long()
m(z[:, :16])  # warm-up (thread pool, allocator) on a short prefix
times = []
for _ in range(int(sys.argv[4])):
    t = time.perf_counter(); out = m(z); times.append(time.perf_counter() - t)
np.save(sys.argv[3], out.numpy())
print(json.dumps({"times": times, "threads": torch.get_num_threads(), "torch": torch.__version__}))
"""


def plain_forward_backward(lang, states: np.ndarray) -> np.ndarray:
    """Textbook scaled forward–backward in float64 (numpy + scipy.sparse), T = (1-eps) P + eps 1 nu^T applied as
    a sparse product plus the rank-1 term; all rows of the batch at once. (B, L) -> (B, L, V)."""
    from scipy import sparse

    V, L = lang.vocab_size, lang.length
    B = states.shape[0]
    P = sparse.csr_matrix(
        (lang.prob.reshape(-1), (np.repeat(np.arange(V), lang.row_nnz), lang.idx.reshape(-1))), shape=(V, V)
    )
    PT = P.T.tocsr()
    eps, nu = lang.eps, lang.teleport
    mask = states == V
    tok = np.where(mask, 0, states)

    def evid(x, i):  # x (V, B) times the evidence at position i (one-hot at visible positions)
        out = np.where(mask[:, i][None, :], x, 0.0)
        cols = np.flatnonzero(~mask[:, i])
        out[tok[cols, i], cols] = x[tok[cols, i], cols]
        return out

    pred = np.empty((L, V, B))
    ok = np.ones(B, bool)
    a = np.repeat(lang.init[:, None], B, axis=1)
    for i in range(L):
        pred[i] = a
        f = evid(a, i)
        s = f.sum(0)
        ok &= s > 0
        f = f / np.where(s > 0, s, 1.0)
        a = (1 - eps) * (PT @ f) + eps * f.sum(0)[None, :] * nu[:, None]  # (f^T T)^T
    out = np.empty((B, L, V))
    beta = np.ones((V, B))
    for i in range(L - 1, -1, -1):
        g = pred[i] * beta
        s = g.sum(0)
        good = ok & (s > 0)
        c = np.where(good[None, :], g / np.where(good, s, 1.0)[None, :], 1.0 / V)
        out[:, i] = np.where(mask[:, i][:, None], c.T, np.eye(V)[tok[:, i]])
        e = evid(beta, i)
        b = (1 - eps) * (P @ e) + eps * (nu @ e)[None, :]
        sb = b.sum(0)
        beta = b / np.where(sb > 0, sb, 1.0)
    return out


def best_of(f, k):
    f()  # warm (compilation)
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def chain_states(lang, B, seed=1, mask_prob=0.5):
    rng = np.random.default_rng(seed)
    x = np.array(lang.sample(jax.random.PRNGKey(seed), B))
    x[rng.random(x.shape) < mask_prob] = lang.vocab_size
    return x


def sparse_rows(args, V, L, B):
    import jax.numpy as jnp

    from synthetic.sparse_chain import random_sparse_chain

    rows = []
    for K in args.ks:
        lang = random_sparse_chain(jax.random.PRNGKey(0), V, K, L, eps=1e-4)
        t = time.perf_counter()
        d = lang.denoiser()
        build = time.perf_counter() - t
        st = chain_states(lang, B)
        sj = jnp.asarray(st, jnp.int32)
        pos = jnp.asarray(np.random.default_rng(2).integers(0, L, size=(B, 16)), jnp.int32)
        row = {"V": V, "K": K, "K_c": int(d.cidx.shape[1]), "eps": lang.eps, "B": B, "L": L}
        row["build_s"] = build
        row["ours_at16_s"] = best_of(lambda: d.marginals_at(sj, pos).block_until_ready(), args.repeats)
        row["ours_s"] = best_of(lambda: d.marginals(sj).block_until_ready(), args.repeats)
        ours = np.asarray(d.marginals(sj))
        t = time.perf_counter()
        ref = plain_forward_backward(lang, st)
        row["plain_fb_s"] = time.perf_counter() - t
        row["ours_err"] = float(np.max(np.abs(ours - ref)))
        del ours
        tang = run_tang(args, lang, st)
        if tang is None:
            row["tang"] = "skipped: no copy of sampler/oracle_hmm_posterior.py in --tang-dir"
        elif "error" in tang:
            row["tang"] = tang["error"]
        else:
            row["tang_s"] = min(tang["times"])
            row["tang_threads"] = tang["threads"]
            out = np.load(tang["path"], mmap_mode="r")
            row["tang_err"] = float(max(np.max(np.abs(out[b].astype(np.float64) - ref[b])) for b in range(B)))
            row["speedup"] = row["tang_s"] / row["ours_s"]
            os.unlink(tang["path"])
        del ref
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_tang(args, lang, states):
    src = Path(args.tang_dir) / "sampler" / "oracle_hmm_posterior.py"
    if not src.exists() or not Path(args.tang_python).exists():
        print(f"Tang et al.'s oracle: skipped ({src} or {args.tang_python} absent)", flush=True)
        return None
    tmp = Path(tempfile.mkdtemp(prefix="oracles_"))
    np.savez(
        tmp / "chain.npz",
        init=lang.init,
        idx=lang.idx,
        prob=lang.prob,
        nu=lang.teleport,
        eps=lang.eps,
        states=states,
    )
    out = tmp / "tang.npy"
    args_ = [
        args.tang_python,
        "-c",
        TANG_CHILD,
        args.tang_dir,
        str(tmp / "chain.npz"),
        str(out),
        str(args.tang_repeats),
    ]
    r = subprocess.run(args_, capture_output=True, text=True)
    os.unlink(tmp / "chain.npz")
    if r.returncode != 0:
        return {"error": "Tang et al.'s oracle failed: " + r.stderr[-400:]}
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["path"] = str(out)
    return res


def hmm_rows(args, L, B, V=8, H=8):
    import jax.numpy as jnp

    from synthetic import languages

    lang = languages.random_hmm(jax.random.PRNGKey(0), H, V, L, 1.0)
    d = lang.denoiser()
    st = jnp.asarray(chain_states(lang, B), jnp.int32)
    pos = jnp.asarray(np.random.default_rng(2).integers(0, L, size=(B, 16)), jnp.int32)
    full = best_of(lambda: d.marginals(st).block_until_ready(), args.repeats * 3)
    at = best_of(lambda: d.marginals_at(st, pos).block_until_ready(), args.repeats * 3)
    row = {"V": V, "H": H, "L": L, "B": B, "marginals_s": full, "positions_per_s": B * L / full, "at16_s": at}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (V = 256, L = 64, B = 8), seconds")
    p.add_argument("--ks", type=int, nargs="+", default=[32, 64], help="entries per row (top-K)")
    p.add_argument("--repeats", type=int, default=3, help="timed warm calls (best of)")
    p.add_argument("--tang-repeats", type=int, default=2, help="timed calls of Tang et al.'s oracle (best of)")
    p.add_argument("--tang-dir", default="/tmp/oracle_tang", help="folder holding sampler/oracle_hmm_posterior.py")
    p.add_argument("--tang-python", default="/tmp/oracle_tang/venv/bin/python", help="a Python with torch")
    p.add_argument("--skip-sparse", action="store_true")
    p.add_argument("--skip-hmm", action="store_true")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.quick:
        V, L, B = 256, 64, 8
        args.ks = [k for k in args.ks if k <= 16] or [8]
    else:
        V, L, B = 4096, 1024, 64
    info = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "jax": jax.__version__,
        "argv": sys.argv[1:],
    }
    print(json.dumps(info), flush=True)
    out = {"info": info, "sparse": [], "hmm": None}
    if not args.skip_sparse:
        out["sparse"] = sparse_rows(args, V, L, B)
    if not args.skip_hmm:
        out["hmm"] = hmm_rows(args, L if not args.quick else 256, B if not args.quick else 16)
    info["load_after"] = os.getloadavg()
    print(f"load average before {info['load_before']}, after {info['load_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
