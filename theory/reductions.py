"""Sums over the last axis added in a fixed order, so that every caller gets the same bits.

XLA chooses the order of a reduction per shape, fusion and compile options, so ``jnp.sum(x, -1)`` over the
same V numbers can round differently in two programs. Where two code paths must agree bit for bit (the
Markov oracle's ``marginals``, ``marginals_at`` and ``scores``; the policies' entropy on either of them; the
sampler's inverse-CDF draws), they add left to right in unrolled code, for up to :data:`UNROLLED` terms.
"""

from __future__ import annotations

import jax.numpy as jnp

#: Up to this many terms the sums are unrolled, left to right; above it they are XLA's reductions.
UNROLLED = 16


def sum_last(x):
    """Sum over the last axis, left to right for up to :data:`UNROLLED` terms (``jnp.sum`` above)."""
    n = x.shape[-1]
    if n > UNROLLED:
        return jnp.sum(x, axis=-1)
    out = x[..., 0]
    for v in range(1, n):
        out = out + x[..., v]
    return out


def sum_terms(terms):
    """Left-to-right sum of a list of equally shaped arrays: :func:`sum_last` of their stack, bit for bit, for up
    to :data:`UNROLLED` terms (above that :func:`sum_last` is XLA's reduction and the two may differ)."""
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def cumsum_last(p):
    """Cumulative sum over the last axis; left to right, unrolled, for up to :data:`UNROLLED` terms."""
    V = p.shape[-1]
    if V > UNROLLED:
        return jnp.cumsum(p, axis=-1)
    out = [p[..., 0]]
    for v in range(1, V):
        out.append(out[-1] + p[..., v])
    return jnp.stack(out, axis=-1)
