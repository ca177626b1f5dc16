"""``jax.random.fold_in`` for whole batches of raw keys at once, bit for bit, without XLA:CPU's loop.

The Monte-Carlo samplers derive every random number from ``fold_in`` (see the key schedule in
:mod:`theory.sampling`): per step, a few folds per sample and one per revealed position. JAX lowers its
Threefry-2x32 hash on CPU as a 5-trip ``while`` loop; on the small arrays of a sampler step (a few hundred
keys) the loop's per-trip overhead dominates, about 65 us per call for 256 keys at L = 1024 (a third of a
static-order step). :func:`fold_in` computes the same hash with the 20 rounds written out, elementwise over
any batch shape: one fused XLA loop, a few microseconds.

It applies to raw keys of JAX's default implementation (``jax.random.PRNGKey``: uint32 (..., 2), with
``jax_default_prng_impl = "threefry2x32"``); typed keys or another implementation fall back to
``jax.random.fold_in`` (same numbers, slower). ``tests/test_sampling_speed_paths.py`` checks it against
``jax.random.fold_in`` bit for bit.

Threefry-2x32 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
key (k0, k1), k2 = k0 ^ k1 ^ 0x1BD11BDA; the counter (x0, x1) gets k0, k1 added, then 5 groups of 4
rounds (x0 += x1; x1 = rotl(x1, r) ^ x0, rotations 13 15 26 6 / 17 29 16 24 alternating), each group
followed by a key injection (x0 += ks[(g+1) % 3]; x1 += ks[(g+2) % 3] + g + 1). ``fold_in(key, d)`` is the
hash of the counter (0, d) under ``key``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32, 20 rounds, elementwise over broadcast uint32 arrays: returns (y0, y1)."""
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = x0 + k0
    x1 = x1 + k1
    for g in range(5):
        for r in _ROTATIONS[g % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(g + 1) % 3]
        x1 = x1 + ks[(g + 2) % 3] + np.uint32(g + 1)
    return x0, x1


def fast_keys(keys) -> bool:
    """Whether ``keys`` are raw Threefry keys (uint32, last axis 2, default implementation) that :func:`fold_in`
    hashes itself."""
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    return (
        not _typed(keys)
        and keys.dtype == jnp.uint32
        and keys.ndim >= 1
        and keys.shape[-1] == 2
        and getattr(jax.config, "jax_default_prng_impl", "threefry2x32") == "threefry2x32"
    )


@jax.jit
def fold_in(keys, data):
    """``jax.random.fold_in`` of a batch: ``keys`` (..., 2) raw uint32 keys (or typed keys (...)), ``data``
    integers broadcastable against the keys' batch shape -> keys of the broadcast batch shape, bit for bit
    ``jax.random.fold_in(keys[i], data[i])``."""
    data = jnp.asarray(data)
    if fast_keys(keys):
        d = jnp.broadcast_to(data, jnp.broadcast_shapes(keys.shape[:-1], data.shape)).astype(jnp.uint32)
        y0, y1 = threefry2x32(keys[..., 0], keys[..., 1], jnp.zeros_like(d), d)
        return jnp.stack([y0, y1], axis=-1)
    batch = keys.shape if _typed(keys) else keys.shape[:-1]
    shape = jnp.broadcast_shapes(batch, data.shape)
    kb = jnp.broadcast_to(keys, shape + keys.shape[len(batch) :]).reshape((-1,) + keys.shape[len(batch) :])
    out = jax.vmap(jax.random.fold_in)(kb, jnp.broadcast_to(data, shape).reshape(-1))
    return out.reshape(shape + out.shape[1:])


def _typed(keys) -> bool:
    return jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)


def bits64(keys):
    """The 64 random bits of each key (..., 2) uint32, first word high -> (...,) uint64 (typed keys: their data)."""
    raw = jax.random.key_data(keys) if _typed(keys) else keys
    b = raw.astype(jnp.uint64)
    return (b[..., 0] << jnp.uint64(32)) | b[..., 1]
