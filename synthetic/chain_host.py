"""Host kernel for the Markov oracle's ranked sampler step (optional: used only where numba is installed).

One call scores every masked position of a batch of partial states and returns each row's K lowest scores,
exactly sorted by (score, position): what the ranked Monte-Carlo path (:func:`theory.sampling._run_ranked`)
otherwise does with the oracle's ``scores`` face (several passes over (B, L) planes) and two float32
``lax.top_k`` passes. The scores are the face's bits (:meth:`synthetic.chain_oracle.MarkovDenoiser.scores`):
the same products P^{i-a}[x_a, v] P^{b-i}[v, x_b], summed left to right, one reciprocal, the same proxy
arithmetic and the same ``log`` (XLA:CPU's float64 log is the C library's); the tests check them bit for
bit, and the sampler's tokens against the general path. Why it is cheaper than the face:

- only masked positions are scored (the face computes all L), row by row, in cache;
- a score is a function of the contents of its two factor rows only, and the factor tables repeat
  themselves: once P^d has converged in float64, P^d[a, :] is the same row for every larger d (a chain
  drawn from Dirichlet(1) at V = 8, L = 1024 has 303 distinct left rows of 9224 and 289 right rows of 8201).
  :func:`rank_tables` scores every pair of distinct rows once per run (up to :data:`TABLE_ROWS` of each, the
  nearest first) and a position then costs one lookup; the other positions are computed as the face does;
- the K lowest come from one pass with a running threshold, not from two ``lax.top_k`` passes.

Rows run in parallel on the CPU cores (:data:`THREADS` threads; the kernel releases the GIL). Compiled on
first use (~3 s, cached on disk by numba). Nothing here runs unless numba is importable (:func:`available`).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

try:  # optional accelerator: everything has a pure-JAX path with the same results
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]

#: proxy name -> the kernel's code
PROXY_CODES = {"confidence": 0, "margin": 1, "entropy": 2}
#: the face's limit: V <= 16 (above that the face goes through the marginals)
MAX_VOCAB = 16
#: at most this many distinct rows of each factor table get a slot in the score table (<= 2**20 entries)
TABLE_ROWS = 1024


def available() -> bool:
    """Whether numba is importable (then :func:`rank_step` runs; else the sampler keeps the JAX face)."""
    return numba is not None


def _uniform_score(V, proxy):
    """The face's score of uniform conditionals (an impossible row, or a zero normaliser)."""
    u = 1.0 / V
    if proxy == 0:
        return -u
    if proxy == 1:
        return -(u - u)
    h = u * np.log(u)
    for _ in range(1, V):
        h = h + u * np.log(u)
    return -h


def _fill_table(lrows, rrows, lflat, rflat, V, proxy, table):
    """``table[a, b]``: the face's score of a position of a possible row whose factor rows are ``lrows[a]`` and
    ``rrows[b]``, one left row at a time by :func:`_planes` (the kernel's one spelling of the face)."""
    R = rrows.shape[0]
    la = np.empty(R, np.int64)
    ra = rrows * V
    slot = np.arange(R)
    num = np.empty((V, R))
    den = np.empty(R)
    aux = np.empty(R)
    for a in range(lrows.shape[0]):
        la[:] = lrows[a] * V
        _planes(la, ra, R, True, lflat, rflat, V, proxy, num, den, aux, table[a], slot)


def _row_pass(row, V, L, lflat, check, rrow):
    """Backward pass over one row: ``rrow[i]`` = (b - i) V + x_b (nearest visible b > i; (L + 1) V if none, as
    ``chain_oracle._row_offsets``). Returns the face's possibility flag: every visible token has positive
    probability given its nearest visible left neighbour's factor row (or its marginal)."""
    b = -1
    for i in range(L - 1, -1, -1):
        rrow[i] = (b - i) * V + row[b] if b >= 0 else (L + 1) * V
        if row[i] != V:
            b = i
    if check:
        a = -1
        for i in range(L):
            x = row[i]
            if x != V:
                lr = (i - a) * V + row[a] if a >= 0 else (L + 1) * V + i
                if not (lflat[lr * V + x] > 0):
                    return False
                a = i
    return True


def _insert(bs, bp, k, s, p):
    """Put (s, p) into the sorted ``bs[:k + 1]`` / ``bp`` (slot k is free), after every kept score <= s."""
    while k > 0 and s < bs[k - 1]:
        bs[k] = bs[k - 1]
        bp[k] = bp[k - 1]
        k -= 1
    bs[k] = s
    bp[k] = p


def _lowest(srow, idx, n, K, bs, bp):
    """The K lowest (srow[j], idx[j]) for j < n (idx increasing) into ``bs`` / ``bp``, sorted; a tie with a kept
    score goes after it ("ties by position"). Returns how many were kept (min(n, K))."""
    m = min(n, K)
    for j in range(m):
        _insert(bs, bp, j, srow[j], idx[j])
    if m < K:
        return m
    thr = bs[K - 1]
    for j in range(K, n):
        if srow[j] < thr:  # the K-th kept drops out
            _insert(bs, bp, K - 1, srow[j], idx[j])
            thr = bs[K - 1]
    return K


def _rank_rows(states, b0, b1, lflat, rflat, V, check, proxy, K, table, lmap, rmap, cpos, cscore, full):
    """Rows b0..b1-1 of :func:`rank_step` (compiled without the GIL: threads take disjoint row ranges); with
    ``full`` of shape (B, L) (else (0, 0)), also every position's score there (+inf where visible)."""
    L = states.shape[1]
    if b1 > b0:  # work buffers once per call
        rrow = np.empty(L, np.int64)
        idx = np.empty(L, np.int64)
        acc = np.empty(L)
        slot = np.empty(L, np.int64)
        la = np.empty(L, np.int64)
        ra = np.empty(L, np.int64)
        num = np.empty((V, L))
        den = np.empty(L)
        aux = np.empty(L)
        bs = np.empty(K)
        bp = np.empty(K, np.int64)
        for b in range(b0, b1):
            row = states[b]
            ok = _row_pass(row, V, L, lflat, check, rrow)
            n = 0  # masked positions, in order
            m = 0  # those whose pair of factor rows has no table entry
            a = -1
            for i in range(L):
                if row[i] != V:
                    a = i
                    continue
                lr = (i - a) * V + row[a] if a >= 0 else (L + 1) * V + i
                rr = rrow[i]
                idx[n] = i
                tl, tr = lmap[lr], rmap[rr]
                if ok and tl >= 0 and tr >= 0:
                    acc[n] = table[tl, tr]
                else:
                    slot[m] = n
                    la[m] = lr * V
                    ra[m] = rr * V
                    m += 1
                n += 1
            if m > 0:
                _planes(la, ra, m, ok, lflat, rflat, V, proxy, num, den, aux, acc, slot)
            if full.shape[0] > 0:
                full[b, :] = np.inf
                for j in range(n):
                    full[b, idx[j]] = acc[j]
            k = _lowest(acc, idx, n, K, bs, bp)
            for j in range(k):
                cpos[b, j] = bp[j]
                cscore[b, j] = bs[j]
            i = 0  # fewer than K masked: then the visible positions (score +inf) by position, as a full sort
            for j in range(k, K):
                while row[i] == V:
                    i += 1
                cpos[b, j] = i
                cscore[b, j] = np.inf
                i += 1


def _planes(la, ra, m, ok, lflat, rflat, V, proxy, num, den, aux, acc, slot):
    """The face's scores of m positions (factor rows at ``la`` / ``ra``) into ``acc[slot[j]]``, plane by plane
    (loops over positions, which the compiler vectorises), operation for operation as
    ``chain_oracle._scores_impl`` + ``theory.policies.planes_score``: the V products, their left-to-right
    sum, one reciprocal, the normalised values, the proxy."""
    for j in range(m):
        t = lflat[la[j]] * rflat[ra[j]]
        num[0, j] = t
        den[j] = t
    for v in range(1, V):
        for j in range(m):
            t = lflat[la[j] + v] * rflat[ra[j] + v]
            num[v, j] = t
            den[j] = den[j] + t
    good_all = True
    for j in range(m):
        good = ok and den[j] > 0
        good_all = good_all and good
        den[j] = 1.0 / den[j] if good else np.nan
    if proxy == 0:
        for j in range(m):
            aux[j] = num[0, j] * den[j]
        for v in range(1, V):
            for j in range(m):
                aux[j] = max(aux[j], num[v, j] * den[j])
        for j in range(m):
            aux[j] = -aux[j]
    elif proxy == 1:
        for j in range(m):
            num[0, j] = num[0, j] * den[j]  # top
            aux[j] = -np.inf  # second
        for v in range(1, V):
            for j in range(m):
                p = num[v, j] * den[j]
                aux[j] = max(aux[j], min(num[0, j], p))
                num[0, j] = max(num[0, j], p)
        for j in range(m):
            aux[j] = -(num[0, j] - aux[j])
    else:
        for j in range(m):
            p = num[0, j] * den[j]
            aux[j] = p * np.log(p) if p > 0 else 0.0
        for v in range(1, V):
            for j in range(m):
                p = num[v, j] * den[j]
                aux[j] = aux[j] + (p * np.log(p) if p > 0 else 0.0)
        for j in range(m):
            aux[j] = -aux[j]
    for j in range(m):
        acc[slot[j]] = aux[j]
    if not good_all:  # uniform conditionals where the row is impossible or the normaliser is zero
        u = _uniform_score(V, proxy)
        for j in range(m):
            if not (ok and den[j] == den[j]):
                acc[slot[j]] = u


if numba is not None:
    _uniform_score = numba.njit(cache=True, error_model="numpy")(_uniform_score)
    _fill_table = numba.njit(cache=True, error_model="numpy", nogil=True)(_fill_table)
    _row_pass = numba.njit(cache=True, error_model="numpy")(_row_pass)
    _insert = numba.njit(cache=True, error_model="numpy")(_insert)
    _lowest = numba.njit(cache=True, error_model="numpy")(_lowest)
    _planes = numba.njit(cache=True, error_model="numpy")(_planes)
    _rank_rows = numba.njit(cache=True, error_model="numpy", nogil=True)(_rank_rows)


def _check(proxy):
    if numba is None:
        raise RuntimeError("synthetic.chain_host needs numba (pip install numba); the sampler uses the JAX face.")
    if proxy not in PROXY_CODES:
        raise ValueError(f"unknown proxy {proxy!r}; choose one of {tuple(PROXY_CODES)}.")


def _distinct_rows(rows, limit: int):
    """(keep (R',) row indices: the first occurrence of each distinct row, at most ``limit``, in order of
    first occurrence; map (R,) int32: each row's slot in ``keep``, -1 if its content has none)."""
    R, V = rows.shape
    _, first, inverse = np.unique(
        np.ascontiguousarray(rows).view(np.dtype((np.void, 8 * V))).ravel(), return_index=True, return_inverse=True
    )
    order = np.argsort(first, kind="stable")[:limit]  # distinct contents by first occurrence (nearest d first)
    slot = np.full(first.size, -1, np.int32)
    slot[order] = np.arange(order.size, dtype=np.int32)
    return first[order].astype(np.int64), slot[inverse.ravel()]


def rank_tables(left, right, proxy: str):
    """The score of every pair of distinct factor rows (the first :data:`TABLE_ROWS` of each table):
    (table (R_l', R_r') float64, lmap (R_l,) int32, rmap (R_r,) int32). A masked position of a possible row
    whose left factor row is ``r`` and right factor row is ``s`` scores ``table[lmap[r], rmap[s]]`` when both
    are >= 0 (the face's bits: the same operations on the same values). Once per sampler call."""
    _check(proxy)
    left = np.ascontiguousarray(left, np.float64)
    right = np.ascontiguousarray(right, np.float64)
    V = left.shape[-1]
    lkeep, lmap = _distinct_rows(left, TABLE_ROWS)
    rkeep, rmap = _distinct_rows(right, TABLE_ROWS)
    table = np.empty((lkeep.size, rkeep.size))
    _fill_table(lkeep, rkeep, left.reshape(-1), right.reshape(-1), V, PROXY_CODES[proxy], table)
    return table, lmap, rmap


#: open sessions (:func:`session`): key -> (left, right, proxy, tables)
_SESSIONS: dict = {}
_KEYS = itertools.count(1)


@contextmanager
def session(left, right, proxy: str):
    """Register an oracle's factor tables and their :func:`rank_tables` for ``proxy`` on the host for the
    duration of a sampler call; yields the int key that :func:`session_step` takes. The jitted loop then
    passes only the states and this key to each host call (XLA copies every operand of a host call)."""
    _check(proxy)
    left = np.ascontiguousarray(left, np.float64)
    right = np.ascontiguousarray(right, np.float64)
    tables = tuple(np.ascontiguousarray(t) for t in rank_tables(left, right, proxy))
    key = next(_KEYS)
    _SESSIONS[key] = (left, right, proxy, tables)
    try:
        yield key
    finally:
        _SESSIONS.pop(key, None)


def session_step(states, key, check: bool, K: int, full: bool = False):
    """:func:`rank_step` with the tables of the open :func:`session` ``key``."""
    try:
        left, right, proxy, tables = _SESSIONS[int(key)]
    except KeyError:
        raise RuntimeError(f"no open chain_host session {int(key)}: call inside `with session(...)`.") from None
    return rank_step(states, left, right, check, proxy, K, tables, full)


def rank_step(states, left, right, check: bool, proxy: str, K: int, tables=None, full: bool = False):
    """Each row's K lowest positions by (score, position) and their scores: (cpos (B, K) int32, cscore (B, K)
    float64), the visible positions counting as +inf (the ranked path's order over all L positions).

    ``states`` (B, L) int32 (mask id V). The scores are the oracle's ``scores(states, proxy)`` bit for bit.
    ``left`` / ``right``: the oracle's factor tables; ``check``: the oracle checks possibility (``not
    positive``); 1 <= ``K`` <= L; ``tables``: :func:`rank_tables` of the same factor tables and proxy (built
    here if None). ``full``: also return every position's score, (B, L) float64, +inf where visible (the
    sampler's full-sort fallback step).
    """
    _check(proxy)
    states = np.ascontiguousarray(states, np.int32)
    B, L = states.shape
    if not 1 <= K <= L:
        raise ValueError(f"K must be in 1..L = {L}, got {K}.")
    left = np.ascontiguousarray(left, np.float64)
    right = np.ascontiguousarray(right, np.float64)
    V = left.shape[-1]
    if left.shape != ((L + 1) * V + L, V) or right.shape != ((L + 1) * V + 1, V):
        raise ValueError(
            f"factor tables of shapes {left.shape} and {right.shape} do not fit states of length {L}: a Markov "
            f"oracle's are ({(L + 1) * V + L}, {V}) and ({(L + 1) * V + 1}, {V}) (MarkovChain.denoiser())."
        )
    if states.size and (states.min() < 0 or states.max() > V):
        raise ValueError(f"states must hold tokens 0..{V - 1} or the mask id {V}; got values in "
                         f"{states.min()}..{states.max()}.")  # fmt: skip
    table, lmap, rmap = rank_tables(left, right, proxy) if tables is None else tables
    cpos = np.empty((B, K), np.int32)
    cscore = np.empty((B, K), np.float64)
    scores = np.empty((B, L) if full else (0, 0), np.float64)
    args = (
        left.reshape(-1), right.reshape(-1), V, bool(check), PROXY_CODES[proxy], int(K),
        np.ascontiguousarray(table, np.float64), np.ascontiguousarray(lmap, np.int32),
        np.ascontiguousarray(rmap, np.int32), cpos, cscore, scores,
    )  # fmt: skip
    bounds = np.linspace(0, B, min(B, THREADS) + 1).astype(int)
    if bounds.size <= 2:
        _rank_rows(states, 0, B, *args)
    else:  # the kernel releases the GIL: one thread per row range
        list(_pool().map(lambda i: _rank_rows(states, bounds[i], bounds[i + 1], *args), range(bounds.size - 1)))
    return (cpos, cscore, scores) if full else (cpos, cscore)


#: threads per call of :func:`rank_step` (rows split evenly); the CPU count by default
THREADS = os.cpu_count() or 1
_POOL: list = []


def _pool():
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="chain_host"))
    return _POOL[0]
