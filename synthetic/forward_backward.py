"""Exact conditionals of n-gram languages and HMMs at any length: scaled forward–backward.

Both are chains on a hidden state: the HMM's hidden states, or for an order-n n-gram the (n-1)-tuples
of the last tokens (S = V**(n-1) states, with the tuple transition applied in O(V**n) per position
rather than O(S**2)). ``ChainDenoiser.marginals`` runs the forward and the backward recursion in one
``lax.scan`` (forward at position i, backward at L-1-i; unrolled :data:`UNROLL` steps per loop iteration,
since the per-step work is small and loop overhead dominated): O(B L S^2) for HMMs and O(B L V**n) for
n-grams, memory O(B L S). ``marginals_at(states, positions)`` runs the same scan and forms the conditionals
only at the K asked positions (O(B K S V) instead of O(B L S V), no (B, L, V) output), which is what the core
sampler's static-order fast path calls once per step. The scan itself covers all L positions: an HMM's
conditional at i depends on every visible token, so no exact method avoids that.

Messages are normalised at every position (never logs of zero), so deterministic languages with
zero-probability transitions are handled exactly. A partial state whose visible tokens have
probability 0 under q gets the uniform distribution 1/V at every masked position — the convention of
:mod:`theory.denoiser`. The second output of the pass is log q(visible part).

Used through ``NGram.denoiser()`` / ``HMM.denoiser()`` of :mod:`synthetic.languages`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from theory.pytree import register_dataclass
from theory.validation import as_f64

from .chain_oracle import safe_log


@register_dataclass(data_fields=("init", "emit", "trans"))
@dataclass(frozen=True, eq=False)
class ChainDenoiser:
    """Exact conditionals by scaled forward–backward on a hidden chain (n-gram tuples or HMM states).

    Fields: ``init`` (S,), ``emit`` (K, S, V) emission tables (position i uses table ``min(i, K-1)``),
    ``trans`` (S, S) for an HMM, or for an n-gram ``cond`` reshaped (V, V**(n-2), V) (first token, middle, next).
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
        states = jnp.asarray(states, jnp.int32)
        return _fb_jit(self.init, self.emit, self.trans, states, None, self.kind, self.order, True)[0]

    def marginals_at(self, states, positions) -> jax.Array:
        """Conditionals at ``positions`` (B, K) only -> (B, K, V) (the scan still covers all L positions)."""
        states, positions = jnp.asarray(states, jnp.int32), jnp.asarray(positions, jnp.int32)
        return _fb_jit(self.init, self.emit, self.trans, states, positions, self.kind, self.order)[0]

    def log_marginal(self, states) -> jax.Array:
        """log q(visible part of z) for partial states (B, L) -> (B,); -inf if impossible."""
        states = jnp.asarray(states, jnp.int32)  # all positions: the compilation of marginals serves
        return _fb_jit(self.init, self.emit, self.trans, states, None, self.kind, self.order, True)[1]


def _all_positions(states):
    B, L = states.shape
    return jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))


def hmm_denoiser(lang) -> ChainDenoiser:
    """The exact Denoiser of an HMM (``init`` (H,), ``trans`` (H, H), ``emit`` (H, V), ``length``)."""
    V, L = lang.vocab_size, lang.length
    return ChainDenoiser(V, L, "hmm", 0, as_f64(lang.init), as_f64(lang.emit[None]), as_f64(lang.trans))


def ngram_denoiser(lang) -> ChainDenoiser:
    """The exact Denoiser of an order-n NGram (``init`` (V**(n-1),), ``cond`` (V,)*n, ``length``)."""
    V, L = lang.vocab_size, lang.length
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


#: Scan steps unrolled per loop iteration: the per-step work (B x S x S) is small, so loop overhead dominates
#: a rolled scan (measured at V = H = 8, L = 1024, B = 64: unroll 16 is ~2x faster than 1).
UNROLL = 16
#: The same for the HMM path (one batched product per step): 8 measured best there.
HMM_UNROLL = 8


def _fb(init, emit, trans, states, positions, kind, order, full=False):
    """Scaled forward–backward. Returns (marginals (B, L, V) or (B, K, V) at ``positions``, log q(visible) (B,)).

    One ``lax.scan`` runs both recursions at once (the forward one at position i, the backward one at L-1-i),
    so the loop has L iterations instead of 2L; the conditionals are then formed at the asked positions only.
    """
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

    def step(carry, xs):
        # pred: normalised q(h_i | visible x_<i); beta: normalised q(visible x_>j | h_j), j = L-1-i
        pred, beta, i = carry
        e_f, e_b = xs  # evidence at i and at j
        filt, c = _norm(pred * e_f)
        nxt, _ = _norm(_fwd_step(d, filt, i))
        prev, _ = _norm(_bwd_step(d, beta * e_b, L - 2 - i))
        return (nxt, prev, i + 1), (pred, beta, c)

    pred0 = jnp.broadcast_to(d.init, (B, d.init.shape[0]))
    if kind == "hmm":
        # both recursions as one batched product: x[0] = pred (times A), x[1] = beta (times A^T); since the
        # rows of A sum to 1, normalising after the product leaves the forward message as before
        mats = jnp.stack([d.trans, d.trans.T])  # (2, S, S)

        def hmm_step(x, es):
            xe = x * jnp.stack(es)  # (2, B, S)
            y = jnp.einsum("kbh,khg->kbg", xe, mats)
            sy = jnp.sum(y, axis=-1, keepdims=True)
            return y / jnp.where(sy > 0, sy, 1.0), (x, jnp.sum(xe[0], axis=-1))

        x0 = jnp.stack([pred0, jnp.ones_like(pred0)])
        _, (xs, cs) = jax.lax.scan(hmm_step, x0, (ev, ev[::-1]), unroll=HMM_UNROLL)
        preds, betas_rev = xs[:, 0], xs[:, 1]  # (L, B, S) each
    else:
        carry0 = (pred0, jnp.ones_like(pred0), jnp.int32(0))
        _, (preds, betas_rev, cs) = jax.lax.scan(step, carry0, (ev, ev[::-1]), unroll=UNROLL)  # (L, B, S) x2
    if positions is None or full:
        positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    p = positions.astype(jnp.int32)  # (B, Kq)
    if full:  # every position in order: no gathers
        g = jnp.swapaxes(preds * betas_rev[::-1], 0, 1)  # (B, L, S)
    else:
        cols = jnp.arange(B)[:, None]
        g = preds[p, cols] * betas_rev[L - 1 - p, cols]  # (B, Kq, S) ∝ q(h_p, visible x_{!=p}) at masked p
    if kind == "hmm":
        num = g @ d.emit[0]  # (B, Kq, V)
    else:
        num = jnp.einsum("bks,bksv->bkv", g, d.emit[emit_idx[p]])  # (B, Kq, V)
    ok = jnp.all(cs > 0, axis=0)  # (B,)
    den = jnp.sum(num, axis=-1, keepdims=True)
    good = ok[:, None, None] & (den > 0)
    cond = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0 / V)
    tok_p = tok if full else jnp.take_along_axis(tok, p, axis=1)
    vis_p = vis if full else jnp.take_along_axis(vis, p, axis=1)
    marg = jnp.where(vis_p[..., None], jax.nn.one_hot(tok_p, V, dtype=jnp.float64), cond)
    logz = jnp.sum(safe_log(cs), axis=0)  # (B,): sum_i log q(x_i visible | visible x_<i)
    return marg, logz


_fb_jit = jax.jit(_fb, static_argnames=("kind", "order", "full"))
