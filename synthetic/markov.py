"""Scalable exact engine for Markov, n-gram and HMM languages at any length L.

The languages are the dataclasses of :mod:`synthetic.languages` (same parameter conventions):
``MarkovChain(init, trans, length)``, ``NGram(init, cond, length)``, ``HMM(init, trans, emit, length)``.
Nothing here enumerates V**L; everything is linear in L.

Exact conditionals (the Denoiser protocol of :mod:`theory.denoiser`)
--------------------------------------------------------------------
:func:`denoiser` returns a frozen Denoiser (hashable by identity, so it can be a static argument of
the core sampler's ``jit``) whose ``marginals(states (B, L)) -> (B, L, V)`` gives the exact
q(x_i = v | all visible tokens) at every masked position (one-hot at visible positions):

* **Markov chain** (:class:`MarkovDenoiser`): with the matrix powers P^d (d = 0..L) and the marginals
  m_i = init P^i precomputed, a masked position i with nearest visible neighbours a < i < b has
  q(x_i = v | z) ∝ P^{i-a}[x_a, v] P^{b-i}[v, x_b]  (m_i[v] in place of the first factor when there is
  no visible token on the left, 1 in place of the second when there is none on the right). The
  neighbours come from bit tricks on the visibility mask packed into 32-bit words (no loop over
  positions), so a whole batch is O(B L V), fully parallel; ``marginals_at(states, positions)`` gives
  the conditionals at K positions only, in O(B (L/32 + K V)) plus one packing pass — what the core
  sampler's fast path asks for. Whether the visible tokens are possible at all (else: uniform) needs
  one O(B L) pass, skipped for chains with all-positive init and transitions (``positive``).
* **n-gram and HMM** (:class:`ChainDenoiser`): scaled forward–backward (``lax.scan`` over positions)
  on a hidden chain: the HMM's hidden states, or for an order-n n-gram the (n-1)-tuples of the last
  tokens (S = V**(n-1) states, with the tuple transition applied in O(V**n) per position rather than
  O(S**2)). Cost O(B L S^2) for HMMs and O(B L V**n) for n-grams; memory O(B L S).

Messages are normalised at every position (never logs of zero), so deterministic languages with
zero-probability transitions are handled exactly. A partial state whose visible tokens have
probability 0 under q gets the **uniform** distribution 1/V at every masked position — the same
documented finite answer as :func:`theory.denoiser.exact_denoiser`.

Other exact quantities
----------------------
:func:`log_prob` (log q(x), -inf outside the support), :func:`log_marginal` (log q(visible part of a
partial state)), :func:`entropy` (H(q) at ``lang.length``; closed form for Markov/n-gram, enumeration
for small HMMs), :func:`entropy_rate` (per-token limit), :func:`sample` (exact ancestral samples) and
:func:`entropy_mc` (Monte-Carlo H(q) with a standard error, for HMMs too large to enumerate).

Monte Carlo at scale
--------------------
:func:`sample_mdm` drives the core sampler :func:`theory.sampling.sample` with :func:`denoiser` and
returns tokens, per-sample exact log q and NFE; :func:`estimates` turns them into log TER and SER with
standard errors (a pandas DataFrame).

Validation happens in the public functions (``conditionals``, ``log_prob``, ...); the traced
``marginals`` path has no Python-side checks so it can run inside ``jit``/``while_loop``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from theory import metrics
from theory.validation import as_f64, check_size, require_x64
from theory.sampling import Samples
from theory.sampling import sample as core_sample
from theory.states import check_sequences, check_states

from .languages import HMM, MarkovChain, NGram

LANGUAGES = (MarkovChain, NGram, HMM)

#: Largest V**L for which :func:`entropy` enumerates an HMM exactly.
HMM_ENUM_MAX = 1 << 22


# ---- validation ----------------------------------------------------------------------------------
def check_language(lang) -> None:
    """Raise TypeError unless ``lang`` is a MarkovChain, NGram or HMM of :mod:`synthetic.languages`."""
    if not isinstance(lang, LANGUAGES):
        raise TypeError(
            f"synthetic.markov needs a MarkovChain, NGram or HMM from synthetic.languages, got {type(lang).__name__}. "
            f"For an arbitrary table use theory.joint.Joint with theory.denoiser.exact_denoiser."
        )
    if isinstance(lang, NGram) and lang.length < lang.order:
        raise ValueError(f"An order-{lang.order} NGram needs length >= {lang.order}, got {lang.length}.")


def check_tokens(tokens, vocab_size: int, length: int) -> np.ndarray:
    """Validate clean sequences (B, L) (or (L,)) with entries in 0..V-1; returns int64 numpy (B, L)."""
    return check_sequences(tokens, vocab_size, length)


def _xlogx_rows(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a stochastic array (..., V)."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _safe_log(p):
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


# ---- Markov chain: matrix powers + nearest visible neighbours --------------------------------------
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

    def marginals(self, states) -> jax.Array:
        return _markov_marginals_jit(self.left, self.right, jnp.asarray(states), self.vocab_size,
                                     not self.positive)

    def marginals_at(self, states, positions) -> jax.Array:
        """Conditionals at ``positions`` (B, K) only -> (B, K, V); O(B K V) plus O(B L) integer work."""
        return _markov_marginals_at_jit(self.left, self.right, jnp.asarray(states), jnp.asarray(positions),
                                        self.vocab_size, not self.positive)


def _left_neighbours_t(vt):
    """Nearest visible position strictly before each position, transposed layout: (L, B) bool ->
    (L, B) int32, -1 if none. ``associative_scan`` over the leading axis (XLA's CPU ``cummax`` is
    quadratic in L, and scanning the minor axis is several times slower)."""
    L, B = vt.shape
    pos = jnp.arange(L, dtype=jnp.int32)[:, None]
    le = jax.lax.associative_scan(jnp.maximum, jnp.where(vt, pos, -1), axis=0)  # at or before i
    return jnp.concatenate([jnp.full((1, B), -1, jnp.int32), le[:-1]], axis=0)


def _query_neighbours(vis, positions):
    """Nearest visible position strictly left / right of each query, by bit tricks.

    ``vis`` (B, L) bool, ``positions`` (B, K) -> (B, K) int32 each, -1 / L where there is none. The
    visibility mask is packed into 32-bit words (one pass over L), the nearest non-empty word before /
    after each word is a scan over L/32 words, and each query is then O(1) (count-leading-zeros within
    a word). Cost O(L/32 + K) per row after packing, instead of a scan over all L positions.
    """
    B, L = vis.shape
    W = -(-L // 32)
    v = jnp.pad(vis, ((0, 0), (0, 32 * W - L))).reshape(B, W, 32).astype(jnp.uint32)
    words = jnp.sum(v << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)  # (B, W): bit j = position 32w+j
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
    xa = jnp.take_along_axis(tok, jnp.maximum(a, 0), axis=1)
    xb = jnp.take_along_axis(tok, jnp.minimum(b, L - 1), axis=1)
    lf = left[jnp.where(a >= 0, (p - a) * V + xa, (L + 1) * V + p)]  # (B, K, V)
    rt = right[jnp.where(b < L, (b - p) * V + xb, (L + 1) * V)]  # (B, K, V)
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
    logq = jnp.sum(jnp.where(vt, _safe_log(fac), 0.0), axis=0)
    return lf, rt, vis_p, tok_p, ok, logq


def _markov_marginals_at_impl(left, right, states, positions, V, check=True):
    lf, rt, vis_p, tok_p, ok, _ = _markov_at(left, right, states, positions, V, check)
    num = lf * rt  # (B, K, V)
    den = jnp.sum(num, axis=-1, keepdims=True)
    good = ok[:, None, None] & (den > 0)
    cond = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0 / V)
    onehot = jax.nn.one_hot(tok_p, V, dtype=jnp.float64)
    return jnp.where(vis_p[..., None], onehot, cond)


def _markov_marginals_impl(left, right, states, V, check=True):
    B, L = states.shape
    pos = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    return _markov_marginals_at_impl(left, right, states, pos, V, check)


def _markov_denoiser(lang: MarkovChain) -> MarkovDenoiser:
    V, L = lang.vocab_size, lang.length
    check_size(2 * 8 * (L + 2) * V * V, f"The Markov tables P^d (d = 0..L) for V = {V}, L = {L}", None,
               "Use a shorter length or a smaller vocabulary")
    pw = matrix_powers(lang.trans, L)  # (L+1, V, V)
    left = np.concatenate([pw.reshape(-1, V), position_marginals(lang.init, lang.trans, L)])  # ((L+1)V + L, V)
    right = np.concatenate([np.swapaxes(pw, 1, 2).reshape(-1, V), np.ones((1, V))])  # ((L+1)V + 1, V)
    positive = bool(np.all(lang.init > 0) and np.all(lang.trans > 0))
    return MarkovDenoiser(V, L, as_f64(left, "powers"), as_f64(right, "powers"), positive)


# ---- n-gram and HMM: scaled forward-backward on a hidden chain -------------------------------------
@dataclass(frozen=True, eq=False)
class ChainDenoiser:
    """Exact conditionals by scaled forward–backward on a hidden chain (n-gram tuples or HMM states).

    Fields: ``init`` (S,), ``emit`` (K, S, V) emission tables (position i uses table ``min(i, K-1)``),
    ``trans`` (S, S) for an HMM or ``cond`` (V**(n-2), V, V) ... see :func:`_chain_parts`.
    ``kind`` is "hmm" or "ngram"; ``order`` is n for n-grams (hidden tuples of n-1 tokens).
    """

    vocab_size: int
    length: int
    kind: str
    order: int
    init: jax.Array
    emit: jax.Array
    trans: jax.Array

    def marginals(self, states) -> jax.Array:
        return _fb_jit(self.init, self.emit, self.trans, jnp.asarray(states), self.kind, self.order)[0]


def _chain_denoiser(lang) -> ChainDenoiser:
    V, L = lang.vocab_size, lang.length
    if isinstance(lang, HMM):
        return ChainDenoiser(V, L, "hmm", 0, as_f64(lang.init), as_f64(lang.emit[None]), as_f64(lang.trans))
    n = lang.order
    S = V ** (n - 1)
    h = np.arange(S)
    # emission table d: token = digit d (0 = most significant) of the tuple (x_{i-n+2}, ..., x_i)
    digits = (h[None, :] // (V ** np.arange(n - 2, -1, -1))[:, None]) % V  # (n-1, S)
    emit = (digits[..., None] == np.arange(V)).astype(np.float64)  # (n-1, S, V)
    cond = lang.cond.reshape(V, V ** (n - 2), V)  # (first token a, middle c, next b)
    return ChainDenoiser(V, L, "ngram", n, as_f64(lang.init), as_f64(emit), as_f64(cond))


def _fwd_step(d: ChainDenoiser, alpha, i):
    """Predict h_{i+1} from the filtered h_i: (B, S) -> (B, S)."""
    if d.kind == "hmm":
        return alpha @ d.trans
    V = d.vocab_size
    B = alpha.shape[0]
    a = alpha.reshape(B, V, -1)  # (B, a, c)
    nxt = jnp.einsum("bac,acv->bcv", a, d.trans).reshape(B, -1)  # tuple (c, v)
    return jnp.where(i < d.order - 2, alpha, nxt)  # the first n-1 tokens share one tuple (drawn by init)


def _bwd_step(d: ChainDenoiser, beta, i):
    """beta_i(h) = sum_h' T_i[h, h'] beta'(h'): (B, S) -> (B, S); ``beta`` already includes evidence at i+1."""
    if d.kind == "hmm":
        return beta @ d.trans.T
    V = d.vocab_size
    B = beta.shape[0]
    bt = beta.reshape(B, -1, V)  # (B, c, v)
    prv = jnp.einsum("acv,bcv->bac", d.trans, bt).reshape(B, -1)  # tuple (a, c)
    return jnp.where(i < d.order - 2, beta, prv)


def _norm(x):
    s = jnp.sum(x, axis=-1, keepdims=True)
    return x / jnp.where(s > 0, s, 1.0), s[..., 0]


def _fb(init, emit, trans, states, kind, order):
    """Scaled forward–backward. Returns (marginals (B, L, V), log q(visible part) (B,))."""
    V, L = emit.shape[2], states.shape[1]
    d = ChainDenoiser(V, L, kind, order, init, emit, trans)
    K = d.emit.shape[0]
    states = states.astype(jnp.int32)
    B = states.shape[0]
    vis = states != V
    tok = jnp.where(vis, states, 0)
    emit_idx = jnp.minimum(jnp.arange(L), K - 1)  # (L,)
    emit_t = jnp.swapaxes(d.emit, 1, 2)  # (K, V, S)
    # evidence e_i(h) = emit_i[h, x_i] at visible i, 1 at masked i: (L, B, S)
    ev = jnp.where(vis.T[..., None], emit_t[emit_idx[:, None], tok.T], 1.0)

    def fwd(carry, xs):
        pred, i = carry  # pred: normalised q(h_i | visible x_<i)
        e = xs
        filt, c = _norm(pred * e)
        nxt, _ = _norm(_fwd_step(d, filt, i))
        return (nxt, i + 1), (pred, c)

    pred0 = jnp.broadcast_to(d.init, (B, d.init.shape[0]))
    _, (preds, cs) = jax.lax.scan(fwd, (pred0, jnp.int32(0)), ev)  # (L, B, S), (L, B)

    def bwd(beta, xs):
        e, i = xs  # evidence at i, position i; beta = normalised q(visible x_>i | h_i)
        out = beta
        prev, _ = _norm(_bwd_step(d, beta * e, i - 1))
        return prev, out

    beta0 = jnp.ones_like(pred0)
    _, betas = jax.lax.scan(bwd, beta0, (ev, jnp.arange(L)), reverse=True)  # (L, B, S)
    gamma = preds * betas  # (L, B, S) ∝ q(h_i, visible x_{!=i}) at masked i
    num = jnp.einsum("lbs,lsv->lbv", gamma, d.emit[emit_idx])  # (L, B, V)
    num = jnp.swapaxes(num, 0, 1)  # (B, L, V)
    ok = jnp.all(cs > 0, axis=0)  # (B,)
    den = jnp.sum(num, axis=-1, keepdims=True)
    good = ok[:, None, None] & (den > 0)
    cond = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0 / V)
    onehot = jax.nn.one_hot(tok, V, dtype=jnp.float64)
    marg = jnp.where(vis[..., None], onehot, cond)
    logz = jnp.sum(_safe_log(cs), axis=0)  # (B,): sum_i log q(x_i visible | visible x_<i)
    return marg, logz


_markov_marginals_jit = jax.jit(_markov_marginals_impl, static_argnums=(3, 4))
_markov_marginals_at_jit = jax.jit(_markov_marginals_at_impl, static_argnums=(4, 5))
_fb_jit = jax.jit(_fb, static_argnames=("kind", "order"))


# ---- public API -------------------------------------------------------------------------------------
_DENOISERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # language -> its denoiser


def denoiser(lang):
    """The exact Denoiser of a MarkovChain / NGram / HMM (cached per language object).

    Returns a frozen, identity-hashable dataclass with ``vocab_size``, ``length`` and a JAX-traceable
    ``marginals(states (B, L) int) -> (B, L, V)`` float64 (one-hot at visible positions; uniform at the
    masked positions of a state whose visible tokens have probability 0). Plugs into
    :func:`theory.sampling.sample` and :func:`theory.sampling.exact_law` (``denoiser=``).
    """
    require_x64("synthetic.markov.denoiser")
    check_language(lang)
    d = _DENOISERS.get(lang)
    if d is None:
        d = _markov_denoiser(lang) if isinstance(lang, MarkovChain) else _chain_denoiser(lang)
        _DENOISERS[lang] = d
    return d


def conditionals(lang, states) -> jax.Array:
    """Validated exact conditionals q(x_i = v | visible part of z) for partial states (B, L) -> (B, L, V)."""
    d = denoiser(lang)
    z = jnp.asarray(check_states(states, lang.vocab_size, lang.length))
    if isinstance(d, MarkovDenoiser):
        return d.marginals(z)
    return d.marginals(z)


def log_marginal(lang, states) -> jax.Array:
    """log q(visible part of z) for partial states (B, L) -> (B,); -inf if the visible tokens are impossible.

    On clean sequences this is log q(x); on the all-mask state it is 0.
    """
    d = denoiser(lang)
    z = jnp.asarray(check_states(states, lang.vocab_size, lang.length))
    if isinstance(d, MarkovDenoiser):
        return _markov_log_marginal(d.left, d.right, z, d.vocab_size)
    return _fb_jit(d.init, d.emit, d.trans, z, d.kind, d.order)[1]


@jax.jit(static_argnums=3)
def _markov_log_marginal(left, right, states, V):
    return _markov_at(left, right, states, jnp.zeros((states.shape[0], 1), jnp.int32), V, True)[5]


def log_prob(lang, tokens) -> jax.Array:
    """Exact log q(x) for clean sequences (B, L) (or (L,)) -> (B,); -inf outside the support."""
    require_x64("synthetic.markov.log_prob")
    check_language(lang)
    x = jnp.asarray(check_tokens(tokens, lang.vocab_size, lang.length))
    if isinstance(lang, MarkovChain):
        return _markov_log_prob(jnp.asarray(lang.init), jnp.asarray(lang.trans), x)
    if isinstance(lang, NGram):
        return _ngram_log_prob(jnp.asarray(lang.init), jnp.asarray(lang.cond), x)
    d = denoiser(lang)
    return _fb_jit(d.init, d.emit, d.trans, x, d.kind, d.order)[1]


@jax.jit
def _markov_log_prob(init, trans, x):
    lp = _safe_log(init[x[:, 0]]) + jnp.sum(_safe_log(trans[x[:, :-1], x[:, 1:]]), axis=1)
    return lp


@jax.jit
def _ngram_log_prob(init, cond, x):
    n = cond.ndim
    V = cond.shape[0]
    L = x.shape[1]
    st = V ** jnp.arange(n - 2, -1, -1)  # (n-1,)
    first = _safe_log(init[x[:, : n - 1] @ st])  # (B,)
    windows = jnp.stack([x[:, j: L - n + 1 + j] for j in range(n)], axis=-1)  # (B, L-n+1, n)
    flat = cond.reshape(-1, V)[windows[..., :-1] @ st, windows[..., -1]]  # (B, L-n+1)
    return first + jnp.sum(_safe_log(flat), axis=1)


def entropy(lang, max_bytes: float | None = None) -> float:
    """Exact H(q) in nats at ``lang.length``.

    Markov: H(init) + sum_{i<L-1} (init P^i) . h, with h_a = H(P[a, :]). n-gram: the same on (n-1)-tuples.
    HMM: no closed form exists (Blackwell 1957); enumerated exactly when V**L <= HMM_ENUM_MAX
    (otherwise ValueError: use :func:`entropy_mc`).
    """
    check_language(lang)
    L = lang.length
    if isinstance(lang, MarkovChain):
        h = _xlogx_rows(lang.trans)  # (V,)
        m = position_marginals(lang.init, lang.trans, L)  # (L, V)
        return float(_xlogx_rows(lang.init) + np.sum(m[:-1] @ h))
    if isinstance(lang, NGram):
        V, n = lang.vocab_size, lang.order
        cond = lang.cond.reshape(V, V ** (n - 2), V)
        h = _xlogx_rows(lang.cond.reshape(-1, V))  # (V**(n-1),) entropy of each context
        pi = lang.init.copy()  # law of (x_{i-n+2}, ..., x_i) at i = n-2
        total = float(_xlogx_rows(lang.init))
        for _ in range(n - 1, L):
            total += float(pi @ h)
            pi = np.einsum("ac,acb->cb", pi.reshape(V, -1), cond).reshape(-1)
        return total
    V, H = lang.vocab_size, lang.num_hidden
    if V**L > HMM_ENUM_MAX:
        raise ValueError(
            f"The entropy of an HMM has no closed form; enumerating V**L = {V}**{L} sequences exceeds "
            f"{HMM_ENUM_MAX}. Use synthetic.markov.entropy_mc(lang, key, num) for an estimate with a standard error."
        )
    a = lang.init[None, :] * lang.emit.T  # (V, H): q(x_0, h_0)
    for _ in range(1, L):
        a = (a @ lang.trans)[:, None, :] * lang.emit.T[None]  # (M, V, H)
        a = a.reshape(-1, H)
    return float(_xlogx_rows(a.sum(axis=1)[None])[0])


def _cesaro_limit(init: np.ndarray, trans: np.ndarray, max_squarings: int = 200) -> np.ndarray:
    """lim_M (1/M) sum_{i<M} init P^i: the stationary law reached from ``init`` (any stochastic P).

    The lazy chain (I + P)/2 has the same eigenvalue-1 projector as P and no other unit-modulus
    eigenvalue, so its powers converge to the Cesàro limit; computed by repeated squaring.
    """
    S = trans.shape[0]
    M = 0.5 * (np.eye(S) + trans)
    for _ in range(max_squarings):
        M2 = M @ M
        M2 /= M2.sum(axis=1, keepdims=True)
        if np.max(np.abs(M2 - M)) < 1e-15:
            M = M2
            break
        M = M2
    return init @ M


def entropy_rate(lang) -> float:
    """Per-token entropy rate lim H(q_L)/L in nats (from ``lang``'s initial law).

    Markov: pi . h with pi the Cesàro-stationary law reached from init and h_a = H(P[a, :]);
    n-gram: the same on (n-1)-tuples with h_c = H(cond[c, :]). HMM: no closed form (Blackwell 1957);
    raises ValueError pointing to :func:`entropy_mc` at a long length.
    """
    check_language(lang)
    if isinstance(lang, MarkovChain):
        pi = _cesaro_limit(lang.init, lang.trans)
        return float(pi @ _xlogx_rows(lang.trans))
    if isinstance(lang, NGram):
        V, n = lang.vocab_size, lang.order
        S = V ** (n - 1)
        check_size(8 * S * S * 3, f"entropy_rate's dense tuple chain of S = V**(n-1) = {S} states", None,
                   "Estimate the rate as entropy(lang.with_length(L + 1)) - entropy(lang.with_length(L)) at large L")
        cond = lang.cond.reshape(V, V ** (n - 2), V)
        T = np.zeros((V, V ** (n - 2), V ** (n - 2), V))  # tuple (a, c) -> tuple (c, b)
        idx = np.arange(V ** (n - 2))
        T[:, idx, idx, :] = cond
        pi = _cesaro_limit(lang.init, T.reshape(S, S))
        return float(pi @ _xlogx_rows(lang.cond.reshape(-1, V)))
    raise ValueError(
        "The entropy rate of an HMM has no closed form (Blackwell 1957). Estimate it with "
        "synthetic.markov.entropy_mc(lang.with_length(L_large), key, num) divided by L_large."
    )


def entropy_mc(lang, key, num: int) -> metrics.Estimate:
    """Monte-Carlo H(q) = E[-log q(x)] over ``num`` exact samples, with its standard error."""
    x = sample(lang, key, num)
    return metrics.mean_se(-np.asarray(log_prob(lang, x)))


# ---- exact sampling from q ------------------------------------------------------------------------
def _inv_cdf(cdf, u):
    """Rows of a CDF (..., K) and uniforms (...,) -> indices (...,) (float64 inverse CDF)."""
    v = jnp.sum(cdf < (u * cdf[..., -1])[..., None], axis=-1)
    return jnp.minimum(v, cdf.shape[-1] - 1).astype(jnp.int32)


def sample(lang, key, num: int) -> jax.Array:
    """``num`` exact samples (num, L) int32 from q (ancestral sampling, float64 inverse CDF)."""
    require_x64("synthetic.markov.sample")
    check_language(lang)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    L = lang.length
    u = jax.random.uniform(key, (L, 2, int(num)), dtype=jnp.float64)
    if isinstance(lang, MarkovChain):
        return _sample_markov(jnp.cumsum(jnp.asarray(lang.init)), jnp.cumsum(jnp.asarray(lang.trans), axis=1), u)
    if isinstance(lang, NGram):
        V, n = lang.vocab_size, lang.order
        return _sample_ngram(jnp.cumsum(jnp.asarray(lang.init)), jnp.cumsum(jnp.asarray(lang.cond.reshape(-1, V)), axis=1), u, n)
    return _sample_hmm(jnp.cumsum(jnp.asarray(lang.init)), jnp.cumsum(jnp.asarray(lang.trans), axis=1),
                       jnp.cumsum(jnp.asarray(lang.emit), axis=1), u)


@jax.jit
def _sample_markov(cdf0, cdft, u):
    x0 = _inv_cdf(cdf0, u[0, 0])

    def step(x, ui):
        y = _inv_cdf(cdft[x], ui[0])
        return y, y

    _, xs = jax.lax.scan(step, x0, u[1:])
    return jnp.concatenate([x0[None], xs]).T  # (num, L)


def _sample_ngram_impl(cdf0, cdfc, u, n):
    V = cdfc.shape[1]
    S = V ** (n - 1)
    ctx0 = _inv_cdf(cdf0, u[0, 0])  # (num,) flat index of the first n-1 tokens
    first = (ctx0[:, None] // (V ** jnp.arange(n - 2, -1, -1))[None]) % V  # (num, n-1)

    def step(ctx, ui):
        b = _inv_cdf(cdfc[ctx], ui[0])
        return (ctx * V + b) % S, b

    _, xs = jax.lax.scan(step, ctx0, u[n - 1:])  # (L-n+1, num)
    return jnp.concatenate([first, xs.T], axis=1).astype(jnp.int32)


_sample_ngram = jax.jit(_sample_ngram_impl, static_argnums=3)


@jax.jit
def _sample_hmm(cdf0, cdft, cdfe, u):
    h0 = _inv_cdf(cdf0, u[0, 0])

    def step(h, ui):
        h2 = _inv_cdf(cdft[h], ui[0])
        return h2, _inv_cdf(cdfe[h2], ui[1])

    _, xs = jax.lax.scan(step, h0, u[1:])
    x0 = _inv_cdf(cdfe[h0], u[0, 1])
    return jnp.concatenate([x0[None], xs]).T


# ---- Monte Carlo MDM sampling and estimates ----------------------------------------------------------
@dataclass(frozen=True)
class MDMSamples:
    """Samples of the MDM sampler driven by the exact denoiser of a language.

    ``tokens`` (num, L) int, ``log_q`` (num,) exact log q(tokens) (-inf outside the support),
    ``nfe`` (num,) denoiser calls per sample.
    """

    tokens: np.ndarray
    log_q: np.ndarray
    nfe: np.ndarray

    @property
    def num(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: sample, log_q, neg_log_q_per_token, nfe."""
        return pd.DataFrame({
            "sample": np.arange(self.num),
            "log_q": self.log_q,
            "neg_log_q_per_token": -self.log_q / self.length,
            "nfe": self.nfe,
        })


def sample_mdm(key, lang, policy=None, steps=None, *, num: int, reveal: str = "fixed", schedule=None, counts=None,
               batch_size: int | None = None) -> MDMSamples:
    """Run the core Monte-Carlo sampler :func:`theory.sampling.sample` with the exact denoiser of ``lang``.

    Arguments are those of :func:`theory.sampling.sample` (policy default RandomOrder; ``steps`` N or
    ``counts``; ``reveal`` "fixed" | "bernoulli"). Returns :class:`MDMSamples` with per-sample exact
    log q and NFE.
    """
    d = denoiser(lang)
    s = core_sample(key, d, policy, steps, num=num, reveal=reveal, schedule=schedule, counts=counts,
                    batch_size=batch_size)
    toks = np.asarray(s.tokens)
    return MDMSamples(toks, np.asarray(log_prob(lang, toks)), np.asarray(s.nfe))


def estimates(samples_or_frame, lang, correct: Callable | None = None) -> pd.DataFrame:
    """Monte-Carlo log TER and SER (mean, standard error, n) of samples scored by the language q.

    ``samples_or_frame``: :class:`MDMSamples`, :class:`theory.sampling.Samples`, a token array (num, L),
    or a DataFrame with a ``log_q`` column (as from ``MDMSamples.to_frame()``; optional ``nfe``).
    log TER = mean of -log q(x) / L (Feng2025's log-perplexity under q; +inf if a sample leaves the
    support); SER = fraction of samples that are not ``correct`` — ``correct(tokens (num, L)) -> (num,)
    bool``, default: inside q's support (q(x) > 0). Also reports NFE (mean, se) when available.
    """
    check_language(lang)
    L = lang.length
    tokens = nfe = None
    if isinstance(samples_or_frame, pd.DataFrame):
        f = samples_or_frame
        if "log_q" not in f:
            raise ValueError("a DataFrame passed to estimates needs a 'log_q' column (use MDMSamples.to_frame()).")
        if correct is not None:
            raise ValueError("a correctness predicate needs the tokens: pass MDMSamples or the token array.")
        log_q = f["log_q"].to_numpy(dtype=np.float64)
        nfe = f["nfe"].to_numpy() if "nfe" in f else None
    else:
        if isinstance(samples_or_frame, MDMSamples):
            tokens, log_q, nfe = samples_or_frame.tokens, samples_or_frame.log_q, samples_or_frame.nfe
        elif isinstance(samples_or_frame, Samples):
            tokens, nfe = np.asarray(samples_or_frame.tokens), np.asarray(samples_or_frame.nfe)
            log_q = None
        else:
            tokens, log_q = samples_or_frame, None
        tokens = check_tokens(tokens, lang.vocab_size, L)
        if log_q is None:
            log_q = np.asarray(log_prob(lang, tokens))
    ok = np.isfinite(log_q) if correct is None else np.asarray(correct(tokens), dtype=bool)
    if ok.shape != log_q.shape:
        raise ValueError(f"correct() must return one bool per sample ({log_q.shape}), got {ok.shape}.")
    row = {"language": type(lang).__name__, "vocab_size": lang.vocab_size, "length": L,
           **metrics.log_ter_mc(log_q, L).as_dict("log_ter_"), **metrics.ser_mc(ok).as_dict("ser_")}
    if nfe is not None:
        e = metrics.mean_se(nfe)
        row.update(nfe_mean=e.mean, nfe_se=e.se)
    return pd.DataFrame([row])


