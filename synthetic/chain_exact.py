"""Exact quantities of Markov chains, n-grams and HMMs at any length: log q(x), H(q), entropy rates, sampling.

Closed forms (no enumeration of V**L):

* log q(x): Markov chain init[x_0] prod trans[x_{i-1}, x_i]; n-gram init[x_{0..n-2}] prod cond[window];
  HMM through the forward pass of :mod:`synthetic.forward_backward`.
* H(q) in nats at ``lang.length``: Markov H(init) + sum_{i<L-1} (init P^i) . h with h_a = H(P[a, :]);
  n-gram the same on (n-1)-tuples; HMM: no closed form exists (Blackwell 1957), so it is enumerated
  exactly when V**L <= :data:`HMM_ENUM_MAX` (otherwise ValueError: use a Monte-Carlo estimate,
  :func:`theory.language.entropy_mc`).
* Entropy rate lim H(q_L)/L: pi . h with pi the Cesàro-stationary law reached from init.
* Exact ancestral samples (float64 inverse CDF), (num, L) int32.

Used through the methods of :class:`synthetic.languages.MarkovChain`, ``NGram`` and ``HMM``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory.validation import check_size

from .chain_oracle import position_marginals, safe_log

#: Largest V**L for which :func:`hmm_entropy` enumerates an HMM exactly.
HMM_ENUM_MAX = 1 << 22


def xlogx_rows(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a stochastic array (..., V)."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


# ---- log q(x) -------------------------------------------------------------------------------------------
@jax.jit
def markov_log_prob(init, trans, x):
    lp = safe_log(init[x[:, 0]]) + jnp.sum(safe_log(trans[x[:, :-1], x[:, 1:]]), axis=1)
    return lp


@jax.jit
def ngram_log_prob(init, cond, x):
    n = cond.ndim
    V = cond.shape[0]
    L = x.shape[1]
    st = V ** jnp.arange(n - 2, -1, -1)  # (n-1,)
    first = safe_log(init[x[:, : n - 1] @ st])  # (B,)
    windows = jnp.stack([x[:, j : L - n + 1 + j] for j in range(n)], axis=-1)  # (B, L-n+1, n)
    flat = cond.reshape(-1, V)[windows[..., :-1] @ st, windows[..., -1]]  # (B, L-n+1)
    return first + jnp.sum(safe_log(flat), axis=1)


# ---- entropy ---------------------------------------------------------------------------------------------
def markov_entropy(lang) -> float:
    """H(q) = H(init) + sum_{i < L-1} (init P^i) . h, h_a = H(P[a, :]) (nats)."""
    h = xlogx_rows(lang.trans)  # (V,)
    m = position_marginals(lang.init, lang.trans, lang.length)  # (L, V)
    return float(xlogx_rows(lang.init) + np.sum(m[:-1] @ h))


def ngram_entropy(lang) -> float:
    """H(q) of an order-n n-gram: H(init) + sum over positions >= n-1 of (law of the context) . h (nats)."""
    V, n = lang.vocab_size, lang.order
    cond = lang.cond.reshape(V, V ** (n - 2), V)
    h = xlogx_rows(lang.cond.reshape(-1, V))  # (V**(n-1),) entropy of each context
    pi = lang.init.copy()  # law of (x_{i-n+2}, ..., x_i) at i = n-2
    total = float(xlogx_rows(lang.init))
    for _ in range(n - 1, lang.length):
        total += float(pi @ h)
        pi = np.einsum("ac,acb->cb", pi.reshape(V, -1), cond).reshape(-1)
    return total


def hmm_entropy(lang) -> float:
    """H(q) of an HMM by exact enumeration of V**L (no closed form exists, Blackwell 1957)."""
    V, H, L = lang.vocab_size, lang.num_hidden, lang.length
    if V**L > HMM_ENUM_MAX:
        raise ValueError(
            f"The entropy of an HMM has no closed form; enumerating V**L = {V}**{L} sequences exceeds "
            f"{HMM_ENUM_MAX}. Use theory.language.entropy_mc(lang, key, num) for an estimate with a standard error."
        )
    a = lang.init[None, :] * lang.emit.T  # (V, H): q(x_0, h_0)
    for _ in range(1, L):
        a = (a @ lang.trans)[:, None, :] * lang.emit.T[None]  # (M, V, H)
        a = a.reshape(-1, H)
    return float(xlogx_rows(a.sum(axis=1)[None])[0])


def cesaro_limit(init: np.ndarray, trans: np.ndarray, max_squarings: int = 200) -> np.ndarray:
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


def markov_entropy_rate(lang) -> float:
    """pi . h with pi the Cesàro-stationary law reached from init and h_a = H(P[a, :]) (nats per token)."""
    pi = cesaro_limit(lang.init, lang.trans)
    return float(pi @ xlogx_rows(lang.trans))


def ngram_entropy_rate(lang) -> float:
    """The Markov entropy rate on (n-1)-tuples: pi . h with h_c = H(cond[c, :]) (nats per token)."""
    V, n = lang.vocab_size, lang.order
    S = V ** (n - 1)
    check_size(
        8 * S * S * 3,
        f"entropy_rate's dense tuple chain of S = V**(n-1) = {S} states",
        None,
        "Estimate the rate as entropy(lang.with_length(L + 1)) - entropy(lang.with_length(L)) at large L",
    )
    cond = lang.cond.reshape(V, V ** (n - 2), V)
    T = np.zeros((V, V ** (n - 2), V ** (n - 2), V))  # tuple (a, c) -> tuple (c, b)
    idx = np.arange(V ** (n - 2))
    T[:, idx, idx, :] = cond
    pi = cesaro_limit(lang.init, T.reshape(S, S))
    return float(pi @ xlogx_rows(lang.cond.reshape(-1, V)))


# ---- exact sampling from q ----------------------------------------------------------------------------
def _inv_cdf(cdf, u):
    """Rows of a CDF (..., K) and uniforms (...,) -> indices (...,) (float64 inverse CDF)."""
    v = jnp.sum(cdf <= (u * cdf[..., -1])[..., None], axis=-1)
    return jnp.minimum(v, cdf.shape[-1] - 1).astype(jnp.int32)


def uniforms(key, length: int, num: int) -> jax.Array:
    """(L, 2, num) float64 uniforms: one for the token and one for the hidden state per position."""
    return jax.random.uniform(key, (length, 2, int(num)), dtype=jnp.float64)


def sample_markov(lang, key, num: int) -> jax.Array:
    u = uniforms(key, lang.length, num)
    return _sample_markov(jnp.cumsum(jnp.asarray(lang.init)), jnp.cumsum(jnp.asarray(lang.trans), axis=1), u)


def sample_ngram(lang, key, num: int) -> jax.Array:
    u = uniforms(key, lang.length, num)
    V, n = lang.vocab_size, lang.order
    return _sample_ngram(
        jnp.cumsum(jnp.asarray(lang.init)), jnp.cumsum(jnp.asarray(lang.cond.reshape(-1, V)), axis=1), u, n
    )


def sample_hmm(lang, key, num: int) -> jax.Array:
    u = uniforms(key, lang.length, num)
    return _sample_hmm(
        jnp.cumsum(jnp.asarray(lang.init)),
        jnp.cumsum(jnp.asarray(lang.trans), axis=1),
        jnp.cumsum(jnp.asarray(lang.emit), axis=1),
        u,
    )


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

    _, xs = jax.lax.scan(step, ctx0, u[n - 1 :])  # (L-n+1, num)
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
