"""Frozen dataclasses as JAX pytrees: traced data fields, static metadata compared by value.

Policies (:mod:`theory.policies`) and denoisers (:mod:`theory.denoiser`, :mod:`synthetic`) are registered
with :func:`register_dataclass`, so the Monte-Carlo sampler passes them to ``jit`` as traced arguments:
objects that differ only in their data (EntropyBounded's gamma, two exact denoisers of the same (V, L),
two Markov chains of the same shape) share one compilation. ``drop_fields`` are host-side conveniences
that the traced code never reads (e.g. the Joint an exact denoiser was built from): they are left out of
the pytree and are None in unflattened copies, which only live inside traced code.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


def register_dataclass(cls=None, *, data_fields: tuple = (), drop_fields: tuple = ()):
    """Register a frozen dataclass as a pytree (class decorator); unflattening bypasses ``__init__``."""

    def wrap(c):
        names = [f.name for f in dataclasses.fields(c)]
        meta = tuple(n for n in names if n not in data_fields and n not in drop_fields)

        def flatten(obj):
            return [getattr(obj, n) for n in data_fields], tuple(getattr(obj, n) for n in meta)

        def unflatten(aux, children):
            obj = object.__new__(c)
            for n, v in zip(meta, aux):
                object.__setattr__(obj, n, v)
            for n, v in zip(data_fields, children):
                object.__setattr__(obj, n, v)
            for n in drop_fields:
                object.__setattr__(obj, n, None)
            return obj

        jax.tree_util.register_pytree_node(c, flatten, unflatten)
        return c

    return wrap if cls is None else wrap(cls)


def traceable(obj) -> bool:
    """True if every leaf of ``obj`` is an array or a number, so ``jit`` can take it as a traced argument.

    A registered dataclass holding an unregistered object (e.g. a smoothed FunctionDenoiser) is not
    traceable; the sampler then passes it as a static argument (hashed by identity or by value).
    """
    leaves = jax.tree_util.tree_leaves(obj)
    if len(leaves) == 1 and leaves[0] is obj:
        return False
    return all(isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, bool)) for x in leaves)
