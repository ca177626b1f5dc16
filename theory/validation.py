"""Public input validators used by every module: float64, probability tables, sizes, steps.

The library never switches JAX to 64-bit on import (that would change the numerics of every other
JAX program in the process). Exact functions call :func:`require_x64` and refuse to run in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

#: Default memory budget for one enumerated table (bytes). Override per call with ``max_bytes``.
DEFAULT_MAX_BYTES = 8 * 2**30

PROB_TOL = 1e-9

X64_HELP = (
    "mdm-theory computes exact quantities in float64, but JAX is in 32-bit mode. Turn 64-bit on "
    "once at program start, before creating arrays: `jax.config.update('jax_enable_x64', True)` "
    "(or set the environment variable JAX_ENABLE_X64=1). The library does not flip this for you."
)


def require_x64(where: str = "this function") -> None:
    """Raise ``TypeError`` unless JAX's 64-bit mode is on."""
    if not jax.config.read("jax_enable_x64"):
        raise TypeError(f"{where} needs float64. {X64_HELP}")


def as_f64(x, name: str = "array") -> jax.Array:
    """Convert to a float64 JAX array; refuse float32/float16 input and 32-bit JAX mode."""
    require_x64(f"`{name}`")
    dt = getattr(x, "dtype", None)
    if dt is not None and np.issubdtype(np.dtype(dt), np.floating) and np.dtype(dt).itemsize < 8:
        raise TypeError(
            f"`{name}` has dtype {np.dtype(dt)}; exact quantities need float64. "
            f"Pass a float64 array (e.g. np.asarray(x, dtype=np.float64))."
        )
    return jnp.asarray(x, dtype=jnp.float64)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_size(num_bytes: float, what: str, max_bytes: float | None, alternative: str) -> None:
    """Raise ``ValueError`` if an enumerated table would exceed the memory budget."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if num_bytes > limit:
        raise ValueError(
            f"{what} would need {human_bytes(num_bytes)}, more than the budget of "
            f"{human_bytes(limit)}. {alternative} (or pass a larger max_bytes if you have the memory)."
        )


SCALABLE_HINT = (
    "For long sequences use a structured language with exact conditionals (synthetic.markov: "
    "Markov / n-gram / HMM at any length) and the Monte-Carlo sampler theory.sampling.sample"
)


def check_vocab_length(vocab_size, length) -> tuple[int, int]:
    """Validate V >= 2 and L >= 1 as Python ints."""
    for name, val, lo in (("vocab_size", vocab_size, 2), ("length", length, 1)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
        if val < lo:
            raise ValueError(f"{name} must be >= {lo}, got {val}")
    return int(vocab_size), int(length)


def check_distribution(p, name: str = "distribution", axis: int = -1, tol: float = PROB_TOL) -> np.ndarray:
    """Validate a (batch of) probability vector(s) along ``axis``; returns a float64 numpy array."""
    arr = np.asarray(p)
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
        raise TypeError(f"`{name}` has dtype {arr.dtype}; pass float64.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite entries.")
    if np.any(arr < 0):
        raise ValueError(f"`{name}` has negative entries (min {arr.min():.3g}); probabilities must be >= 0.")
    sums = arr.sum(axis=axis)
    bad = np.abs(sums - 1.0) > tol
    if np.any(bad):
        worst = float(np.max(np.abs(sums - 1.0)))
        raise ValueError(
            f"`{name}` does not sum to 1 along axis {axis} (largest deviation {worst:.3g} > {tol:g}). "
            f"Normalise it first (p / p.sum())."
        )
    return arr


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int >= 1, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}: a sampler needs at least one step.")
    return int(steps)


def num_states(vocab_size: int, length: int) -> int:
    """(V+1)**L as a Python int (no overflow)."""
    return (vocab_size + 1) ** length


def log2(n: int) -> float:
    return math.log2(n)
