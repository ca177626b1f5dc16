"""Hypothesis strategies shared by every property test: small instances of the MDM world."""
from __future__ import annotations

import jax
import numpy as np
from hypothesis import strategies as st

from synthetic import languages
from theory import policies, schedules
from theory.joint import Joint

seeds = st.integers(0, 2**31 - 1)
concentrations = st.sampled_from([0.1, 0.3, 1.0, 3.0])


@st.composite
def vocab_length(draw, max_states: int = 4**5, min_length: int = 1, max_length: int = 6):
    """(V, L) with (V+1)**L <= max_states."""
    V = draw(st.integers(2, 4))
    Lmax = min_length
    while Lmax + 1 <= max_length and (V + 1) ** (Lmax + 1) <= max_states:
        Lmax += 1
    L = draw(st.integers(min_length, Lmax))
    return V, L


@st.composite
def joints(draw, max_states: int = 4**5, min_length: int = 1, max_length: int = 6, sparse: bool = True):
    """A random Joint: Dirichlet table, optionally with some sequences zeroed (support holes)."""
    V, L = draw(vocab_length(max_states, min_length, max_length))
    seed = draw(seeds)
    q = languages.dirichlet(jax.random.PRNGKey(seed), V, L, draw(concentrations))
    if sparse and draw(st.booleans()):
        rng = np.random.default_rng(seed)
        p = np.array(q.probs)
        keep = rng.random(p.size) < 0.6
        keep[rng.integers(p.size)] = True
        p = p * keep
        q = Joint(p / p.sum(), V, L)
    return q


def schedule_list():
    return [
        schedules.linear(),
        schedules.cosine(),
        schedules.cosine_squared(),
        schedules.polynomial(2.0),
        schedules.polynomial(0.5),
        schedules.geometric(),
        schedules.beta_cdf(2.0, 0.5),
        schedules.sin2_beta(0.9, 0.3),
    ]


schedules_st = st.sampled_from(schedule_list())
steps_st = st.integers(1, 7)
reveals = st.sampled_from(["fixed", "bernoulli"])


@st.composite
def value_blind_policies(draw, length: int):
    """Policies whose choice of positions does not look at the values they reveal."""
    kind = draw(st.sampled_from(["random", "l2r", "fixed"]))
    if kind == "random":
        return policies.RandomOrder()
    if kind == "l2r":
        return policies.LeftToRight()
    return policies.FixedOrder(tuple(draw(st.permutations(range(length)))))


any_proxy = st.sampled_from(list(policies.PROXIES))


# --- issue 4: Feng2025 -------------------------------------------------------------------------------
@st.composite
def entropy_ngrams(draw, max_states: int = 4**5):
    """A random full-support n-gram (order 2 or 3) with a controlled entropy rate, small enough to enumerate."""
    V = draw(st.sampled_from([2, 3]))
    order = draw(st.sampled_from([2, 3]))
    Lmax = order
    while (V + 1) ** (Lmax + 1) <= max_states:
        Lmax += 1
    L = draw(st.integers(order, max(order, Lmax)))
    frac = draw(st.sampled_from([0.2, 0.5, 0.8]))
    init = draw(st.sampled_from(["stationary", "uniform"]))
    return languages.entropy_ngram(jax.random.PRNGKey(draw(seeds)), V, order, L, frac * float(np.log(V)), init=init)
