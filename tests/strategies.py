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


# ---- issue 3: structured languages (Markov / n-gram / HMM) for synthetic.markov -------------------
def _sparsify(rng, p, keep_prob=0.6):
    """Zero random entries of each row of a stochastic array (..., V), keeping >= 1 per row; renormalise."""
    keep = rng.random(p.shape) < keep_prob
    flat = keep.reshape(-1, p.shape[-1])
    flat[np.arange(flat.shape[0]), rng.integers(p.shape[-1], size=flat.shape[0])] = True
    q = p * flat.reshape(p.shape)
    return q / q.sum(-1, keepdims=True)


def fibonacci_ngram(vocab_size: int, length: int):
    """Deterministic trigram x_i = x_{i-1} + x_{i-2} mod V with uniform (x_0, x_1)."""
    V = vocab_size
    a, b, c = np.meshgrid(np.arange(V), np.arange(V), np.arange(V), indexing="ij")
    cond = (c == (a + b) % V).astype(np.float64)
    return languages.NGram(np.full(V * V, 1.0 / (V * V)), cond, length)


@st.composite
def structured_languages(draw, max_states: int = 3**7, max_length: int = 7):
    """A random MarkovChain, NGram (n = 2, 3) or HMM with (V+1)**L <= max_states (enumerable).

    Options: sparse (random zero transitions/emissions) or deterministic (Fibonacci mod V trigram,
    permutation Markov chain), so that some partial states have probability 0.
    """
    kind = draw(st.sampled_from(["markov", "ngram2", "ngram3", "hmm"]))
    min_length = 3 if kind == "ngram3" else 1
    V, L = draw(vocab_length(max_states, min_length, max_length))
    seed = draw(seeds)
    key = jax.random.PRNGKey(seed)
    conc = draw(concentrations)
    rng = np.random.default_rng(seed)
    special = draw(st.sampled_from(["dense", "sparse", "deterministic"]))
    if kind == "markov":
        lang = languages.random_markov(key, V, L, conc)
        if special == "sparse":
            lang = languages.MarkovChain(_sparsify(rng, lang.init), _sparsify(rng, lang.trans), L)
        elif special == "deterministic":
            lang = languages.MarkovChain(lang.init, np.eye(V)[rng.permutation(V)], L)
        return lang
    if kind in ("ngram2", "ngram3"):
        n = 2 if kind == "ngram2" else 3
        if special == "deterministic" and n == 3:
            return fibonacci_ngram(V, L)
        lang = languages.random_ngram(key, V, n, L, conc)
        if special != "dense":
            lang = languages.NGram(
                _sparsify(rng, lang.init), _sparsify(rng, lang.cond, 0.4 if special == "deterministic" else 0.6), L
            )
        return lang
    H = draw(st.integers(1, 3))
    lang = languages.random_hmm(key, H, V, L, conc)
    if special != "dense":
        lang = languages.HMM(lang.init, _sparsify(rng, lang.trans), _sparsify(rng, lang.emit), L)
    return lang


# ---- issue 6: learned denoisers ------------------------------------------------------------------
model_kinds = st.sampled_from(["transformer", "tabular", "lowrank"])


@st.composite
def partial_state_batches(draw, vocab_size: int, length: int, batch: int | None = None, max_batch: int = 8):
    """A batch (B, L) of partial states with entries in 0..V (V = mask), as int64 numpy (B = batch if given)."""
    B = batch if batch is not None else draw(st.integers(1, max_batch))
    flat = draw(st.lists(st.integers(0, vocab_size), min_size=B * length, max_size=B * length))
    return np.asarray(flat, dtype=np.int64).reshape(B, length)


# ---- issue 5 (BenHamu2025: EB sampler, error decomposition, tasks) --------------------------------
eb_gammas = st.sampled_from([0.0, 1e-3, 0.01, 0.1, 0.25, 0.5, 1.0, 1.5, float("inf")])


@st.composite
def masked_marginals(draw, max_batch: int = 6, max_length: int = 8):
    """(states (B, L) with entries in 0..V, marginals (B, L, V)) as a denoiser would give them:
    Dirichlet rows at masked positions (some one-hot: zero entropy), one-hot at visible ones."""
    V = draw(st.sampled_from([2, 3, 5]))  # few distinct shapes: JAX compiles once per shape
    L = draw(st.sampled_from([n for n in (1, 3, 5, 8) if n <= max_length]))
    B = draw(st.sampled_from([n for n in (1, 4, 6) if n <= max_batch]))
    rng = np.random.default_rng(draw(seeds))
    conc = draw(concentrations)
    m = rng.dirichlet(np.full(V, conc), size=(B, L))  # (B, L, V)
    onehot_rows = rng.random((B, L)) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    m[onehot_rows] = np.eye(V)[rng.integers(V, size=int(onehot_rows.sum()))]
    masked = rng.random((B, L)) < draw(st.sampled_from([0.5, 0.9, 1.0]))
    vals = rng.integers(V, size=(B, L))
    states = np.where(masked, V, vals)
    m = np.where(masked[..., None], m, np.eye(V)[vals])
    return states.astype(np.int64), m


def perturbed_table(joint, seed: int, eps: float):
    """Conditionals table ((V+1)**L, L, V) = (1 - eps) q + eps r, r a random positive law per row."""

    V, _L = joint.vocab_size, joint.length
    t = np.asarray(joint.denoiser().table())
    r = np.random.default_rng(seed).dirichlet(np.ones(V), size=t.shape[:2])
    return (1.0 - eps) * t + eps * r


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
