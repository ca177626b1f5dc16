"""Search for plans whose refinement raises KL(q || p) (random order, exact denoiser).

Evidence behind tests/test_refinement.py and notes_claims.md. A batched engine computes the sampler's
law for many tables at once by a dynamic programme over revealed *sets* (the random-order law is a sum
over chains of revealed sets, and every factor is a conditional q(x_l | x_P) = q(x_{P+l}) / q(x_P),
with the uniform convention 1/V where q(x_P) = 0). ``--quick`` checks it against
:func:`theory.sampling.exact_law` and runs a small search; the default runs the searches reported in
notes_claims.md and prints, for each refinement family, the number of tables that violate
"KL does not increase" (tolerance 1e-12) and the largest increase.

Families: ``split1`` every single split of every composition; ``every_strict`` every refinement that
splits each step of a plan whose steps all have >= 2 tokens (includes even doubling); ``every_any``
the same with 1-token steps allowed in the coarse plan; ``bern_double`` Bernoulli N -> 2N with the
linear schedule; ``bern_next`` linear N -> N + 1; ``kl_gt_tc`` any plan above the one-step KL.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments._common import parser, setup


# ---- batched engine ----------------------------------------------------------------------------------
def conditionals(Q: np.ndarray, V: int, L: int) -> dict:
    """{(mask P, position l not in P): q(x_l | x_P) broadcast over x, (n, V**L)} for tables Q (n, V**L)."""
    n = Q.shape[0]
    T = Q.reshape((n,) + (V,) * L)
    M = {}
    for mask in range(1 << L):
        axes = tuple(1 + i for i in range(L) if not (mask >> (L - 1 - i)) & 1)
        m = T.sum(axis=axes, keepdims=True) if axes else T
        M[mask] = np.broadcast_to(m, T.shape).reshape(n, -1)
    F = {}
    for mask, mp in M.items():
        ok = mp > 0
        den = np.where(ok, mp, 1.0)
        for i in range(L):
            b = 1 << (L - 1 - i)
            if not mask & b:
                F[(mask, i)] = np.where(ok, M[mask | b] / den, 1.0 / V)
    return F


def _propagate(F, G0, L, steps):
    """The dynamic programme over revealed sets: G0 = weight of the empty set (an array of ones, numpy or
    jax); steps: list of functions #masked -> [(reveal-set size, weight)] options. Returns the law."""
    G = {0: G0}
    for options in steps:
        G2 = {}
        for P, g in G.items():
            free = [i for i in range(L) if not (P >> (L - 1 - i)) & 1]
            for r, w in options(len(free)):
                if w == 0:
                    continue
                for S in itertools.combinations(free, r):
                    t = g * (w / comb(len(free), r))
                    P2 = P
                    for i in S:
                        t = t * F[(P, i)]
                        P2 |= 1 << (L - 1 - i)
                    G2[P2] = G2.get(P2, 0) + t
        G = G2
    return G[(1 << L) - 1]


def _run(F, n, V, L, steps):
    """steps: list of lists of (reveal-set size, weight given #masked) options."""
    return _propagate(F, np.ones((n, V**L)), L, steps)


def law_fixed(F, n, V, L, counts):
    return _run(F, n, V, L, [lambda k, c=c: [(min(c, k), 1.0)] for c in counts])


def law_bernoulli(F, n, V, L, probs):
    return _run(
        F, n, V, L, [lambda k, p=p: [(r, comb(k, r) * p**r * (1 - p) ** (k - r)) for r in range(k + 1)] for p in probs]
    )


def kl_rows(Q, P):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(Q > 0, Q * (np.log(np.where(Q > 0, Q, 1)) - np.log(np.where(P > 0, P, 1e-300))), 0.0)
    out = t.sum(1)
    out[((Q > 0) & (P == 0)).any(1)] = np.inf
    return out


def tc_rows(Q, V, L):
    n = Q.shape[0]
    T = Q.reshape((n,) + (V,) * L)

    def H(p):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=tuple(range(1, p.ndim)))

    return sum(H(T.sum(axis=tuple(1 + j for j in range(L) if j != i))) for i in range(L)) - H(T)


# ---- tables ------------------------------------------------------------------------------------------
def uniform_supports(V, L, sizes, containing_zero=True):
    """Uniform laws on every support of the given sizes (containing sequence 0: up to flipping
    symbols per position, which the random-order sampler commutes with at V = 2, this is all of them)."""
    S = V**L
    rows = []
    first = [0] if containing_zero else []
    pool = range(1, S) if containing_zero else range(S)
    for k in sizes:
        for rest in itertools.combinations(pool, k - len(first)):
            q = np.zeros(S)
            q[first + list(rest)] = 1.0
            rows.append(q / k)
    return np.array(rows)


def random_tables(rng, V, L, n):
    """n tables of each family: Dirichlet, sparse Dirichlet, sparse uniform, near-deterministic,
    structured (copy / anti-copy / sum constraints)."""
    S = V**L
    X = np.array(list(itertools.product(range(V), repeat=L)))
    out = []
    for kind in ("dirichlet", "sparse_dirichlet", "sparse_uniform", "near_det", "structured"):
        for _ in range(n):
            if kind == "dirichlet":
                p = rng.dirichlet(np.full(S, rng.choice([0.03, 0.1, 0.3, 1.0, 3.0])))
            elif kind == "sparse_dirichlet":
                p = rng.dirichlet(np.full(S, rng.choice([0.3, 1.0, 3.0]))) * (
                    rng.random(S) < rng.choice([0.1, 0.3, 0.6])
                )
            elif kind == "sparse_uniform":
                p = np.zeros(S)
                p[rng.choice(S, rng.integers(1, min(S, 12) + 1), replace=False)] = 1
            elif kind == "near_det":
                p = rng.dirichlet(np.ones(S)) * rng.choice([1e-6, 1e-4, 1e-2, 0.1])
                p[rng.integers(S)] += 1
            else:
                ok = np.ones(S, bool)
                for _ in range(rng.integers(1, L)):
                    i, j, k = rng.choice(L, 3, replace=False) if L >= 3 else (0, 1, 0)
                    t = rng.integers(3)
                    ok &= (
                        (X[:, i] == X[:, j])
                        if t == 0
                        else (X[:, i] != X[:, j])
                        if t == 1
                        else (X[:, k] == (X[:, i] + X[:, j]) % V)
                    )
                p = ok * (rng.dirichlet(np.full(S, 2.0)) if rng.random() < 0.5 else 1.0)
            if p.sum() == 0:
                p[rng.integers(S)] = 1.0
            out.append(p / p.sum())
    return np.array(out)


# ---- refinement families -----------------------------------------------------------------------------
def compositions(L):
    out = []
    for cuts in itertools.product([0, 1], repeat=L - 1):
        c, run = [], 1
        for b in cuts:
            if b:
                c.append(run)
                run = 1
            else:
                run += 1
        out.append((*c, run))
    return out


def refinements(c):
    """All plans that split each step of c into >= 1 parts (c itself included)."""
    per = [[tuple(x) for x in compositions(k)] for k in c]
    for choice in itertools.product(*per):
        yield tuple(x for part in choice for x in part)


def families(L):
    comps = compositions(L)
    fam = {"split1": [], "every_strict": [], "every_any": []}
    for c in comps:
        for i, k in enumerate(c):
            for a in range(1, k):
                fam["split1"].append((c, c[:i] + (a, k - a) + c[i + 1 :]))
        for c2 in refinements(c):
            parts = []  # c2 splits every step of c that has >= 2 tokens?
            s = 0
            ok = True
            for k in c:
                sub, t = [], 0
                while t < k:
                    sub.append(c2[len(parts) + len(sub)])
                    t += sub[-1]
                ok &= k == 1 or len(sub) >= 2
                parts += sub
                s += k
            if ok and c2 != c:
                fam["every_any"].append((c, c2))
                if min(c) >= 2:
                    fam["every_strict"].append((c, c2))
    return fam


def search(Q, V, L, batch, bern_max=4):
    fam = families(L)
    res = {f: [0, -np.inf] for f in (*fam, "bern_double", "bern_next", "kl_gt_tc")}
    for a in range(0, len(Q), batch):
        Qb = Q[a : a + batch]
        n = len(Qb)
        F = conditionals(Qb, V, L)
        K = {c: kl_rows(Qb, law_fixed(F, n, V, L, c)) for c in compositions(L)}
        for f, pairs in fam.items():
            bad = np.zeros(n, bool)
            for c, c2 in pairs:
                d = K[c2] - K[c]
                bad |= d > 1e-12
                res[f][1] = max(res[f][1], float(d.max()))
            res[f][0] += int(bad.sum())
        tc = tc_rows(Qb, V, L)
        bern = {
            N: kl_rows(Qb, law_bernoulli(F, n, V, L, [1.0 / (N - i) for i in range(N)]))
            for N in range(1, 2 * bern_max + 1)
        }
        for f, pairs in (
            ("bern_double", [(N, 2 * N) for N in range(1, bern_max + 1)]),
            ("bern_next", [(N, N + 1) for N in range(1, 2 * bern_max)]),
        ):
            bad = np.zeros(n, bool)
            for N1, N2 in pairs:
                d = bern[N2] - bern[N1]
                bad |= d > 1e-12
                res[f][1] = max(res[f][1], float(d.max()))
            res[f][0] += int(bad.sum())
        over = np.max([K[c] - tc for c in K] + [bern[N] - tc for N in bern], axis=0)
        res["kl_gt_tc"][0] += int((over > 1e-12).sum())
        res["kl_gt_tc"][1] = max(res["kl_gt_tc"][1], float(over.max()))
    return {f: {"violating_tables": v[0], "max_increase": v[1], "pairs": len(fam.get(f, []))} for f, v in res.items()}


L8_PAIRS = [
    ((8,), (4, 4)),
    ((4, 4), (2, 2, 2, 2)),
    ((2, 6), (1, 1, 3, 3)),
    ((6, 2), (3, 3, 1, 1)),
    ((4, 2, 2), (2, 2, 1, 1, 1, 1)),
    ((2, 4, 2), (1, 1, 2, 2, 1, 1)),
    ((2, 2, 4), (1, 1, 1, 1, 2, 2)),
    ((4, 4), (2, 2, 4)),
    ((4, 4), (4, 2, 2)),
    ((4, 4), (1, 3, 4)),
    ((2, 6), (1, 1, 6)),
    ((6, 2), (3, 3, 2)),
]


def search_l8(Q, batch=200):
    """V = 2, L = 8: even doubling of every step (the first open case of the linear schedule is
    [4, 4] -> [2, 2, 2, 2]) next to single splits, on the tables Q."""
    V, L = 2, 8
    res = {pair: [0, -np.inf] for pair in L8_PAIRS}
    for a in range(0, len(Q), batch):
        Qb = Q[a : a + batch]
        F = conditionals(Qb, V, L)
        K = {}
        for pair in L8_PAIRS:
            for c in pair:
                if c not in K:
                    K[c] = kl_rows(Qb, law_fixed(F, len(Qb), V, L, c))
            d = K[pair[1]] - K[pair[0]]
            res[pair][0] += int((d > 1e-12).sum())
            res[pair][1] = max(res[pair][1], float(d.max()))
    return {f"{c} -> {c2}": {"violating_tables": v[0], "max_increase": v[1]} for (c, c2), v in res.items()}


def ascent(V, L, c1, c2, starts=8, seed=0, bernoulli=False):
    """Largest KL(q||p_c2) - KL(q||p_c1) found by L-BFGS on softmax logits of q (JAX gradients through
    the same DP), from random dense and random sparse starts. c1, c2: counts, or step numbers N1, N2 of
    the linear Bernoulli schedule if ``bernoulli``. Returns (best increase, best q)."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import minimize

    def cond(q):
        T = q.reshape((V,) * L)
        M = {}
        for mask in range(1 << L):
            axes = tuple(i for i in range(L) if not (mask >> (L - 1 - i)) & 1)
            m = T.sum(axis=axes, keepdims=True) if axes else T
            M[mask] = jnp.broadcast_to(m, T.shape).reshape(-1)
        return {
            (mask, i): M[mask | (1 << (L - 1 - i))] / M[mask]
            for mask in M
            for i in range(L)
            if not mask & (1 << (L - 1 - i))
        }

    def law(F, plan):
        if bernoulli:
            steps = [
                lambda k, p=1.0 / (plan - i): [(r, comb(k, r) * p**r * (1 - p) ** (k - r)) for r in range(k + 1)]
                for i in range(plan)
            ]
        else:
            steps = [lambda k, c=c: [(min(c, k), 1.0)] for c in plan]
        return _propagate(F, jnp.ones(V**L), L, steps)

    def neg_increase(logits):
        q = jax.nn.softmax(logits)
        F = cond(q)

        def kl(p):
            return jnp.sum(q * (jnp.log(q) - jnp.log(p)))

        return -(kl(law(F, c2)) - kl(law(F, c1)))

    f = jax.jit(jax.value_and_grad(neg_increase))
    rng = np.random.default_rng(seed)
    best, best_q = -np.inf, None
    for t in range(starts):
        x0 = rng.normal(size=V**L) * rng.choice([1, 3, 6, 10])
        if t % 2:
            x0 = np.where(rng.random(V**L) < rng.choice([0.1, 0.2, 0.4]), rng.normal(size=V**L), -12.0)
        r = minimize(
            lambda x: tuple(np.asarray(v, dtype=float) for v in f(jnp.asarray(x))),
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 3000},
        )
        if -r.fun > best:
            best, best_q = float(-r.fun), np.asarray(jax.nn.softmax(r.x))
    return best, best_q


ASCENT = [
    (2, 4, (2, 2), (1, 1, 2), False),
    (2, 6, (2, 4), (1, 1, 2, 2), False),
    (2, 6, (4, 2), (2, 2, 1, 1), False),
    (2, 6, (3, 3), (1, 2, 1, 2), False),
    (2, 6, (3, 3), (1, 2, 2, 1), False),
    (2, 6, (2, 4), (1, 1, 1, 3), False),
    (3, 5, (2, 3), (1, 1, 1, 2), False),
    (3, 5, (3, 2), (1, 2, 1, 1), False),
    (2, 8, (4, 4), (2, 2, 2, 2), False),
    (2, 4, 2, 4, True),
    (2, 4, 2, 3, True),
    (2, 4, 3, 4, True),
    (2, 5, 2, 4, True),
    (2, 5, 2, 3, True),
    (3, 3, 2, 4, True),
    (3, 4, 2, 4, True),
]


def check_engine():
    """The batched engine against exact_law (fixed counts and Bernoulli)."""
    from theory.joint import Joint
    from theory.sampling import exact_law

    rng = np.random.default_rng(0)
    for V, L in ((2, 4), (3, 3)):
        Q = random_tables(rng, V, L, 1)
        F = conditionals(Q, V, L)
        for c in ((L,), (2, L - 2), (1,) * (L - 2) + (2,)):
            P = law_fixed(F, len(Q), V, L, c)
            for j in range(len(Q)):
                e = np.asarray(exact_law(Joint(Q[j], V, L), None, counts=list(c)).probs)
                assert np.allclose(P[j], e, rtol=1e-10, atol=1e-14), (V, L, c)
        P = law_bernoulli(F, len(Q), V, L, [1 / 3, 1 / 2, 1.0])
        for j in range(len(Q)):
            e = np.asarray(exact_law(Joint(Q[j], V, L), None, 3, reveal="bernoulli").probs)
            assert np.allclose(P[j], e, rtol=1e-10, atol=1e-14)


def main(argv=None):
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--ascent", action="store_true", help="also run gradient ascent on the KL increase (slow)")
    ap.add_argument(
        "--l8", type=int, default=0, help="also run the L = 8 doubling search on this many tables per family"
    )
    args = ap.parse_args(argv)
    setup()
    check_engine()
    rng = np.random.default_rng(args.seed)
    if args.quick:
        runs = [
            ("V2L4 uniform supports <= 3", 2, 4, uniform_supports(2, 4, [1, 2, 3]), 4000),
            ("V2L5 random", 2, 5, random_tables(rng, 2, 5, 20), 100),
        ]
    else:
        masks = np.arange(1, 1 << 16)
        allL4 = ((masks[:, None] >> np.arange(16)[None, ::-1]) & 1).astype(float)
        runs = [
            ("V2L4 all uniform supports", 2, 4, allL4 / allL4.sum(1, keepdims=True), 8192),
            ("V2L4 random", 2, 4, random_tables(rng, 2, 4, 2000), 2000),
            ("V2L5 uniform supports containing 0, size <= 5", 2, 5, uniform_supports(2, 5, [1, 2, 3, 4, 5]), 4000),
            ("V2L5 random", 2, 5, random_tables(rng, 2, 5, 1000), 1000),
            ("V2L6 uniform supports containing 0, size <= 4", 2, 6, uniform_supports(2, 6, [1, 2, 3, 4]), 2000),
            ("V2L6 random", 2, 6, random_tables(rng, 2, 6, 600), 300),
            ("V3L3 random", 3, 3, random_tables(rng, 3, 3, 2000), 2000),
            ("V3L4 uniform supports containing 0, size <= 3", 3, 4, uniform_supports(3, 4, [1, 2, 3]), 2000),
            ("V3L4 random", 3, 4, random_tables(rng, 3, 4, 500), 250),
        ]
    out = {}
    for name, V, L, Q, batch in runs:
        t = time.time()
        r = search(Q, V, L, batch, bern_max=2 if args.quick else 4)
        out[name] = {"tables": len(Q), **r}
        print(f"{name}: {len(Q)} tables, {time.time() - t:.1f}s")
        for f, v in r.items():
            print(f"   {f:13s} violating tables {v['violating_tables']:6d}   max increase {v['max_increase']:.3g}")
    if args.l8:
        t = time.time()
        r = search_l8(random_tables(rng, 2, 8, args.l8))
        out["V2L8 random"] = {"tables": 5 * args.l8, **r}
        print(f"V2L8 random: {5 * args.l8} tables, {time.time() - t:.1f}s")
        for f, v in r.items():
            print(f"   {f:34s} violating tables {v['violating_tables']:6d}   max increase {v['max_increase']:.3g}")
    if args.ascent:
        asc = {}
        for V, L, c1, c2, bern in ASCENT[:1] if args.quick else ASCENT:
            t = time.time()
            best, _ = ascent(
                V, L, c1, c2, starts=2 if args.quick else (4 if L == 8 else 8), seed=args.seed, bernoulli=bern
            )
            key = f"V={V} L={L} {'bernoulli N=' if bern else ''}{c1} -> {c2}"
            asc[key] = best
            print(f"ascent {key}: largest increase {best:.3g} ({time.time() - t:.0f}s)", flush=True)
        out["ascent"] = asc
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refinement_search.json").write_text(
        json.dumps({"quick": args.quick, "seed": args.seed, "runs": out}, indent=2) + "\n"
    )
    return out


if __name__ == "__main__":
    main()
