"""Fast engines of :func:`theory.sampling.exact_law`: layers for value-blind policies, a lifted state for
RandomOrder with Bernoulli reveal, sparse states for adaptive policies.

The exact law of value-blind policies (fixed counts or Bernoulli reveal) as a dynamic programme over layers.

A value-blind policy (:class:`~theory.policies.RandomOrder`, :class:`~theory.policies.LeftToRight`,
:class:`~theory.policies.FixedOrder`) chooses which positions to reveal without looking at the values, so
with fixed counts k_1..k_N the set of visible positions after step n has exactly K_n = k_1 + ... + k_n
elements. The distribution over partial states therefore lives on *layers*: layer n holds, for every
visible set U with |U| = K_n that the policy can reach, a table P_U over the V**K_n values of U (row-major
over the sorted positions of U). One step maps layer n-1 to layer n by pulling, for every child set U' and
every way D of U' to have been the last k_n positions revealed (U = U' minus D):

    P_{U'}(x') = sum_D  w(U -> U')  P_U(x'_U)  prod_{i in D} c_i(x'_i | x'_U),

with c_i(v | x_U) = C[x_U, x_i = v] / C[x_U] the exact conditional (C the cylinder-sum table of
:mod:`theory.denoiser`; 1/V where C[x_U] = 0, the toolkit's convention), w = 1 / binom(L - K, k) for
RandomOrder and 1 for a fixed order (one set per layer). With ``values="joint"`` the product is replaced
by q's joint conditional C[x'] / C[x'_U] (0 where C[x'_U] = 0, as in the frontier engine).

The conditionals of a layer, c_i(v | x_U) for every set U, free position i, value v and x_U, are one gather
from the cylinder table (shape (#sets, L - K, V, V**K)); for each relative pattern of D inside U' (which
slots of U' were revealed last) the map from the child's values to (values of D, values of U) is the same
for every child, so a step is, per block of children and pattern, row gathers, a broadcast product and one
fixed permutation. Cost: the number of (state, reveal set, values) transitions, sum_n binom(L, K_{n-1})
binom(L - K_{n-1}, k_n) V**K_n, with no (V+1)**L-sized state array besides the cylinder table and nothing
of size (V+1)**L x L x V. :func:`theory.sampling.exact_law` dispatches here automatically.

Bernoulli reveal (count ~ Binomial(#masked, p_n), then the policy's positions) is value-blind too: every
layer K moves to every K + k with weight Binomial(k; L - K, p_n) (:func:`layered_run`). The layers then
cover all (V+1)**L states and a step costs up to (2V+1)**L transitions, as in the frontier engine, but
without its materialised transitions and dense merge. For RandomOrder, :func:`lifted_run` does better where
its (2V)**L-float state fits: each masked position is revealed independently w.p. p_n, so a step is a
completion (every masked position gets a latent candidate from the exact conditionals) and a thinning (a
subset sum over the visible-set bits), O(L (2V)**L) per step.

Adaptive policies (Top-k, EB and any other policy that looks at values) run on :func:`sparse_run`: the
frontier engine's step on the states that carry mass, kept as sorted int64 indices and merged by a sort and
a segment sum (no dense (V+1)**L array besides the cylinder table).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.stats import binom

from .states import strides
from .validation import SCALABLE_HINT, check_size

#: Elements per block of the broadcast product (children x V**K'): keeps a block in the L2 cache.
BLOCK = 1 << 16
#: Default cap on worker threads (numpy releases the GIL in the block products).
MAX_THREADS = 2
#: Largest cache of per-pattern permutations (int32 entries); beyond it they are computed per block.
PERM_CACHE = 1 << 23


def _threads(threads: int | None) -> int:
    if threads is None:
        avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(MAX_THREADS, avail))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}.")
    return threads


def _combos(n: int, k: int) -> np.ndarray:
    """All k-subsets of range(n) in lexicographic order, (binom(n, k), k) int64."""
    return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(comb(n, k), k)


def _masks(sets: np.ndarray) -> np.ndarray:
    """Bitmask (int64) of each row of ``sets`` (M, K)."""
    bits = np.left_shift(np.ones_like(sets, dtype=np.int64), sets)  # (M, K)
    return np.asarray(bits.sum(axis=1, dtype=np.int64))  # (M,); 0 for the empty set


def _digits(V: int, K: int) -> np.ndarray:
    """Row-major digits of every value index in V**K, (V**K, K) int64."""
    return (np.arange(V**K, dtype=np.int64)[:, None] // strides(V, K)[None, :]) % V if K else np.zeros((1, 0), np.int64)


def layer_sets(order, length: int, sizes) -> list:
    """The visible sets of each layer, sorted rows (M_n, K_n): all K-subsets for ``order="random"``,
    the first K positions of the permutation ``order`` (a tuple) otherwise."""
    if isinstance(order, str):
        return [_combos(length, K) for K in sizes]
    perm = np.asarray(order, dtype=np.int64)
    return [np.sort(perm[:K])[None, :] for K in sizes]


def _sizes(counts) -> list:
    """Layer sizes K_0 = 0, K_1, ... (steps that reveal nothing are dropped)."""
    sizes = [0]
    for k in counts:
        if int(k) > 0:
            sizes.append(sizes[-1] + int(k))
    return sizes


def layered_bytes(
    vocab_size: int,
    length: int,
    plan_values,
    order="random",
    values: str = "independent",
    reveal: str = "fixed",
    max_bytes: float | None = None,
) -> int:
    """Peak bytes of :func:`layered_run`: the cylinder table, the layers, and the largest step's conditionals,
    index tables and child layer. Bernoulli reveal keeps every layer (all (V+1)**L states) twice; with
    RandomOrder it runs on the lifted state (:func:`lifted_run`) when that fits in :data:`LIFTED_MAX_BYTES`."""
    V, L = vocab_size, length
    if use_lifted(V, L, order, reveal, max_bytes):
        return 8 * (V + 1) ** L + lifted_bytes(V, L)
    if reveal == "fixed":
        sizes = _sizes(plan_values)
        pairs_K = list(zip(sizes[:-1], sizes[1:]))
        held = 0
    else:
        pairs_K = [(K, K2) for K in range(L) for K2 in range(K + 1, L + 1)]
        held = 2 * 8 * (V + 1) ** L if isinstance(order, str) else 2 * 8 * sum(V**K for K in range(L + 1))
    peak = 0
    for K, K2 in pairs_K:
        M = comb(L, K) if isinstance(order, str) else 1
        M2 = comb(L, K2) if isinstance(order, str) else 1
        cond = M * (L - K) * V ** (K + 1) if values == "independent" else M * V**K
        pairs = M2 * comb(K2, K2 - K)
        step = 8 * (cond + 2 * M * V**K + 2 * M2 * V**K2) + 8 * pairs * (1 + K2 - K) + 4 * min(PERM_CACHE, V**K2)
        peak = max(peak, step)
    return 8 * (V + 1) ** L + held + peak


def check_layered_size(
    vocab_size: int, length: int, plan_values, order, values: str, max_bytes: float | None, reveal: str = "fixed"
) -> None:
    """Raise ValueError (with the memory it would need and the engine that scales) if too large."""
    check_size(
        layered_bytes(vocab_size, length, plan_values, order, values, reveal, max_bytes),
        f"exact_law's layered engine (value-blind policy, {reveal} reveal, V = {vocab_size}, L = {length})",
        max_bytes,
        SCALABLE_HINT + " (theory.sampling.sample)",
    )


def _conditionals(cyl, V: int, L: int, sets: np.ndarray, C_U: np.ndarray, base: np.ndarray) -> np.ndarray:
    """c[m, s, v, a] = C[x_U = a, x_i = v] / C[x_U = a] (1/V where C = 0), i = s-th free position of set m.

    ``base`` (M, V**K): index in (V+1)**L of the masked state (U_m, a); shape (M, L - K, V, V**K)."""
    M, K = sets.shape
    st = strides(V + 1, L)
    free = np.ones((M, L), bool)
    free[np.arange(M)[:, None], sets] = False
    comp = np.nonzero(free)[1].reshape(M, L - K)  # (M, L - K) free positions, sorted
    out = np.empty((M, L - K, V, V**K))
    ok = C_U > 0
    inv = np.where(ok, 1.0 / np.where(ok, C_U, 1.0), 0.0)  # (M, A)
    for s in range(L - K):
        sh = st[comp[:, s]]  # (M,)
        for v in range(V):
            num = cyl[base + ((v - V) * sh)[:, None]]  # (M, A)
            out[:, s, v] = np.where(ok, num * inv, 1.0 / V)
    return out


def _bases(V: int, L: int, sets: np.ndarray) -> np.ndarray:
    """Index in (V+1)**L of each masked state (U_m, a): (M, V**K) int64."""
    M, K = sets.shape
    st = strides(V + 1, L)
    allmask = V * st.sum()
    sst = st[sets]  # (M, K)
    dig = _digits(V, K)  # (A, K)
    return allmask + ((dig - V) @ sst.T).T if K else np.full((M, 1), allmask, np.int64)


def layered_law(
    cyl, vocab_size: int, length: int, counts, order="random", values: str = "independent", threads: int | None = None
):
    """Exact law over V**L (numpy (V**L,)) of a value-blind policy with fixed ``counts``.

    ``cyl``: the cylinder-sum table ((V+1)**L,) of q (numpy or JAX); ``order``: "random" (RandomOrder)
    or a permutation tuple (FixedOrder; LeftToRight is ``tuple(range(L))``); ``values``: "independent"
    (the sampler: revealed values drawn independently from the exact conditionals) or "joint" (from q's
    joint conditional); ``threads``: worker threads over blocks of children (default: the CPUs this
    process may use, at most :data:`MAX_THREADS`; the result does not depend on it). See the module
    docstring for the recursion.
    """
    if int(np.sum(counts)) != int(length):
        raise ValueError(f"counts must sum to L = {length}, got {list(counts)}.")
    return layered_run(cyl, vocab_size, length, counts, "fixed", order, values, threads).probs


@dataclass(frozen=True)
class LayeredResult:
    """``probs`` (V**L,) numpy, ``expected_nfe`` and ``steps_run`` as :class:`theory.sampling.Law` counts them."""

    probs: np.ndarray
    expected_nfe: float
    steps_run: int


def _step_weights(reveal: str, value, masked: int) -> dict:
    """{k: P(reveal k of the ``masked`` tokens)}: fixed counts min(k_n, masked); Bernoulli Binomial(masked, p_n)."""
    if reveal == "fixed":
        return {min(int(value), masked): 1.0}
    pmf = binom.pmf(np.arange(masked + 1), masked, float(value))
    return {k: float(w) for k, w in enumerate(pmf) if w > 0}


def layered_run(
    cyl,
    vocab_size: int,
    length: int,
    plan_values,
    reveal: str = "fixed",
    order="random",
    values: str = "independent",
    threads: int | None = None,
    max_bytes: float | None = None,
) -> LayeredResult:
    """The layered law with fixed counts (``plan_values`` = k_1..k_N) or Bernoulli reveal (``plan_values`` =
    p_1..p_N, the count of a step Binomial(#masked, p_n), then the policy's first / uniformly random
    positions). With Bernoulli reveal a step maps every layer K to every K + k with weight
    Binomial(k; L - K, p_n): the layers together cover (V+1)**L states and a step costs up to (2V+1)**L
    transitions. NFE counts the steps that reveal >= 1 token; ``steps_run`` the steps until no mask is left.
    RandomOrder with Bernoulli reveal runs on the lifted state instead (:func:`lifted_run`, (2V)**L values,
    O(L (2V)**L) per step) when it fits in :data:`LIFTED_MAX_BYTES` (:func:`use_lifted`).
    """
    V, L = int(vocab_size), int(length)
    if reveal not in ("fixed", "bernoulli"):
        raise ValueError(f"reveal must be 'fixed' or 'bernoulli', got {reveal!r}.")
    cyl = np.asarray(cyl)
    if use_lifted(V, L, order, reveal, max_bytes):
        full = np.zeros(1, np.int64)  # q's table: the cylinder sums of the fully visible states
        for stv in strides(V + 1, L):
            full = (full[:, None] + stv * np.arange(V)[None, :]).reshape(-1)
        qprobs = cyl[full] if values == "joint" else None
        return lifted_run(cyl, V, L, plan_values, values, qprobs, threads)
    sets_of: dict = {}

    def sets(K: int) -> np.ndarray:
        if K not in sets_of:
            sets_of[K] = layer_sets(order, L, [K])[0]
        return sets_of[K]

    layers: dict = {0: np.ones((1, 1))}
    nfe, n = 0.0, 0
    for value in plan_values:
        if not any(K < L and np.any(P) for K, P in layers.items()):
            break
        new: dict = {}
        for K, P in layers.items():
            if K == L or not np.any(P):
                _add(new, K, P)
                continue
            ks = _step_weights(reveal, value, L - K)
            nfe += float(P.sum()) * sum(w for k, w in ks.items() if k > 0)
            prep = None
            for k, w in ks.items():
                if k == 0:
                    _add(new, K, w * P)
                    continue
                if prep is None:
                    prep = _prepare(cyl, V, L, sets(K), P, values)
                out = _step(cyl, V, L, sets(K), sets(K + k), prep, k, order, values, threads)
                _add(new, K + k, out if w == 1.0 else w * out)
        layers = new
        n += 1
    if any(K < L and np.any(P) for K, P in layers.items()):
        raise RuntimeError("plan ended with masked tokens left (counts must sum to L; Bernoulli: p_N = 1).")
    return LayeredResult(layers[L].reshape(-1), nfe, n)


def _add(layers: dict, K: int, X: np.ndarray) -> None:
    layers[K] = layers[K] + X if K in layers else X  # a new array: a carried layer may alias the old one


def _prepare(cyl, V, L, sets, P, values):
    """Per parent layer: (P or P / C[x_U], the conditionals (M, L - K, V, V**K) or None)."""
    base = _bases(V, L, sets)  # (M, A)
    C_U = cyl[base]  # (M, A)
    if values == "independent":
        return P, _conditionals(cyl, V, L, sets, C_U, base)
    ok = C_U > 0
    return np.where(ok, P / np.where(ok, C_U, 1.0), 0.0), None  # P / C[x_U]


def _step(cyl, V, L, sets, sets2, prep, k, order, values, threads=None):
    """One layer step revealing k tokens: ``prep`` = :func:`_prepare` of P (M, V**K) on ``sets`` -> (M2, V**K2)
    on ``sets2``."""
    M, K = sets.shape
    M2, K2 = sets2.shape
    A, A2 = V**K, V**K2
    rank = np.full(1 << L, -1, np.int64)  # bitmask of a set -> its row in the parent layer (-1: not in it)
    rank[_masks(sets)] = np.arange(M)
    pats = _combos(K2, k)  # (npat, k): slots of D inside the child
    masks2 = _masks(sets2)
    # parent of every (child, pattern): the child's set minus the pattern's slots
    keep = np.ones((len(pats), K2), bool)
    keep[np.arange(len(pats))[:, None], pats] = False
    pslots = np.nonzero(keep)[1].reshape(len(pats), K)  # (npat, K): the parent's slots in the child
    dpos = sets2[:, pats]  # (M2, npat, k) positions of D
    pmask = masks2[:, None] - np.sum(np.left_shift(np.int64(1), dpos), axis=2, dtype=np.int64)  # (M2, npat)
    par = rank[pmask]  # (M2, npat)
    used = (par >= 0).any(0)  # patterns with a parent in the layer (all for RandomOrder, one for a fixed order)
    pats, pslots, dpos, par = pats[used], pslots[used], dpos[:, used], par[:, used]
    full = bool((par >= 0).all())
    # s-th free position of the parent: d_j - (slots of U' before d_j that are in U) = d_j - pat_j + j
    slot = dpos - pats[None] + np.arange(k)[None, None]  # (M2, npat, k)
    # block layout (values of D, then of U): the child slot pats[j] has weight V**(K2-1-j), pslots[r] V**(K-1-r);
    # the block index of a child value x' is sum_s w[s] x'_s, split into the first h slots and the rest, so a
    # permutation is one broadcast add of two short tables (no transposed copy of a V**K2 index cube)
    npat = len(pats)
    w = np.empty((npat, K2), np.int64)
    w[np.arange(npat)[:, None], pats] = V ** np.arange(K2 - 1, K2 - 1 - k, -1, dtype=np.int64)[None, :]
    w[np.arange(npat)[:, None], pslots] = V ** np.arange(K - 1, -1, -1, dtype=np.int64)[None, :]
    h = K2 // 2
    hi = (w[:, :h] @ _digits(V, h).T).astype(np.int32)  # (npat, V**h)
    lo = (w[:, h:] @ _digits(V, K2 - h).T).astype(np.int32)  # (npat, V**(K2-h))

    def perm_of(p: int) -> np.ndarray:
        """Child value index x' -> index in the block layout, (A2,) int32."""
        return (hi[p][:, None] + lo[p][None, :]).reshape(-1)

    cache = len(pats) * A2 <= PERM_CACHE
    perms = np.stack([perm_of(p) for p in range(len(pats))]) if cache else None  # (npat, A2)
    weight = 1.0 / comb(L - K, k) if isinstance(order, str) else 1.0
    out = np.zeros((M2, A2))
    src, cond = prep  # (M, A) and (M, L - K, V, A) (values="independent")

    def pull(c0: int, c1: int) -> None:
        """out[c0:c1] = sum over patterns of the parents' mass times the revealed tokens' conditionals
        (a fixed order: some children have no parent for a pattern; one pattern at a time)."""
        blk = out[c0:c1]
        for p in range(len(pats)):
            pr = par[c0:c1, p]
            rows = np.nonzero(pr >= 0)[0]
            if rows.size == 0:
                continue
            pr = pr[rows]
            b = len(pr)
            perm = perms[p] if perms is not None else perm_of(p)
            if values == "independent":
                G = src[pr]  # (b, A)
                sl = slot[c0:c1, p][rows]  # (b, k)
                for j in range(k):
                    r = cond[pr, sl[:, j]]  # (b, V, A): conditionals of the j-th revealed position
                    G = (G.reshape(b, -1, 1, A) * r[:, None, :, :]).reshape(b, -1, A)  # (b, V**(j+1), A)
                contrib = np.take(G.reshape(b, A2), perm, axis=1)  # (b, A2) in the child's layout
            else:
                contrib = np.take(src[pr], perm % A, axis=1)
            blk[rows] += contrib

    def pull_all(c0: int, c1: int, p0: int, p1: int, acc: np.ndarray) -> None:
        """acc[c0:c1] += sum over patterns p0..p1 (every child has a parent, RandomOrder): the patterns of a
        chunk at once, (b, patterns, V**k, A) products then one gather into the child layout and a sum."""
        b, npc = c1 - c0, p1 - p0
        pr = par[c0:c1, p0:p1]  # (b, npc)
        if perms is not None:
            pm = perms[p0:p1]
        else:
            pm = (hi[p0:p1][:, :, None] + lo[p0:p1][:, None, :]).reshape(npc, A2)
        if values == "independent":
            G = src[pr]  # (b, npc, A)
            sl = slot[c0:c1, p0:p1]  # (b, npc, k)
            for j in range(k):
                r = cond[pr, sl[..., j]]  # (b, npc, V, A)
                G = (G.reshape(b, npc, -1, 1, A) * r[:, :, None, :, :]).reshape(b, npc, -1, A)
            flat, idx = G.reshape(b, npc * A2), pm + (np.arange(npc, dtype=np.int64) * A2)[:, None]
        else:
            flat, idx = src[pr].reshape(b, npc * A), pm % A + (np.arange(npc, dtype=np.int64) * A)[:, None]
        contrib = np.take(flat, idx.reshape(-1), axis=1).reshape(b, npc, A2)
        acc[c0:c1] += contrib[:, 0] if npc == 1 else contrib.sum(axis=1)

    B = max(1, BLOCK // A2)
    starts = list(range(0, M2, B))
    nthreads = _threads(threads)
    if not full:
        nthreads = min(nthreads, len(starts))
        if nthreads <= 1:
            for c0 in starts:
                pull(c0, min(M2, c0 + B))
        else:  # numpy releases the GIL in the gathers and products: children blocks in parallel, disjoint rows
            with ThreadPoolExecutor(nthreads) as ex:
                list(ex.map(lambda c0: pull(c0, min(M2, c0 + B)), starts))
    else:
        npat = len(pats)
        PC = max(1, BLOCK // (min(B, M2) * A2))  # patterns per work item: >= BLOCK elements per numpy call
        pchunks = [(p0, min(npat, p0 + PC)) for p0 in range(0, npat, PC)]
        if len(starts) >= 2:  # children blocks in parallel (disjoint rows), each over all its pattern chunks

            def by_block(c0: int) -> None:
                for p0, p1 in pchunks:
                    pull_all(c0, min(M2, c0 + B), p0, p1, out)

            if nthreads <= 1:
                for c0 in starts:
                    by_block(c0)
            else:
                with ThreadPoolExecutor(min(nthreads, len(starts))) as ex:
                    list(ex.map(by_block, starts))
        else:  # one block of children: pattern chunks in GROUPS fixed halves (own sums), whatever the threads
            halves = [pchunks[: (len(pchunks) + 1) // 2], pchunks[(len(pchunks) + 1) // 2 :]]
            accs = [out, np.zeros_like(out)]

            def by_half(g: int) -> None:
                for p0, p1 in halves[g]:
                    pull_all(0, M2, p0, p1, accs[g])

            if nthreads <= 1 or not halves[1]:
                for g in range(2):
                    by_half(g)
            else:
                with ThreadPoolExecutor(2) as ex:
                    list(ex.map(by_half, range(2)))
            out += accs[1]
    if values == "joint":
        out *= cyl[_bases(V, L, sets2)]
    if weight != 1.0:
        out *= weight
    return out


# ================================ sparse engine: adaptive policies =====================================
#: Children (transitions) merged at once by the sparse engine; larger steps are merged in sorted runs.
MERGE_CHUNK = 1 << 23


def sparse_bytes(vocab_size: int, length: int, deterministic: bool = True) -> int:
    """Peak bytes of :func:`sparse_run` besides the cylinder table: the states that carry mass (index,
    probability, tokens, marginals and the policy's padded copy of them) and one merge chunk. A
    deterministic policy with fixed or adaptive counts reaches at most V**L states after a step (the state
    is a function of the values drawn so far); otherwise (random positions or Bernoulli counts) up to
    (V+1)**L."""
    V, L = vocab_size, length
    states = V**L if deterministic else (V + 1) ** L
    return 8 * states * (2 * L * V + L + 4) + 16 * MERGE_CHUNK


def check_sparse_size(vocab_size: int, length: int, deterministic: bool, max_bytes: float | None) -> None:
    """Raise ValueError (with the memory it would need and the engine that scales) if too large."""
    check_size(
        sparse_bytes(vocab_size, length, deterministic),
        f"exact_law's sparse engine (V = {vocab_size}, L = {length})",
        max_bytes,
        SCALABLE_HINT + " (theory.sampling.sample)",
    )


def merge_sorted(idx: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``prob`` over equal ``idx`` (int64): (sorted unique indices, summed probabilities), exact zeros
    dropped. A stable sort then a segment sum (``np.add.reduceat``), no dense index space."""
    if idx.size == 0:
        return idx, prob
    order = np.argsort(idx, kind="stable")
    si, sp = idx[order], prob[order]
    start = np.concatenate([[True], si[1:] != si[:-1]])  # first of each run
    heads = np.nonzero(start)[0]
    out_i, out_p = si[heads], np.add.reduceat(sp, heads)
    keep = out_p != 0
    return out_i[keep], out_p[keep]


def sparse_run(denoiser, policy, plan, values: str = "independent", cyl=None, callback=None):
    """The exact law of any policy by sparse layers of the states that carry mass.

    The same process and arithmetic as :func:`theory.sampling.exact_law`'s frontier engine (the policy's
    ``reveal_distribution`` on the denoiser's marginals of every state, then the revealed tokens' values),
    but the states after a step are kept as sorted int64 indices into (V+1)**L with their probabilities,
    and children are merged by a sort and a segment sum (:func:`merge_sorted`), never on a dense
    (V+1)**L array. A deterministic policy (Top-k, EB, any :class:`~theory.policies.ScorePolicy`) reaches
    at most V**K states with K tokens revealed, so at V = 2 the memory is the cylinder table plus O(2**L).
    ``plan`` is a :class:`theory.sampling.Plan`; ``cyl`` q's cylinder table for ``values="joint"``;
    ``callback`` as in :func:`theory.sampling.exact_law`. Returns a :class:`LayeredResult`.
    """
    from .sampling import (  # the frontier engine's step (one definition)
        _fill,
        _step_rows,
        batched_marginals,
        check_step_budget,
    )

    V, L = denoiser.vocab_size, denoiser.length
    st = strides(V + 1, L)
    idx = np.array([V * st.sum()], dtype=np.int64)  # all-mask state
    prob = np.ones(1)
    nfe, n = 0.0, 0
    while True:
        states = (idx[:, None] // st) % (V + 1)  # (K, L)
        if not (states == V).any():
            break
        check_step_budget(plan, n, policy)
        marg = batched_marginals(denoiser, states)  # (K, L, V)
        parent, subsets, weights = _step_rows(policy, plan, n, states, marg)
        subsets = subsets & (states[parent] == V)
        if callback is not None:
            callback(n, states, prob, marg, parent, subsets, weights)
        nfe += float(np.sum(prob[parent] * weights * subsets.any(1)))
        runs: list = []
        pending_i: list = []
        pending_p: list = []
        size = 0
        for ci, cw in _fill(idx, prob, marg, parent, subsets, weights, V, L, values, cyl):
            pending_i.append(ci)
            pending_p.append(cw)
            size += ci.size
            if size >= MERGE_CHUNK:  # merge what we have: memory stays O(states + MERGE_CHUNK)
                runs.append(merge_sorted(np.concatenate(pending_i), np.concatenate(pending_p)))
                pending_i, pending_p, size = [], [], 0
        if pending_i:
            runs.append(merge_sorted(np.concatenate(pending_i), np.concatenate(pending_p)))
        del states, marg, parent, subsets, weights
        if len(runs) == 1:
            idx, prob = runs[0]
        else:
            idx, prob = merge_sorted(np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs]))
        n += 1
    toks = (idx[:, None] // st) % (V + 1)
    seq_idx = toks @ (V ** np.arange(L - 1, -1, -1, dtype=np.int64))
    out = np.zeros(V**L)
    np.add.at(out, seq_idx, prob)
    return LayeredResult(out, nfe, n)


# ================================ lifted engine: Bernoulli reveal, RandomOrder ==========================
#: Largest lifted state (bytes) :func:`theory.sampling.exact_law` uses before falling back to the layers.
LIFTED_MAX_BYTES = 4 * 2**30
#: Elements per block of the lifted engine's row chunks and column blocks (8 MiB of float64).
LIFTED_BLOCK = 1 << 20


def use_lifted(vocab_size: int, length: int, order, reveal: str, max_bytes: float | None = None) -> bool:
    """Whether :func:`layered_run` takes the lifted engine: RandomOrder, Bernoulli reveal, and the lifted
    state (plus the cylinder table) within :data:`LIFTED_MAX_BYTES` (4 GiB: V = 2 up to L = 14) and within
    ``max_bytes`` if given; otherwise the layers, which need less memory and more time."""
    if reveal != "bernoulli" or not isinstance(order, str):
        return False
    need = 8 * (vocab_size + 1) ** length + lifted_bytes(vocab_size, length)
    return need <= LIFTED_MAX_BYTES and (max_bytes is None or need <= max_bytes)


def lifted_bytes(vocab_size: int, length: int) -> int:
    """Peak bytes of :func:`lifted_run` besides the cylinder table: the lifted state, (2V)**L float64, plus
    its blocks (index tables, products, the thinning buffer)."""
    return 8 * (2 * vocab_size) ** length + 8 * 8 * LIFTED_BLOCK


def _sep_index(V: int, L: int, weights: np.ndarray, offsets=None) -> np.ndarray:
    """offsets[r] + sum_i weights[r, i] * digit_i(x) for every x in V**L (row-major digits), (R, V**L) int64:
    the first L // 2 digits and the rest as two short tables and one broadcast add."""
    R = weights.shape[0]
    h = L // 2
    hi = weights[:, :h] @ _digits(V, h).T  # (R, V**h)
    if offsets is not None:
        hi += offsets[:, None]
    lo = weights[:, h:] @ _digits(V, L - h).T  # (R, V**(L-h))
    return (hi[:, :, None] + lo[:, None, :]).reshape(R, V**L)


def _parallel(fn, items: list, threads: int | None) -> None:
    """fn(item) for every item, on up to :func:`_threads` worker threads (numpy releases the GIL); the items
    must write disjoint memory, so the result does not depend on the number of threads."""
    nthreads = min(_threads(threads), len(items))
    if nthreads <= 1:
        for it in items:
            fn(it)
    else:
        with ThreadPoolExecutor(nthreads) as ex:
            list(ex.map(fn, items))


def _complete(R, scale, pre: float, cyl, qprobs, V: int, L: int, K: int, values: str, threads=None) -> None:
    """Replace every row U (|U| = K, carrying mass) of the lifted state by its completion, in place:
    Q[U, x] = P_U(x_U) * prod_{i not in U} c_i(x_i | x_U)   (values="independent")
    Q[U, x] = P_U(x_U) * q(x) / C[x_U]                        (values="joint"),
    P_U(x_U) = scale[U] * sum over the latent values x_F of R[U, x] (the row's probabilities are
    scale[U] * R[U]); the completed row is stored times ``pre`` (p**-K before the subset sums, or 1).
    The caller resets ``scale`` to 1 after the completions."""
    sets = _combos(L, K)  # (M, K)
    rows: np.ndarray = np.asarray(
        np.sum(np.left_shift(np.int64(1), L - 1 - sets), axis=1, dtype=np.int64)
    )  # bit of position i: 2**(L-1-i)
    live = np.array([m for m in range(len(rows)) if R[rows[m]].any()], dtype=np.int64)  # rows carrying mass
    A, AF, AL = V**K, V ** (L - K), V**L
    posw = V ** np.arange(L - 1, -1, -1, dtype=np.int64)  # weight of position i in a row-major value index
    nr = max(1, LIFTED_BLOCK // AL)
    flat = R.reshape(-1)

    def chunk(c0: int) -> None:
        m = live[c0 : c0 + nr]
        S = sets[m]  # (r, K)
        r = len(m)
        free = np.ones((r, L), bool)
        free[np.arange(r)[:, None], S] = False
        F = np.nonzero(free)[1].reshape(r, L - K)  # (r, L - K)
        order = np.concatenate([F, S], axis=1)  # block digits: the free positions, then U's (r, L)
        blk2pos = _sep_index(V, L, posw[order], rows[m] * AL)  # block index -> flat index in R
        P = np.take(flat, blk2pos).reshape(r, AF, A).sum(axis=1)  # (r, A) P_U / scale
        P *= (scale[rows[m]] * pre)[:, None]
        base = _bases(V, L, S)  # (r, A)
        C_U = cyl[base]
        if values == "independent":
            cond = _conditionals(cyl, V, L, S, C_U, base)  # (r, L - K, V, A)
            G = P
            for s in range(L - K):  # free slots in order: block layout (y_F0, ..., y_F(L-K-1), a)
                G = (G.reshape(r, -1, 1, A) * cond[:, s][:, None, :, :]).reshape(r, -1, A)
            wpos = np.empty((r, L), np.int64)  # position -> its block-digit weight
            wpos[np.arange(r)[:, None], order] = V ** np.arange(L - 1, -1, -1, dtype=np.int64)[None, :]
            offs = np.arange(r, dtype=np.int64) * AL
            R[rows[m]] = np.take(G.reshape(-1), _sep_index(V, L, wpos, offs))
        else:
            wU = np.zeros((r, L), np.int64)  # position -> weight in the index of x_U
            wU[np.arange(r)[:, None], S] = V ** np.arange(K - 1, -1, -1, dtype=np.int64)[None, :]
            ok = C_U > 0
            ratio = np.where(ok, P / np.where(ok, C_U, 1.0), 0.0)  # (r, A)
            uidx = _sep_index(V, L, wU, np.arange(r, dtype=np.int64) * A)  # (r, V**L)
            R[rows[m]] = np.take(ratio.reshape(-1), uidx) * qprobs[None, :]

    _parallel(chunk, list(range(0, len(live), nr)), threads)  # disjoint rows


def _zeta(R, L: int, threads=None) -> None:
    """Subset sums over the row bits, in place: R[U'] <- sum_{U subset U'} R[U] (per position, the rows with the
    position visible += the rows with it masked), over column blocks that stay in cache."""
    rows, cols = R.shape
    w = max(1, min(cols, LIFTED_BLOCK // (8 * rows)))
    nthreads = _threads(threads)
    groups = [list(range(g * w, cols, nthreads * w)) for g in range(nthreads)]  # interleaved column blocks

    def run(starts: list) -> None:
        buf = np.empty(rows * w)
        for c0 in starts:
            ww = min(cols, c0 + w) - c0
            b = buf[: rows * ww].reshape(rows, ww)
            np.copyto(b, R[:, c0 : c0 + ww])
            for i in range(L):
                v = b.reshape(2**i, 2, -1)  # bit 2**(L-1-i) of the row index: position i visible
                v[:, 1] += v[:, 0]
            R[:, c0 : c0 + ww] = b

    _parallel(run, [g for g in groups if g], nthreads)


def _butterflies(R, p: float, L: int) -> None:
    """The thinning without rescaling (for p so small that p**-L would overflow): per position
    x_visible += p x_masked, x_masked *= 1 - p, over column blocks."""
    rows, cols = R.shape
    w = max(1, min(cols, LIFTED_BLOCK // (8 * rows)))
    buf = np.empty(rows * w)
    tmp = np.empty(rows * w // 2)
    for c0 in range(0, cols, w):
        ww = min(cols, c0 + w) - c0
        b = buf[: rows * ww].reshape(rows, ww)
        np.copyto(b, R[:, c0 : c0 + ww])
        for i in range(L):
            v = b.reshape(2**i, 2, -1)
            x0, x1 = v[:, 0], v[:, 1]
            t = tmp[: x0.size].reshape(x0.shape)
            np.multiply(x0, p, out=t)
            x1 += t
            x0 *= 1.0 - p
        R[:, c0 : c0 + ww] = b


def lifted_run(
    cyl, vocab_size: int, length: int, probs, values: str = "independent", qprobs=None, threads: int | None = None
) -> LayeredResult:
    """The exact law of RandomOrder with Bernoulli reveal (reveal probabilities ``probs`` = p_1..p_N) on the
    *lifted* state R[U, x]: the visible set U (a bit per position, 2**L rows) and a value for every position
    (V**L columns, row-major), the values of masked positions latent (the state's probability is the sum
    over them). A step is

    1. complete (:func:`_complete`): per row, P_U(x_U) = sum_{x_F} R[U, x], then
       Q[U, x] = P_U(x_U) prod_{i in F} c_i(x_i | x_U) -- every masked position's candidate drawn
       independently from the exact conditionals given the step's state (``values="joint"``: from q's
       joint conditional q(x) / C[x_U]);
    2. thin: each masked position independently revealed w.p. p_n with its candidate,
       R'[U', x] = sum_{U subset U'} p^{|U' - U|} (1 - p)^{L - |U'|} Q[U, x]
                 = p^{|U'|} (1 - p)^{L - |U'|} sum_{U subset U'} p^{-|U|} Q[U, x]:
       the completion stores p^{-|U|} Q, a subset sum over the row bits (:func:`_zeta`, one add per
       position and value) and a factor per row kept aside (``scale``, applied by the next completion).
       p_n = 1 sums the rows; p_n = 0 is skipped; a p_n with p_n**L < 1e-250 thins by butterflies.

    This is the sampler's step: Binomial(#masked, p_n) positions uniformly at random = each masked position
    independently w.p. p_n, and revealed values independent given the state (a latent candidate that stays
    masked is summed out by the next completion; the conditionals sum to 1). Cost per step: the completion,
    O((2V)**L) with two gathers, and L adds over (2V)**L values, instead of the (2V+1)**L
    (parent, reveal set, values) transitions of the layers; memory (2V)**L floats (2 GiB at V = 2, L = 14).
    ``qprobs``: q's table over V**L (numpy), needed for ``values="joint"``; ``threads`` as in
    :func:`layered_law` (the result does not depend on it).
    """
    V, L = int(vocab_size), int(length)
    cyl = np.asarray(cyl)
    if values == "joint":
        if qprobs is None:
            raise ValueError("values='joint' needs q's table (qprobs).")
        qprobs = np.asarray(qprobs)
    R = np.zeros((2**L, V**L))
    R[0, 0] = 1.0  # all masked (row 0: no visible position), latent values 0
    scale = np.ones(2**L)  # probabilities of row U: scale[U] * R[U]
    full = 2**L - 1
    K_of = np.array([bin(u).count("1") for u in range(2**L)])
    nfe, n = 0.0, 0
    for value in probs:
        p = float(value)
        mass = R.sum(axis=1) * scale  # (2**L,)
        if not np.any(mass[:full] > 0):
            break
        n += 1
        if p == 0.0:
            continue
        nfe += float(np.sum(mass[:full] * (1.0 - (1.0 - p) ** (L - K_of[:full]))))
        zeta = p < 1.0 and p**L >= 1e-250  # thin by subset sums of p**-|U| Q (else p = 1 or butterflies)
        for K in range(L):
            if np.any(mass[K_of == K] > 0):
                _complete(R, scale, p**-K if zeta else 1.0, cyl, qprobs, V, L, K, values, threads)
        R[full] *= scale[full] * (p**-L if zeta else 1.0)
        scale[:] = 1.0
        if p == 1.0:  # every masked position revealed: all rows into the full one
            R[full] = R.sum(axis=0)
            R[:full] = 0.0
        elif zeta and not np.any(mass[1:] > 0):  # only the all-mask row: its subset sums are copies of it
            R[1:] = R[0]
            scale = p ** K_of.astype(float) * (1.0 - p) ** (L - K_of).astype(float)
        elif zeta:
            _zeta(R, L, threads)
            scale = p ** K_of.astype(float) * (1.0 - p) ** (L - K_of).astype(float)
        else:
            _butterflies(R, p, L)
    if np.any(R[:full].sum(axis=1) * scale[:full] > 0):
        raise RuntimeError("plan ended with masked tokens left (Bernoulli: p_N = 1).")
    return LayeredResult(R[full] * scale[full], nfe, n)
