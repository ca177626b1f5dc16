"""A deliberately plain reference implementation of the exact sampler law (pure Python loops).

It shares no code with :mod:`theory.sampling` or :mod:`theory.denoiser`: conditionals are computed by
summing q over every sequence consistent with a state, reveal sets and values by ``itertools``. It is
used by the tests as an independent check of :func:`theory.sampling.exact_law` and by
``benchmarks/exact_engine.py`` as the baseline the vectorised engine is compared with. Only for tiny
instances (its cost is about (2V+1)**L * V**L per step).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from math import comb

import numpy as np


def reference_conditionals(probs, vocab_size: int, length: int, state) -> dict:
    """{i: [q(x_i = v | visible part of state) for v]} for masked i, by brute-force summation."""
    V, L = vocab_size, length
    seqs = list(itertools.product(range(V), repeat=L))
    cons = [(x, p) for x, p in zip(seqs, probs) if all(s == V or s == t for s, t in zip(state, x))]
    total = sum(p for _, p in cons)
    out = {}
    for i in range(L):
        if state[i] == V:
            if total == 0:
                out[i] = [1.0 / V] * V
            else:
                out[i] = [sum(p for x, p in cons if x[i] == v) / total for v in range(V)]
    return out


def reference_law(probs, vocab_size: int, length: int, *, counts=None, reveal_probs=None, order: str = "random"):
    """Exact law over V**L (numpy array) for ``order`` in {"random", "left_to_right"} with fixed
    ``counts`` (k_1..k_N) or Bernoulli ``reveal_probs`` (p_1..p_N, random order only)."""
    V, L = vocab_size, length
    probs = [float(p) for p in np.asarray(probs)]
    dist = {tuple([V] * L): 1.0}
    plan = counts if counts is not None else reveal_probs
    for step_value in plan:
        new: defaultdict[tuple, float] = defaultdict(float)
        for z, pz in dist.items():
            masked = [i for i in range(L) if z[i] == V]
            cond = reference_conditionals(probs, V, L, z)
            sets = []
            if counts is not None:
                c = min(int(step_value), len(masked))
                if order == "random":
                    sets = [(S, 1.0 / comb(len(masked), c)) for S in itertools.combinations(masked, c)]
                else:
                    sets = [(tuple(masked[:c]), 1.0)]
            else:
                p = float(step_value)
                for r in range(len(masked) + 1):
                    for S in itertools.combinations(masked, r):
                        sets.append((S, p**r * (1 - p) ** (len(masked) - r)))
            for S, w in sets:
                if w == 0:
                    continue
                for vals in itertools.product(range(V), repeat=len(S)):
                    pv = 1.0
                    for i, v in zip(S, vals):
                        pv *= cond[i][v]
                    if pv == 0:
                        continue
                    z2 = list(z)
                    for i, v in zip(S, vals):
                        z2[i] = v
                    new[tuple(z2)] += pz * w * pv
        dist = new
    out = np.zeros(V**L)
    for z, p in dist.items():
        if V in z:
            raise ValueError("plan left masked tokens")
        idx = 0
        for t in z:
            idx = idx * V + t
        out[idx] += p
    return out
