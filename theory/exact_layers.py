"""The exact law of value-blind policies (fixed counts or Bernoulli reveal) as a dynamic programme over layers.

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
without its materialised transitions and dense merge.
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
    vocab_size: int, length: int, plan_values, order="random", values: str = "independent", reveal: str = "fixed"
) -> int:
    """Peak bytes of :func:`layered_run`: the cylinder table, the layers, and the largest step's conditionals,
    index tables and child layer. Bernoulli reveal keeps every layer (all (V+1)**L states) twice."""
    V, L = vocab_size, length
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
        layered_bytes(vocab_size, length, plan_values, order, values, reveal),
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
) -> LayeredResult:
    """The layered law with fixed counts (``plan_values`` = k_1..k_N) or Bernoulli reveal (``plan_values`` =
    p_1..p_N, the count of a step Binomial(#masked, p_n), then the policy's first / uniformly random
    positions). With Bernoulli reveal a step maps every layer K to every K + k with weight
    Binomial(k; L - K, p_n): the layers together cover (V+1)**L states and a step costs up to (2V+1)**L
    transitions. NFE counts the steps that reveal >= 1 token; ``steps_run`` the steps until no mask is left.
    """
    V, L = int(vocab_size), int(length)
    if reveal not in ("fixed", "bernoulli"):
        raise ValueError(f"reveal must be 'fixed' or 'bernoulli', got {reveal!r}.")
    cyl = np.asarray(cyl)
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
    from .sampling import _fill, _step_rows, batched_marginals  # the frontier engine's step (one definition)

    V, L = denoiser.vocab_size, denoiser.length
    st = strides(V + 1, L)
    idx = np.array([V * st.sum()], dtype=np.int64)  # all-mask state
    prob = np.ones(1)
    nfe, n = 0.0, 0
    while True:
        states = (idx[:, None] // st) % (V + 1)  # (K, L)
        if not (states == V).any():
            break
        if n >= plan.max_steps:
            if plan.mode == "adaptive":
                raise RuntimeError(
                    f"{type(policy).__name__} did not finish in {plan.max_steps} steps: an adaptive policy must "
                    "reveal >= 1 token per step."
                )
            raise RuntimeError("plan ended with masked tokens left (counts must sum to L).")  # pragma: no cover
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
