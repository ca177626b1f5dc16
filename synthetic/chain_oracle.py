"""Exact conditionals of a first-order Markov chain at any length L (the Markov oracle).

For ``MarkovChain(init (V,), trans (V, V), length)`` (:mod:`synthetic.languages`), with the matrix powers
P^d (d = 0..L) and the marginals m_i = init P^i precomputed, a masked position i with nearest visible
neighbours a < i < b has

    q(x_i = v | z) ∝ P^{i-a}[x_a, v] P^{b-i}[v, x_b]

(m_i[v] in place of the first factor when there is no visible token on the left, 1 in place of the
second when there is none on the right). The neighbours come from bit tricks on the visibility mask
packed into 32-bit words (no loop over positions), so a whole batch is O(B L V), fully parallel;
``marginals_at(states, positions)`` gives the conditionals at K positions only, in O(B (L/32 + K V))
plus one packing pass — what the core sampler's fast path asks for; its incremental face
(``init_cache`` / ``marginals_at_cached`` / ``update_cache``, see :mod:`theory.denoiser`) keeps the packed
mask and the possibility flag between the sampler's steps, so a step costs O(B (K V + L/32)) and never
passes over L. Whether the visible tokens are
possible at all (else: uniform, the convention of :mod:`theory.denoiser`) needs one O(B L) pass,
skipped for chains with all-positive init and transitions (``positive``).

Nothing here enumerates V**L. Used through ``MarkovChain.denoiser()`` and ``MarkovChain.log_marginal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from theory.policies import planes_score, proxy_score
from theory.pytree import register_dataclass
from theory.reductions import UNROLLED, sum_last, sum_terms
from theory.validation import as_f64, check_size


def safe_log(p):
    """log p with log 0 = -inf and no NaN gradient path (jax.numpy)."""
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


def matrix_powers(trans: np.ndarray, length: int) -> np.ndarray:
    """P^d for d = 0..length, shape (length + 1, V, V) (numpy float64, sequential products)."""
    V = trans.shape[0]
    out = np.empty((length + 1, V, V))
    out[0] = np.eye(V)
    for d in range(1, length + 1):
        out[d] = out[d - 1] @ trans
    return out


def position_marginals(init: np.ndarray, trans: np.ndarray, length: int) -> np.ndarray:
    """m_i = init P^i for i = 0..length-1, shape (length, V)."""
    out = np.empty((length, init.shape[0]))
    out[0] = init
    for i in range(1, length):
        out[i] = out[i - 1] @ trans
    return out


@register_dataclass(data_fields=("left", "right"))
@dataclass(frozen=True, eq=False)
class MarkovDenoiser:
    """Exact conditionals of a first-order Markov chain (see module docstring).

    ``marginals`` costs O(B L V); ``marginals_at`` (K positions) O(B (L + K V)) with a small constant.

    ``left`` (R_l, V): rows P^d[a, :] at row d*V + a, then the marginals m_i at row (L+1)*V + i.
    ``right`` (R_r, V): rows P^d[:, b] at row d*V + b, then a row of ones (no right neighbour).
    """

    vocab_size: int
    length: int
    left: jax.Array
    right: jax.Array
    positive: bool = False  # init > 0 and trans > 0 entrywise: every state is possible, skip that check
    #: marginals_at gives the rows of marginals bit for bit in any program (the same code; sums in a fixed order)
    exact_marginals_at = True

    def marginals(self, states) -> jax.Array:
        return _markov_marginals_jit(self.left, self.right, jnp.asarray(states), self.vocab_size, not self.positive)

    def marginals_at(self, states, positions) -> jax.Array:
        """Conditionals at ``positions`` (B, K) only -> (B, K, V); O(B K V) plus O(B L) integer work."""
        return _markov_marginals_at_jit(
            self.left, self.right, jnp.asarray(states), jnp.asarray(positions), self.vocab_size, not self.positive
        )

    def scores(self, states, proxy: str) -> jax.Array:
        """``theory.policies.proxy_score`` of the conditionals at every position, (B, L), bit for bit
        ``proxy_score(self.marginals(states), proxy)`` without storing the (B, L, V) marginals: the V values of
        a position are computed, normalised and scored in one pass (the sampler's ranked path, Top-k / EB)."""
        return _scores_jit(self.left, self.right, jnp.asarray(states), proxy, self.vocab_size, not self.positive)

    @property
    def has_rank_step(self) -> bool:
        """Whether :meth:`rank_step` runs here: numba is installed (:mod:`synthetic.chain_host`) and V <= 16."""
        from . import chain_host

        return chain_host.available() and self.vocab_size <= chain_host.MAX_VOCAB

    def rank_session(self, proxy: str):
        """Context manager of the ranked face (:mod:`theory.denoiser`): registers this (concrete) oracle's
        factor tables and :func:`synthetic.chain_host.rank_tables` on the host and yields the int key that
        :meth:`rank_step` takes, for the duration of a sampler call."""
        from .chain_host import session

        return session(np.asarray(self.left), np.asarray(self.right), proxy)

    def rank_step(self, states, proxy: str, K: int, key, full: bool = False):
        """The ranked face (:mod:`theory.denoiser`): each row's K lowest positions by (score, position) and
        their scores, (cpos (B, K) int32, cscore (B, K) float64), the scores ``scores(states, proxy)`` bit for
        bit and +inf at visible positions. One host call per batch (``jax.pure_callback`` into
        :func:`synthetic.chain_host.session_step`, numba), inside ``with self.rank_session(proxy) as key``.
        ``full``: also every position's score (B, L) (+inf where visible; the sampler's full-sort fallback).
        Only :attr:`has_rank_step` oracles have it."""
        B, L = states.shape
        shapes: tuple = (jax.ShapeDtypeStruct((B, K), jnp.int32), jax.ShapeDtypeStruct((B, K), jnp.float64))
        if full:
            shapes += (jax.ShapeDtypeStruct((B, L), jnp.float64),)
        cb = partial(_host_rank, check=not self.positive, K=int(K), full=bool(full))
        return jax.pure_callback(cb, shapes, states.astype(jnp.int32), key)

    # the incremental face (theory.denoiser): what the sampler's static-order path carries between steps
    def init_cache(self, states):
        """(packed visibility words (B, ceil(L/32)) uint32, possible (B,) bool) of partial states (B, L)."""
        return _init_cache_jit(self.left, jnp.asarray(states), self.vocab_size, not self.positive)

    def marginals_at_cached(self, cache, states, positions) -> jax.Array:
        """``marginals_at(states, positions)`` from the cache of ``states``: O(B (K V + L/32)), no pass over L."""
        return _marginals_at_cached_jit(
            self.left, self.right, cache, jnp.asarray(states), jnp.asarray(positions), self.vocab_size
        )

    def update_cache(self, cache, states, positions, valid):
        """The cache of ``states``, reached from the cached state by revealing ``positions[valid]`` (B, K)."""
        return _update_cache_jit(
            self.left, cache, jnp.asarray(states), jnp.asarray(positions), jnp.asarray(valid), self.vocab_size,
            not self.positive,
        )  # fmt: skip


def _host_rank(states, key, *, check, K, full):
    from .chain_host import session_step

    return session_step(np.asarray(states), key, check, K, full)


def _left_neighbours_t(vt):
    """Nearest visible position strictly before each position, transposed layout: (L, B) bool ->
    (L, B) int32, -1 if none. ``associative_scan`` over the leading axis (XLA's CPU ``cummax`` is
    quadratic in L, and scanning the minor axis is several times slower)."""
    L, B = vt.shape
    pos = jnp.arange(L, dtype=jnp.int32)[:, None]
    le = jax.lax.associative_scan(jnp.maximum, jnp.where(vt, pos, -1), axis=0)  # at or before i
    return jnp.concatenate([jnp.full((1, B), -1, jnp.int32), le[:-1]], axis=0)


def pack_visibility(vis):
    """The visibility mask (B, L) bool packed into 32-bit words (B, ceil(L / 32)) uint32: bit j of word w is
    position 32 w + j. One pass over L."""
    B, L = vis.shape
    W = -(-L // 32)
    v = jnp.pad(vis, ((0, 0), (0, 32 * W - L))).reshape(B, W, 32).astype(jnp.uint32)
    return jnp.sum(v << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def _query_neighbours(vis, positions):
    """Nearest visible position strictly left / right of each query, by bit tricks.

    ``vis`` (B, L) bool, ``positions`` (B, K) -> (B, K) int32 each, -1 / L where there is none. The
    visibility mask is packed into 32-bit words (one pass over L, :func:`pack_visibility`), then
    :func:`_neighbours_from_words`. Cost O(L/32 + K) per row after packing, instead of a scan over all L
    positions.
    """
    return _neighbours_from_words(pack_visibility(vis), positions, vis.shape[1])


def _neighbours_from_words(words, positions, L: int):
    """:func:`_query_neighbours` from the packed mask ``words`` (B, W) uint32 (:func:`pack_visibility`): the
    nearest non-empty word before / after each word is a scan over the W words, and each query is then
    O(1) (count-leading-zeros within a word)."""
    B, W = words.shape
    nz = words != 0
    widx = jnp.arange(W, dtype=jnp.int32)[None, :]
    prev_nz = jax.lax.associative_scan(jnp.maximum, jnp.where(nz, widx, -1), axis=1)  # last non-empty word <= w
    next_nz = jax.lax.associative_scan(jnp.minimum, jnp.where(nz, widx, W), axis=1, reverse=True)  # first >= w
    prev_nz = jnp.concatenate([jnp.full((B, 1), -1, jnp.int32), prev_nz[:, :-1]], axis=1)  # strictly before w
    next_nz = jnp.concatenate([next_nz[:, 1:], jnp.full((B, 1), W, jnp.int32)], axis=1)  # strictly after w
    p = positions.astype(jnp.int32)
    w = p >> 5
    bit = (p & 31).astype(jnp.uint32)
    word = jnp.take_along_axis(words, w, axis=1)  # (B, K)
    one = jnp.uint32(1)

    def highest(x):  # index of the highest set bit (x != 0)
        return 31 - jax.lax.clz(x).astype(jnp.int32)

    def lowest(x):  # index of the lowest set bit (x != 0)
        return highest(x & (~x + one))

    below = word & ((one << bit) - one)
    wl = jnp.take_along_axis(prev_nz, w, axis=1)
    wl_word = jnp.take_along_axis(words, jnp.maximum(wl, 0), axis=1)
    a = jnp.where(below != 0, (w << 5) + highest(below), jnp.where(wl >= 0, (wl << 5) + highest(wl_word), -1))
    above = word & (jnp.uint32(0xFFFFFFFE) << bit)
    wr = jnp.take_along_axis(next_nz, w, axis=1)
    wr_word = jnp.take_along_axis(words, jnp.minimum(wr, W - 1), axis=1)
    b = jnp.where(above != 0, (w << 5) + lowest(above), jnp.where(wr < W, (wr << 5) + lowest(wr_word), L))
    return a, jnp.minimum(b, L)


def _neighbour_factors(left, right, tok, p, a, b, V: int):
    """lf, rt (B, K, V) at positions ``p`` (B, K) with nearest visible neighbours a, b (-1 / L if none):
    q(x_p = . | x_a) (the marginal m_p if no a) and q(x_b | x_p = .) (1 if no b)."""
    L = tok.shape[1]
    xa = jnp.take_along_axis(tok, jnp.maximum(a, 0), axis=1)
    xb = jnp.take_along_axis(tok, jnp.minimum(b, L - 1), axis=1)
    lrow = jnp.where(a >= 0, (p - a) * V + xa, (L + 1) * V + p)
    rrow = jnp.where(b < L, (b - p) * V + xb, (L + 1) * V)
    return left[lrow], right[rrow]  # (B, K, V) each


def _markov_at(left, right, states, positions, V, check=True):
    """Shared by marginals_at and log_marginal.

    Returns lf, rt (B, K, V): the left factor q(x_p = . | nearest visible token left of p) (the
    marginal m_p if none) and the right factor q(x_b | x_p = .) (1 if none) at ``positions`` (B, K);
    vis_p, tok_p (B, K): visibility and token at the positions; ok (B,): the state has positive
    probability; logq (B,): log q(visible part). With ``check=False`` (a chain whose init and
    transitions are all positive, so every state is possible) ok is all True and logq is not computed.
    """
    states = states.astype(jnp.int32)
    B, L = states.shape
    vis = states != V
    tok = jnp.where(vis, states, 0)  # (B, L)
    p = positions.astype(jnp.int32)
    a, b = _query_neighbours(vis, p)  # (B, K)
    lf, rt = _neighbour_factors(left, right, tok, p, a, b, V)
    vis_p = jnp.take_along_axis(vis, p, axis=1)
    tok_p = jnp.take_along_axis(tok, p, axis=1)
    if not check:
        return lf, rt, vis_p, tok_p, jnp.ones((B,), bool), None
    # q(visible part) = prod over visible j of q(x_j | nearest visible token left of j, or marginal)
    st = states.T  # (L, B): scan over the major axis
    vt = st != V
    tt = jnp.where(vt, st, 0)
    cols = jnp.arange(B)[None, :]
    a_all = _left_neighbours_t(vt)  # (L, B)
    pos_all = jnp.arange(L, dtype=jnp.int32)[:, None]
    row = jnp.where(a_all >= 0, (pos_all - a_all) * V + tt[jnp.maximum(a_all, 0), cols], (L + 1) * V + pos_all)
    fac = left.reshape(-1)[row * V + tt]  # (L, B) scalar gathers
    ok = jnp.all(jnp.where(vt, fac > 0, True), axis=0)  # (B,)
    logq = jnp.sum(jnp.where(vt, safe_log(fac), 0.0), axis=0)
    return lf, rt, vis_p, tok_p, ok, logq


def settle(products):
    """Non-negative products as rounded numbers: XLA:CPU lets LLVM contract a product and the sum it feeds into
    one fused multiply-add (one rounding fewer) wherever both land in one fusion, so the same sum of products
    can round differently in ``marginals`` and ``scores``. A select between them (here, of equal values: the
    products are >= 0) leaves nothing to contract."""
    return jnp.where(products > 0, products, 0.0)


def _conditionals(lf, rt, vis_p, tok_p, ok, V: int):
    """Normalised lf * rt at masked positions (uniform if the state is impossible or the row is all zero),
    the one-hot token at visible ones: (B, K, V)."""
    num = settle(lf * rt)  # (B, K, V)
    den = sum_last(num)[..., None]
    good = ok[:, None, None] & (den > 0)
    cond = jnp.where(good, num * (1.0 / jnp.where(good, den, 1.0)), 1.0 / V)  # one reciprocal, as in _scores_impl
    onehot = jax.nn.one_hot(tok_p, V, dtype=jnp.float64)
    return jnp.where(vis_p[..., None], onehot, cond)


def _markov_marginals_at_impl(left, right, states, positions, V, check=True):
    lf, rt, vis_p, tok_p, ok, _ = _markov_at(left, right, states, positions, V, check)
    return _conditionals(lf, rt, vis_p, tok_p, ok, V)


# ---- the incremental face (the sampler's static-order path keeps the packed mask between steps) ---------
def _init_cache_impl(left, states, V: int, check: bool):
    """(packed visibility words (B, ceil(L/32)) uint32, ok (B,) bool) of partial states (B, L)."""
    states = states.astype(jnp.int32)
    words = pack_visibility(states != V)
    if not check:
        return words, jnp.ones((states.shape[0],), bool)
    ok = _markov_at(left, left, states, jnp.zeros((states.shape[0], 1), jnp.int32), V, True)[4]
    return words, ok


def _marginals_at_cached_impl(left, right, cache, states, positions, V: int):
    """:func:`_markov_marginals_at_impl` with the neighbours read off the cached packed mask and the cached
    possibility flag: O(K V + L/32) per row, no pass over L."""
    words, ok = cache
    states = states.astype(jnp.int32)
    vis = states != V
    tok = jnp.where(vis, states, 0)
    p = positions.astype(jnp.int32)
    a, b = _neighbours_from_words(words, p, states.shape[1])
    lf, rt = _neighbour_factors(left, right, tok, p, a, b, V)
    return _conditionals(lf, rt, jnp.take_along_axis(vis, p, axis=1), jnp.take_along_axis(tok, p, axis=1), ok, V)


def _update_cache_impl(left, cache, states, positions, valid, V: int, check: bool):
    """The cache of ``states`` (B, L), which revealed ``positions[valid]`` ((B, K), distinct, masked before)
    since the state ``cache`` describes. Only the chain's new links are checked: each revealed p with its
    new nearest visible neighbours a' < p < b' needs q(x_p | x_a') > 0 (m_p[x_p] > 0 if there is no a') and
    P^{b'-p}[x_p, x_b'] > 0; every other link of the new state is a link of the old one (and an impossible
    state stays impossible: q of a longer visible part is no larger). O(K + L/32) per row."""
    words, ok = cache
    states = states.astype(jnp.int32)
    B, L = states.shape
    W = words.shape[1]
    p = positions.astype(jnp.int32)
    bits = jnp.where(valid, jnp.uint32(1) << (p & 31).astype(jnp.uint32), jnp.uint32(0))
    rows = jnp.arange(B)[:, None]
    words = words.at[rows, jnp.where(valid, p >> 5, W)].add(bits, mode="drop")  # new distinct bits: add = or
    if not check:
        return words, ok
    safe = jnp.where(valid, p, 0)
    a, b = _neighbours_from_words(words, safe, L)
    tok = jnp.where(states != V, states, 0)
    xp = jnp.take_along_axis(tok, safe, axis=1)
    xa = jnp.take_along_axis(tok, jnp.maximum(a, 0), axis=1)
    xb = jnp.take_along_axis(tok, jnp.minimum(b, L - 1), axis=1)
    flat = left.reshape(-1)
    lrow = jnp.where(a >= 0, (safe - a) * V + xa, (L + 1) * V + safe)
    in_ok = flat[lrow * V + xp] > 0
    out_ok = (b >= L) | (flat[(jnp.minimum(b - safe, L) * V + xp) * V + xb] > 0)  # P^{b'-p}[x_p, x_b']
    return words, ok & jnp.all(~valid | (in_ok & out_ok), axis=1)


def _row_offsets(states, V: int):
    """For every position of states (B, L): its left-factor row in ``left`` and right-factor row in ``right``
    (what :func:`_neighbour_factors` gathers), by two scans instead of neighbour queries.

    j V - x_j grows with j for visible j (x_j < V), so the running max of it over the visible j < i is
    a V - x_a of the nearest visible a, and i V - (a V - x_a) = (i - a) V + x_a is the row of P^{i-a}[x_a, :];
    likewise the running min of j V + x_j over the visible j > i gives (b - i) V + x_b."""
    B, L = states.shape
    vis = states != V
    j = jnp.arange(L, dtype=jnp.int32)[None, :]
    lo, hi = jnp.iinfo(jnp.int32).min, jnp.iinfo(jnp.int32).max
    cl = jax.lax.associative_scan(jnp.maximum, jnp.where(vis, j * V - states, lo), axis=1)
    cr = jax.lax.associative_scan(jnp.minimum, jnp.where(vis, j * V + states, hi), axis=1, reverse=True)
    cl = jnp.concatenate([jnp.full((B, 1), lo, jnp.int32), cl[:, :-1]], axis=1)  # strictly left of i
    cr = jnp.concatenate([cr[:, 1:], jnp.full((B, 1), hi, jnp.int32)], axis=1)  # strictly right of i
    lrow = jnp.where(cl > lo, j * V - cl, (L + 1) * V + j)
    rrow = jnp.where(cr < hi, cr - j * V, (L + 1) * V)
    return lrow, rrow


def _scores_impl(left, right, states, proxy: str, V: int, check: bool):
    """``proxy_score(marginals(states), proxy)`` (B, L), plane by plane: for each value v the scalar gathers
    P^{i-a}[x_a, v] and P^{b-i}[v, x_b], normalised by one reciprocal of their left-to-right sum, as
    :func:`_conditionals` does; the possibility flag from the same rows. V > 16: through the marginals."""
    states = states.astype(jnp.int32)
    if V > UNROLLED:
        return proxy_score(_markov_marginals_impl(left, right, states, V, check), proxy)
    B, L = states.shape
    vis = states != V
    tok = jnp.where(vis, states, 0)
    lrow, rrow = _row_offsets(states, V)
    lflat, rflat = left.reshape(-1), right.reshape(-1)
    if check:  # every visible token possible given its nearest visible left neighbour (or its marginal)
        ok = jnp.all(jnp.where(vis, lflat[lrow * V + tok] > 0, True), axis=1, keepdims=True)
    else:
        ok = jnp.ones((B, 1), bool)
    num = [settle(lflat[lrow * V + v] * rflat[rrow * V + v]) for v in range(V)]
    den = sum_terms(num)
    good = ok & (den > 0)
    r = 1.0 / jnp.where(good, den, 1.0)
    cond = [jnp.where(good, n * r, 1.0 / V) for n in num]  # the normalised conditionals, as _conditionals
    planes = [jnp.where(vis, (tok == v).astype(jnp.float64), c) for v, c in enumerate(cond)]
    return planes_score(planes, proxy)


def _markov_marginals_impl(left, right, states, V, check=True):
    B, L = states.shape
    pos = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    return _markov_marginals_at_impl(left, right, states, pos, V, check)


def markov_denoiser(lang) -> MarkovDenoiser:
    """The exact Denoiser of a MarkovChain (``init``, ``trans``, ``length``, ``vocab_size``)."""
    V, L = lang.vocab_size, lang.length
    check_size(
        2 * 8 * (L + 2) * V * V,
        f"The Markov tables P^d (d = 0..L) for V = {V}, L = {L}",
        None,
        "Use a shorter length or a smaller vocabulary",
    )
    pw = matrix_powers(lang.trans, L)  # (L+1, V, V)
    left = np.concatenate([pw.reshape(-1, V), position_marginals(lang.init, lang.trans, L)])  # ((L+1)V + L, V)
    right = np.concatenate([np.swapaxes(pw, 1, 2).reshape(-1, V), np.ones((1, V))])  # ((L+1)V + 1, V)
    positive = bool(np.all(lang.init > 0) and np.all(lang.trans > 0))
    return MarkovDenoiser(V, L, as_f64(left, "powers"), as_f64(right, "powers"), positive)


_markov_marginals_jit = jax.jit(_markov_marginals_impl, static_argnums=(3, 4))
_scores_jit = jax.jit(_scores_impl, static_argnums=(3, 4, 5))
_markov_marginals_at_jit = jax.jit(_markov_marginals_at_impl, static_argnums=(4, 5))
_init_cache_jit = jax.jit(_init_cache_impl, static_argnums=(2, 3))
_marginals_at_cached_jit = jax.jit(_marginals_at_cached_impl, static_argnums=(5,))
_update_cache_jit = jax.jit(_update_cache_impl, static_argnums=(5, 6))


@jax.jit(static_argnums=3)
def _markov_log_marginal(left, right, states, V):
    return _markov_at(left, right, states, jnp.zeros((states.shape[0], 1), jnp.int32), V, True)[5]


def log_marginal(d: MarkovDenoiser, states) -> jax.Array:
    """log q(visible part of z) for validated partial states (B, L) -> (B,); -inf if impossible."""
    return _markov_log_marginal(d.left, d.right, jnp.asarray(states), d.vocab_size)
