"""Sampling from an MDM: the exact law of the generated sequence, and a Monte-Carlo sampler.

Both run the same process. Start from the all-mask state; at each step:

1. the denoiser gives per-position conditionals at the current state z;
2. a number of tokens to reveal is fixed by the schedule — ``reveal="fixed"``: k_n from
   :func:`theory.schedules.fixed_counts`; ``reveal="bernoulli"``: Binomial(#masked, p_n) with p_n from
   :func:`theory.schedules.reveal_probs` (with :class:`RandomOrder` this is MDLM/MD4 ancestral sampling,
   each masked token revealed independently) — unless the policy is adaptive (``uses_count=False``);
3. the policy picks which masked positions to reveal;
4. their values are drawn **independently** from the denoiser's conditionals (``values="joint"`` in
   :func:`exact_law` instead draws them jointly from q's conditional, the "data path" q_phi of
   BenHamu2025 / Feng2025, and needs the exact denoiser).

Monte-Carlo fast path: for policies with a static reveal order (``policy.order``, see
:mod:`theory.policies`: RandomOrder, LeftToRight, FixedOrder) and counts from the schedule, the sampler
draws the order once per sample and at step n reveals the next ``count`` positions of it, asking the
denoiser only for those positions (``denoiser.marginals_at(states, positions)`` if it has one, else a
gather from ``marginals``). Same law, cost O(count) instead of O(L) per step for such denoisers.

NFE (number of function evaluations) counts the steps that reveal at least one token: a step that
reveals nothing needs no denoiser output (its call can be skipped/cached).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import binom

from .validation import SCALABLE_HINT, check_size, check_steps, require_x64
from .denoiser import ExactDenoiser, check_denoiser, exact_denoiser
from .joint import Joint
from .policies import RandomOrder, check_policy
from .schedules import Schedule, check_counts, fixed_counts, linear, reveal_probs
from .states import strides

REVEALS = ("fixed", "bernoulli")
_CHUNK = 1 << 22  # transitions per vectorised block


@dataclass(frozen=True)
class Law:
    """Exact law of the generated sequence: ``probs`` (V**L,), ``expected_nfe``, ``steps_run``."""

    probs: jax.Array
    expected_nfe: float
    steps_run: int


@dataclass(frozen=True)
class Samples:
    """Monte-Carlo samples: ``tokens`` (num, L) and ``nfe`` (num,) denoiser calls per sample."""

    tokens: jax.Array
    nfe: jax.Array


@dataclass(frozen=True)
class _Plan:
    mode: str  # "fixed" | "bernoulli" | "adaptive"
    values: np.ndarray  # counts (N,) | probs (N,) | empty
    max_steps: int


def make_plan(policy, length: int, steps=None, *, reveal: str = "fixed", schedule: Schedule | None = None,
              counts=None) -> _Plan:
    """Resolve (steps, reveal, schedule, counts) into per-step counts or reveal probabilities."""
    if reveal not in REVEALS:
        raise ValueError(f"reveal must be one of {REVEALS}, got {reveal!r}.")
    if not getattr(policy, "uses_count", True):
        if counts is not None:
            raise ValueError(f"{type(policy).__name__} chooses its own counts; do not pass counts.")
        return _Plan("adaptive", np.zeros(0), length)
    if counts is not None:
        if steps is not None and len(counts) != steps:
            raise ValueError(f"got steps={steps} but {len(counts)} counts.")
        if reveal != "fixed":
            raise ValueError("explicit counts need reveal='fixed'.")
        c = check_counts(counts, length)
        return _Plan("fixed", c, len(c))
    if steps is None:
        raise ValueError("pass steps (an int >= 1) or counts.")
    N = check_steps(steps)
    schedule = linear() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a theory.schedules.Schedule, got {type(schedule).__name__}.")
    if reveal == "fixed":
        return _Plan("fixed", fixed_counts(schedule, N, length), N)
    return _Plan("bernoulli", reveal_probs(schedule, N), N)


# ================================ exact law ==========================================================
def _bucket(n: int) -> int:
    """Pad batch sizes to powers of two (>= 8) so jitted calls compile for few shapes."""
    return max(8, 1 << (int(n) - 1).bit_length())


def batched_marginals(denoiser, states: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """Denoiser marginals (K, L, V) of numpy states (K, L), in padded power-of-two chunks (so a denoiser
    whose ``marginals`` is jitted compiles for few shapes)."""
    V = denoiser.vocab_size
    out = []
    for i in range(0, len(states), chunk):
        part = states[i:i + chunk]
        b = _bucket(len(part))
        padded = np.full((b, part.shape[1]), V, dtype=np.int32)
        padded[: len(part)] = part
        out.append(np.asarray(denoiser.marginals(jnp.asarray(padded)))[: len(part)])
    return np.concatenate(out) if out else np.zeros((0,) + states.shape[1:] + (V,))


def _step_rows(policy, plan: _Plan, n: int, states: np.ndarray, marg: np.ndarray):
    """Rows (parent, subset, weight) of one step for every frontier state."""
    V = marg.shape[-1]
    K = states.shape[0]
    k = (states == V).sum(1)
    if plan.mode == "fixed":
        c = np.minimum(plan.values[n], k)
        return policy.reveal_distribution(states, marg, c)
    if plan.mode == "adaptive":
        return policy.reveal_distribution(states, marg, np.zeros(K, dtype=np.int64))
    # bernoulli: count ~ Binomial(k, p_n), then the policy's reveal sets of that size
    p = float(plan.values[n])
    par, cnt, w = [], [], []
    for c in range(int(k.max()) + 1 if K else 0):
        pc = binom.pmf(c, k, p)
        rows = np.nonzero(pc > 0)[0]
        par.append(rows)
        cnt.append(np.full(len(rows), c))
        w.append(pc[rows])
    par, cnt, w = np.concatenate(par), np.concatenate(cnt), np.concatenate(w)
    p2, sub, w2 = policy.reveal_distribution(states[par], marg[par], cnt)
    return par[p2], sub, w[p2] * w2


def value_combos(vocab_size: int, size: int) -> np.ndarray:
    """All V**s value assignments of s revealed positions, shape (V**s, s), row-major."""
    return np.stack(np.meshgrid(*[np.arange(vocab_size)] * size, indexing="ij"), -1).reshape(-1, size)


def reveal_children(parent_idx, positions, vocab_size: int, length: int):
    """Indices in (V+1)**L of the V**s children of masked states ``parent_idx`` (R,) when the masked
    ``positions`` (R, s) are revealed; returns (children (R, V**s), combos (V**s, s))."""
    V = vocab_size
    st = strides(V + 1, length)
    s = positions.shape[1]
    combos = value_combos(V, s)
    sp = st[positions]  # (R, s)
    child = np.repeat((parent_idx - V * sp.sum(1))[:, None], combos.shape[0], axis=1)  # revealed set to 0
    for j in range(s):
        child += sp[:, j:j + 1] * combos[None, :, j]  # (R, V**s)
    return child, combos


def _fill(idx, prob, marg, parent, subsets, weights, V, L, values, cyl):
    """Expand reveal sets into child states; yields (child_idx, child_prob) blocks of <= ~_CHUNK transitions."""
    sizes = subsets.sum(1)
    for s in np.unique(sizes):
        s = int(s)
        rows = np.nonzero(sizes == s)[0]
        if s == 0:
            yield idx[parent[rows]], prob[parent[rows]] * weights[rows]
            continue
        per = max(1, _CHUNK // (V**s))
        for a in range(0, len(rows), per):
            r = rows[a:a + per]
            pos = np.nonzero(subsets[r])[1].reshape(len(r), s)  # (R, s)
            par = parent[r]
            child, combos = reveal_children(idx[par], pos, V, L)  # (R, V**s)
            w = prob[par] * weights[r]  # (R,)
            if values == "independent":
                m = marg[par[:, None], pos]  # (R, s, V)
                pv = np.ones((len(r), combos.shape[0]))
                for j in range(s):
                    pv *= m[:, j, :][:, combos[:, j]]
                cw = w[:, None] * pv
            else:  # joint: q(x_S = v | z) = C[child] / C[z]
                den = cyl[idx[par]]
                cw = w[:, None] * cyl[child] / np.where(den > 0, den, 1.0)[:, None]
            yield child.reshape(-1), cw.reshape(-1)


def exact_law(joint_or_denoiser, policy=None, steps=None, *, reveal: str = "fixed", schedule: Schedule | None = None,
              counts=None, denoiser=None, values: str = "independent", max_bytes: float | None = None,
              callback: Callable | None = None) -> Law:
    """Exact distribution over V**L of the sequence the sampler generates.

    Parameters
    ----------
    joint_or_denoiser: a :class:`Joint` (its exact denoiser is used unless ``denoiser`` is given) or
        any Denoiser (then ``values`` must be "independent").
    policy: a reveal policy (default :class:`RandomOrder`).
    steps, reveal, schedule, counts: the step plan (see module docstring); ``steps`` is N.
    values: "independent" (the sampler) or "joint" (draw revealed values from q's joint conditional).
    callback: called as ``callback(n, states (K, L), probs (K,), marginals (K, L, V), parent (R,),
        subsets (R, L), weights (R,))`` before each step, for expectations along the path.

    Propagates the distribution over partial states step by step (a sparse frontier, merged on the
    dense index space (V+1)**L). Cost: the number of (state, reveal set, values) transitions, at most
    (2V+1)**L per step, far fewer with fixed counts.
    """
    require_x64("exact_law")
    policy = RandomOrder() if policy is None else policy
    check_policy(policy)
    joint = joint_or_denoiser if isinstance(joint_or_denoiser, Joint) else None
    if denoiser is None:
        denoiser = exact_denoiser(joint, max_bytes) if joint is not None else joint_or_denoiser
    if joint is not None:
        check_denoiser(denoiser, joint.vocab_size, joint.length)
    else:
        check_denoiser(denoiser)
    V, L = denoiser.vocab_size, denoiser.length
    if values not in ("independent", "joint"):
        raise ValueError(f"values must be 'independent' or 'joint', got {values!r}.")
    cyl = None
    if values == "joint":
        if joint is None:
            raise ValueError("values='joint' needs the Joint (it draws from q's joint conditionals).")
        cyl = np.asarray(exact_denoiser(joint, max_bytes).cyl) if not isinstance(denoiser, ExactDenoiser) or denoiser.joint is not joint else np.asarray(denoiser.cyl)
    S = (V + 1) ** L
    check_size(8 * S, f"exact_law's state space (V+1)**L = {V + 1}**{L}", max_bytes,
               SCALABLE_HINT + " (theory.sampling.sample)")
    plan = make_plan(policy, L, steps, reveal=reveal, schedule=schedule, counts=counts)
    st = strides(V + 1, L)
    idx = np.array([V * st.sum()], dtype=np.int64)  # all-mask state
    prob = np.ones(1)
    nfe = 0.0
    n = 0
    full_mask = None
    while True:
        states = (idx[:, None] // st) % (V + 1)  # (K, L)
        masked_any = (states == V).any(1)
        if not masked_any.any():
            break
        if n >= plan.max_steps:
            if plan.mode == "adaptive":
                raise RuntimeError(f"{type(policy).__name__} did not finish in {plan.max_steps} steps: an adaptive policy must reveal >= 1 token per step.")
            raise RuntimeError("plan ended with masked tokens left (counts must sum to L).")  # pragma: no cover
        marg = batched_marginals(denoiser, states)
        parent, subsets, weights = _step_rows(policy, plan, n, states, marg)
        subsets = subsets & (states[parent] == V)
        if callback is not None:
            callback(n, states, prob, marg, parent, subsets, weights)
        revealing = subsets.any(1)
        nfe += float(np.sum(prob[parent] * weights * revealing))
        dense = np.zeros(S)
        for ci, cw in _fill(idx, prob, marg, parent, subsets, weights, V, L, values, cyl):
            dense += np.bincount(ci, weights=cw, minlength=S)  # merge duplicates on the dense index
        idx = np.nonzero(dense)[0].astype(np.int64)
        prob = dense[idx]
        n += 1
    toks = (idx[:, None] // st) % (V + 1)
    seq_idx = toks @ (V ** np.arange(L - 1, -1, -1, dtype=np.int64))
    out = np.zeros(V**L)
    np.add.at(out, seq_idx, prob)
    return Law(jnp.asarray(out), nfe, n)


# ================================ Monte Carlo =========================================================
def categorical_f64(key, probs):
    """Draw one index per row of ``probs`` (..., V) by float64 inverse CDF (no low-precision Gumbel)."""
    u = jax.random.uniform(key, probs.shape[:-1] + (1,), dtype=jnp.float64)
    cdf = jnp.cumsum(probs, axis=-1)
    v = jnp.sum(cdf < u * cdf[..., -1:], axis=-1)
    return jnp.minimum(v, probs.shape[-1] - 1)


def marginals_at(denoiser, states, positions):
    """Conditionals at given positions: states (B, L), positions (B, K) int -> (B, K, V).

    Uses ``denoiser.marginals_at`` when the denoiser has it (e.g. the Markov oracle, O(K V) plus
    cheap O(L) bookkeeping), else gathers from the full ``denoiser.marginals(states)``.
    """
    f = getattr(denoiser, "marginals_at", None)
    if callable(f):
        return f(states, positions)
    return jnp.take_along_axis(denoiser.marginals(states), positions[..., None], axis=1)


_ORDER_SALT = 0x7FFFFFFF  # fold_in data for the per-sample order key (step indices are < this)


@partial(jax.jit, static_argnames=("denoiser", "policy", "mode", "max_steps", "width"))
def _run_ordered(sample_keys, values, denoiser, policy, mode, max_steps, width):
    """Fast path for policies with a static ``order``: reveal order[r : r + count] at each step."""
    B = sample_keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    W = width
    okeys = jax.vmap(lambda k: jax.random.fold_in(k, _ORDER_SALT))(sample_keys)
    perm = jax.vmap(lambda k: policy.order(k, L))(okeys).astype(jnp.int32)  # (B, L)
    perm = jnp.concatenate([perm, jnp.full((B, W), L, jnp.int32)], axis=1)  # (B, L + W), sentinel L
    states0 = jnp.full((B, L), V, dtype=jnp.int32)
    zeros = jnp.zeros((B,), jnp.int32)
    slot = jnp.arange(W, dtype=jnp.int32)[None, :]  # (1, W)
    rows = jnp.arange(B)[:, None]

    def cond(c):
        n, _, _, r = c
        return (n < max_steps) & jnp.any(r < L)

    def body(c):
        n, states, nfe, r = c
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, n), 2))(sample_keys)  # (B, 2, 2)
        left = L - r  # masked tokens per sample
        if mode == "fixed":
            count = jnp.minimum(values[n], left).astype(jnp.int32)
        else:  # bernoulli: each masked token revealed independently with probability values[n]
            u = jax.vmap(lambda k: jax.random.uniform(k, (L,), dtype=jnp.float64))(keys[:, 1])
            count = jnp.sum((jnp.arange(L)[None, :] < left[:, None]) & (u < values[n]), axis=1).astype(jnp.int32)
        pos = jax.vmap(lambda p, a: jax.lax.dynamic_slice_in_dim(p, a, W))(perm, r)  # (B, W)
        valid = slot < count[:, None]
        marg = marginals_at(denoiser, states, jnp.where(valid, pos, 0))  # (B, W, V)
        vals = jax.vmap(categorical_f64)(keys[:, 0], marg).astype(jnp.int32)  # (B, W)
        states = states.at[rows, jnp.where(valid, pos, L)].set(vals, mode="drop")
        return n + 1, states, nfe + (count > 0).astype(jnp.int32), r + count

    _, states, nfe, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), states0, zeros, zeros))
    return states, nfe


@partial(jax.jit, static_argnames=("denoiser", "policy", "mode", "max_steps"))
def _run(sample_keys, values, denoiser, policy, mode, max_steps):
    B = sample_keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    states0 = jnp.full((B, L), V, dtype=jnp.int32)
    nfe0 = jnp.zeros((B,), jnp.int32)

    def cond(c):
        n, states, _ = c
        return (n < max_steps) & jnp.any(states == V)

    def body(c):
        n, states, nfe = c
        marg = denoiser.marginals(states)  # (B, L, V)
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, n), 3))(sample_keys)  # (B, 3, 2)
        masked = states == V
        if mode == "fixed":
            count = jnp.broadcast_to(values[n], (B,))
        elif mode == "bernoulli":
            u = jax.vmap(lambda k: jax.random.uniform(k, (L,), dtype=jnp.float64))(keys[:, 1])
            count = jnp.sum(masked & (u < values[n]), axis=1)
        else:
            count = jnp.zeros((B,), jnp.int32)
        reveal = jax.vmap(policy.select)(keys[:, 0], states, marg, count) & masked  # (B, L)
        vals = jax.vmap(categorical_f64)(keys[:, 2], marg).astype(jnp.int32)  # (B, L)
        states = jnp.where(reveal, vals, states)
        return n + 1, states, nfe + jnp.any(reveal, axis=1).astype(jnp.int32)

    _, states, nfe = jax.lax.while_loop(cond, body, (jnp.int32(0), states0, nfe0))
    return states, nfe


def sample(key, denoiser, policy=None, steps=None, *, num: int, reveal: str = "fixed", schedule: Schedule | None = None,
           counts=None, batch_size: int | None = None) -> Samples:
    """Draw ``num`` sequences with any Denoiser (jit + vmap over the batch, float64 throughout).

    Sample i uses the key ``fold_in(key, i)`` and ``fold_in(., step)`` per step, so results do not
    depend on ``batch_size``. Returns :class:`Samples` (tokens (num, L), nfe (num,)).
    """
    require_x64("sample")
    policy = RandomOrder() if policy is None else policy
    check_policy(policy)
    check_denoiser(denoiser)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    plan = make_plan(policy, denoiser.length, steps, reveal=reveal, schedule=schedule, counts=counts)
    vals = jnp.asarray(plan.values if plan.values.size else np.zeros(1), dtype=jnp.float64 if plan.mode == "bernoulli" else jnp.int32)
    bs = int(num if batch_size is None else batch_size)
    ordered = callable(getattr(policy, "order", None)) and plan.mode in ("fixed", "bernoulli")
    width = int(plan.values.max()) if plan.mode == "fixed" else denoiser.length
    toks, nfes = [], []
    for a in range(0, num, bs):
        ids = jnp.arange(a, min(a + bs, num))
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
        if ordered:
            t, f = _run_ordered(keys, vals, denoiser, policy, plan.mode, plan.max_steps, max(width, 1))
        else:
            t, f = _run(keys, vals, denoiser, policy, plan.mode, plan.max_steps)
        toks.append(t)
        nfes.append(f)
    return Samples(jnp.concatenate(toks), jnp.concatenate(nfes))
