"""Partially masked sequences.

A partial state of length L over a vocabulary of size V is an integer vector ``z`` with entries in
``{0, ..., V}``; the value ``V`` is the mask token (``mask_id(V) == V``). Flat indices are row-major
with position 0 most significant, both for clean sequences in ``V**L`` and for partial states in
``(V+1)**L``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .validation import check_vocab_length


def mask_id(vocab_size: int) -> int:
    """The mask token of a vocabulary of size V is the integer V."""
    return int(vocab_size)


def strides(base: int, length: int) -> np.ndarray:
    """Row-major strides ``base**(L-1-i)`` for i = 0..L-1, int64, shape (L,)."""
    return (base ** np.arange(length - 1, -1, -1, dtype=np.int64)).astype(np.int64)


def encode(tokens, base: int):
    """Flat row-major index of ``tokens`` (..., L) with digits in [0, base). Works on numpy and jax arrays."""
    L = tokens.shape[-1]
    s = strides(base, L)
    if isinstance(tokens, np.ndarray):
        return tokens.astype(np.int64) @ s
    return jnp.asarray(tokens).astype(jnp.int64) @ jnp.asarray(s)


def decode(index, base: int, length: int) -> np.ndarray:
    """Inverse of :func:`encode`: (...,) indices -> (..., L) digits (numpy int64)."""
    idx = np.asarray(index, dtype=np.int64)
    s = strides(base, length)
    return (idx[..., None] // s) % base


def encode_state(states, vocab_size: int):
    """Index of partial states (..., L) in ``(V+1)**L``."""
    return encode(states, vocab_size + 1)


def decode_state(index, vocab_size: int, length: int) -> np.ndarray:
    """Partial states (..., L) from indices in ``(V+1)**L``."""
    return decode(index, vocab_size + 1, length)


def encode_sequence(tokens, vocab_size: int):
    """Index of clean sequences (..., L) in ``V**L``."""
    return encode(tokens, vocab_size)


def decode_sequence(index, vocab_size: int, length: int) -> np.ndarray:
    """Clean sequences (..., L) from indices in ``V**L``."""
    return decode(index, vocab_size, length)


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every clean sequence, shape (V**L, L), in flat-index order."""
    V, L = check_vocab_length(vocab_size, length)
    return decode(np.arange(V**L), V, L)


def all_states(vocab_size: int, length: int) -> np.ndarray:
    """Every partial state, shape ((V+1)**L, L), in flat-index order."""
    V, L = check_vocab_length(vocab_size, length)
    return decode(np.arange((V + 1) ** L), V + 1, L)


def is_masked(states, vocab_size: int):
    """Boolean (..., L): True where the position is masked."""
    return states == vocab_size


def visible(states, vocab_size: int):
    """Boolean (..., L): True where the position is revealed."""
    return states != vocab_size


def all_masked(vocab_size: int, length: int) -> np.ndarray:
    """The fully masked state, shape (L,)."""
    return np.full((length,), vocab_size, dtype=np.int64)


def sequence_index_of_state(state_index, vocab_size: int, length: int) -> np.ndarray:
    """Map indices of fully revealed states in ``(V+1)**L`` to indices in ``V**L``."""
    toks = decode_state(state_index, vocab_size, length)
    if np.any(toks == vocab_size):
        raise ValueError("sequence_index_of_state got a state that still has masked positions.")
    return encode(toks, vocab_size)


def _check_int_batch(arr_in, length: int, name: str, top: int, what: str) -> np.ndarray:
    arr = np.asarray(arr_in)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != length:
        raise ValueError(f"{name} must have shape (B, {length}), got {np.shape(arr_in)}.")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers in 0..{top} ({what}), got dtype {arr.dtype}.")
    if arr.size and (arr.min() < 0 or arr.max() > top):
        raise ValueError(f"{name} must have entries in 0..{top} ({what}); got range [{arr.min()}, {arr.max()}].")
    return arr.astype(np.int64)


def check_states(states, vocab_size: int, length: int) -> np.ndarray:
    """Validate a batch of partial states (B, L) (or (L,)) with entries in {0..V}; returns int64 numpy (B, L)."""
    return _check_int_batch(states, length, "states", vocab_size, f"mask = {vocab_size}")


def check_sequences(tokens, vocab_size: int, length: int) -> np.ndarray:
    """Validate clean sequences (B, L) (or (L,)) with entries in {0..V-1}; returns int64 numpy (B, L)."""
    return _check_int_batch(tokens, length, "tokens", vocab_size - 1, f"clean sequences, no mask token {vocab_size}")
