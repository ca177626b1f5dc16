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

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import binom

from .denoiser import ExactDenoiser, check_denoiser
from .exact_layers import check_layered_size, check_sparse_size, layered_run, sparse_run
from .joint import Joint
from .policies import PROXIES, FixedOrder, LeftToRight, RandomOrder, check_policy
from .pytree import traceable
from .reductions import cumsum_last
from .rng import _typed, bits64, fold_in
from .schedules import Schedule, check_counts, fixed_counts, linear, reveal_probs
from .states import strides
from .validation import SCALABLE_HINT, check_size, check_steps, require_x64

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
class Plan:
    """A resolved step plan: ``mode`` and per-step counts (fixed) or reveal probabilities (bernoulli)."""

    mode: str  # "fixed" | "bernoulli" | "adaptive"
    values: np.ndarray  # counts (N,) | probs (N,) | empty
    max_steps: int


def make_plan(
    policy, length: int, steps=None, *, reveal: str = "fixed", schedule: Schedule | None = None, counts=None
) -> Plan:
    """Resolve (steps, reveal, schedule, counts) into per-step counts or reveal probabilities."""
    if reveal not in REVEALS:
        raise ValueError(f"reveal must be one of {REVEALS}, got {reveal!r}.")
    if not getattr(policy, "uses_count", True):
        if counts is not None:
            raise ValueError(f"{type(policy).__name__} chooses its own counts; do not pass counts.")
        return Plan("adaptive", np.zeros(0), length)
    if counts is not None:
        if steps is not None and len(counts) != steps:
            raise ValueError(f"got steps={steps} but {len(counts)} counts.")
        if reveal != "fixed":
            raise ValueError("explicit counts need reveal='fixed'.")
        c = check_counts(counts, length)
        return Plan("fixed", c, len(c))
    if steps is None:
        raise ValueError("pass steps (an int >= 1) or counts.")
    N = check_steps(steps)
    schedule = linear() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a theory.schedules.Schedule, got {type(schedule).__name__}.")
    if reveal == "fixed":
        return Plan("fixed", fixed_counts(schedule, N, length), N)
    return Plan("bernoulli", reveal_probs(schedule, N), N)


# ================================ exact law ==========================================================
def check_step_budget(plan: Plan, n: int, policy) -> None:
    """Raise if step ``n`` is past the plan while tokens are still masked (an exact engine's loop guard)."""
    if n >= plan.max_steps:
        if plan.mode == "adaptive":
            raise RuntimeError(
                f"{type(policy).__name__} did not finish in {plan.max_steps} steps: an adaptive policy must "
                "reveal >= 1 token per step."
            )
        raise RuntimeError("plan ended with masked tokens left (counts must sum to L).")  # pragma: no cover


def _batch_bucket(n: int) -> int:
    """Monte-Carlo batch shapes: a power of two (>= 8) up to 1024, then a multiple of 1024 (waste < 1024 rows)."""
    return _bucket(n) if n <= 1024 else -(-n // 1024) * 1024


def _bucket(n: int) -> int:
    """Pad batch sizes to powers of two (>= 8) so jitted calls compile for few shapes (extra rows are dropped)."""
    return max(8, 1 << (int(n) - 1).bit_length())


def batched_marginals(denoiser, states: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """Denoiser marginals (K, L, V) of numpy states (K, L), in padded power-of-two chunks (so a denoiser
    whose ``marginals`` is jitted compiles for few shapes)."""
    V = denoiser.vocab_size
    out = []
    for i in range(0, len(states), chunk):
        part = states[i : i + chunk]
        b = _bucket(len(part))
        padded = np.full((b, part.shape[1]), V, dtype=np.int32)
        padded[: len(part)] = part
        out.append(np.asarray(denoiser.marginals(jnp.asarray(padded)))[: len(part)])
    return np.concatenate(out) if out else np.zeros((0,) + states.shape[1:] + (V,))


def _step_rows(policy, plan: Plan, n: int, states: np.ndarray, marg: np.ndarray):
    """Rows (parent, subset, weight) of one step for every frontier state."""
    V = marg.shape[-1]
    K = states.shape[0]
    k = (states == V).sum(1)
    if plan.mode == "fixed":
        c = np.minimum(plan.values[n], k)
        return policy.reveal_distribution(states, marg, c)
    if plan.mode == "adaptive":
        return policy.reveal_distribution(states, marg, np.zeros(K, dtype=np.int64))
    return binomial_reveal_rows(policy, states, marg, k, float(plan.values[n]))


def binomial_reveal_rows(policy, states: np.ndarray, marg: np.ndarray, k: np.ndarray, p: float):
    """Bernoulli reveal, exactly: the count ~ Binomial(k, p) (k masked positions per state), then the
    policy's reveal sets of that size. Rows (parent, subsets, weights) like ``policy.reveal_distribution``."""
    pars, cnts, ws = [], [], []
    for c in range(int(k.max()) + 1 if len(states) else 0):
        pc = binom.pmf(c, k, p)
        rows = np.nonzero(pc > 0)[0]
        pars.append(rows)
        cnts.append(np.full(len(rows), c))
        ws.append(pc[rows])
    par, cnt, w = np.concatenate(pars), np.concatenate(cnts), np.concatenate(ws)
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
        child += sp[:, j : j + 1] * combos[None, :, j]  # (R, V**s)
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
            r = rows[a : a + per]
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


ENGINES = ("auto", "layers", "sparse", "frontier")


def _layered_setup(denoiser, policy, plan: Plan, values: str, callback, joint_cyl):
    """(cylinder table, order) for the layered engine, or a string saying why it does not apply."""
    if plan.mode == "adaptive":
        return f"it needs a policy that reveals the schedule's counts ({type(policy).__name__} chooses its own)"
    if callback is not None:
        return "it does not call a callback"
    kind = type(policy)
    if kind not in (RandomOrder, LeftToRight, FixedOrder):
        return f"it needs a value-blind policy (RandomOrder, LeftToRight, FixedOrder), got {kind.__name__}"
    L = denoiser.length
    if kind is FixedOrder and len(policy.perm) != L:
        return f"FixedOrder was built for L = {len(policy.perm)}, used with L = {L}"
    order = "random" if kind is RandomOrder else (tuple(range(L)) if kind is LeftToRight else policy.perm)
    if values == "joint":
        return joint_cyl, order  # q's joint conditionals: the law does not depend on the denoiser
    if type(denoiser) is not ExactDenoiser:
        return f"it needs the exact conditionals (an ExactDenoiser), got {type(denoiser).__name__}"
    return np.asarray(denoiser.cyl), order


def exact_law(
    joint_or_denoiser,
    policy=None,
    steps=None,
    *,
    reveal: str = "fixed",
    schedule: Schedule | None = None,
    counts=None,
    denoiser=None,
    values: str = "independent",
    max_bytes: float | None = None,
    callback: Callable | None = None,
    engine: str = "auto",
) -> Law:
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

    engine: "auto" (default), "layers", "sparse" or "frontier". Three engines compute the same law:

    * "layers" (:mod:`theory.exact_layers`): value-blind policies (exactly :class:`RandomOrder`,
      :class:`LeftToRight`, :class:`FixedOrder`) with fixed counts or Bernoulli reveal and the exact
      conditionals (the Joint's own denoiser or any ExactDenoiser; or ``values="joint"``), no callback.
      A dynamic programme over layers of partial states with the same number of visible positions,
      every conditional a gather from the cylinder-sum table; fixed counts, V = 2, N = 4: L = 16 in
      seconds. RandomOrder with Bernoulli reveal runs on the lifted state of
      :func:`theory.exact_layers.lifted_run` where its (2V)**L floats fit (4 GiB and ``max_bytes``).
    * "sparse" (:func:`theory.exact_layers.sparse_run`): any policy and denoiser, callbacks included;
      "auto" takes it for deterministic policies (Top-k, EB, LeftToRight / FixedOrder with other
      denoisers). The frontier engine's step (the policy's ``reveal_distribution`` on the marginals of
      every state that carries mass) with the states kept as sorted indices and merged by a sort and
      segment sum: no (V+1)**L-sized array besides the cylinder table. A deterministic policy reaches at
      most V**L states per step: V = 2, N = 4, Top-k and EB at L = 14 in under a second warm.
    * "frontier": everything else (random policies with other denoisers). Propagates the distribution
      over partial states step by step (a sparse frontier, merged on the dense index space (V+1)**L).
      Cost: the number of (state, reveal set, values) transitions, at most (2V+1)**L per step, far fewer
      with fixed counts.

    "auto" takes "layers" wherever it applies, then "sparse" for deterministic policies; "frontier"
    forces the general engine (the tests use it as the oracle of the other two).
    """
    require_x64("exact_law")
    policy = RandomOrder() if policy is None else policy
    check_policy(policy)
    joint = joint_or_denoiser if isinstance(joint_or_denoiser, Joint) else None
    if denoiser is None:
        denoiser = joint.denoiser(max_bytes) if joint is not None else joint_or_denoiser
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
        cyl = (
            np.asarray(joint.denoiser(max_bytes).cyl)
            if not isinstance(denoiser, ExactDenoiser) or denoiser.joint is not joint
            else np.asarray(denoiser.cyl)
        )
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    plan = make_plan(policy, L, steps, reveal=reveal, schedule=schedule, counts=counts)
    if engine not in ("frontier", "sparse"):
        layered = _layered_setup(denoiser, policy, plan, values, callback, cyl)
        if isinstance(layered, str):
            if engine == "layers":
                raise ValueError(f"engine='layers' does not apply here: {layered}. Use engine='auto' or 'frontier'.")
        else:
            lcyl, order = layered
            check_layered_size(V, L, plan.values, order, values, max_bytes, plan.mode)
            res = layered_run(lcyl, V, L, plan.values, plan.mode, order, values, max_bytes=max_bytes)
            return Law(jnp.asarray(res.probs), res.expected_nfe, res.steps_run)
    deterministic = bool(getattr(policy, "deterministic", False))
    if engine == "sparse" or (engine == "auto" and deterministic):
        check_sparse_size(V, L, deterministic and plan.mode != "bernoulli", max_bytes)
        res = sparse_run(denoiser, policy, plan, values, cyl, callback)
        return Law(jnp.asarray(res.probs), res.expected_nfe, res.steps_run)
    S = (V + 1) ** L
    check_size(
        8 * S,
        f"exact_law's state space (V+1)**L = {V + 1}**{L}",
        max_bytes,
        SCALABLE_HINT + " (theory.sampling.sample)",
    )
    st = strides(V + 1, L)
    idx = np.array([V * st.sum()], dtype=np.int64)  # all-mask state
    prob = np.ones(1)
    nfe = 0.0
    n = 0
    while True:
        states = (idx[:, None] // st) % (V + 1)  # (K, L)
        masked_any = (states == V).any(1)
        if not masked_any.any():
            break
        check_step_budget(plan, n, policy)
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
# One sampler, one key schedule. Sample i of a call with key k uses
#     k_i = fold_in(k, i)                                  (per sample: independent of batching/sharding)
#     k_{i,n} = fold_in(k_i, n)                            (per step n = 0..N-1, the step's index in the plan)
#     values:  fold_in(fold_in(k_{i,n}, VALUES), p)        (one uniform per revealed position p)
#     count:   fold_in(k_{i,n}, COUNT)                     (Binomial(#masked, p_n) for Bernoulli reveal)
#     select:  fold_in(k_{i,n}, SELECT)                    (the policy's own randomness, e.g. RandomOrder)
#     order:   fold_in(k_i, ORDER)                         (static-order fast path: one order per sample)
VALUES, COUNT, SELECT = 0, 1, 2
ORDER = 0x7FFFFFFF  # fold_in data for the per-sample order key (step indices are < this)
#: Positions per ``marginals_at`` call on the static-order fast path (denoisers that have ``marginals_at``):
#: each step uses the smallest width 4**k (or L) that covers its largest count, so at most 4x the
#: positions it needs; one ``lax.switch`` branch per width (log4 L + 1 of them, compiled together).
CHUNK_BASE = 4


def chunk_widths(length: int) -> tuple:
    """The fast path's widths for length L: 1, 4, 16, ... below L, and L."""
    widths, w = [], 1
    while w < length:
        widths.append(w)
        w *= CHUNK_BASE
    return tuple(widths) + (int(length),)


def step_widths(plan: Plan, length: int) -> tuple:
    """The static-order path's widths for a plan: fixed counts use one width, the smallest of
    :func:`chunk_widths` covering the largest count (no ``lax.switch`` in the loop: a switch passes the state
    through a conditional, which XLA copies every step, about 20% of a step at L = 1024); Bernoulli counts are
    random, so they keep every width and switch per step."""
    if plan.mode == "fixed" and plan.values.size:
        need = int(np.max(plan.values))
        return (next(w for w in chunk_widths(length) if w >= need),)
    return chunk_widths(length)


def inverse_cdf(probs, u):
    """Index v of each row of ``probs`` (..., V) with cdf[v-1] <= u * total < cdf[v], for uniforms u (...,). The CDF
    is added left to right (:func:`theory.reductions.cumsum_last`; XLA:CPU's ``cumsum`` is a slow
    ``reduce_window``)."""
    cdf = cumsum_last(probs)
    v = jnp.sum(cdf <= u[..., None] * cdf[..., -1:], axis=-1)
    return jnp.minimum(v, probs.shape[-1] - 1)


def position_uniforms(values_key, positions):
    """float64 uniforms for revealed positions, one per position p from ``fold_in(values_key, p)``: (...,) -> (...,).

    Keyed by position (not by slot), so the value drawn at a position does not depend on how the step's
    positions are chunked or ordered. The 64 random bits of the folded key (a threefry output) give the
    uniform directly: the top 53 bits times 2**-53, in [0, 1).
    """
    keys = values_key[..., None] if _typed(values_key) else values_key[..., None, :]  # one key per row of positions
    return (bits64(fold_in(keys, positions)) >> jnp.uint64(11)).astype(jnp.float64) * (2.0**-53)


#: The optional incremental face of a denoiser (see :mod:`theory.denoiser`), used by the static-order path.
CACHE_METHODS = ("init_cache", "marginals_at_cached", "update_cache")


def incremental(denoiser) -> bool:
    """Whether ``denoiser`` has the incremental face (:data:`CACHE_METHODS`): the static-order path then keeps
    its cache between steps instead of calling ``marginals_at`` on the whole state."""
    return all(callable(getattr(denoiser, m, None)) for m in CACHE_METHODS)


def marginals_at(denoiser, states, positions):
    """Conditionals at given positions: states (B, L), positions (B, K) int -> (B, K, V).

    Uses ``denoiser.marginals_at`` when the denoiser has it (e.g. the Markov oracle, O(K V) plus
    cheap O(L) bookkeeping), else gathers from the full ``denoiser.marginals(states)``.
    """
    f = getattr(denoiser, "marginals_at", None)
    if callable(f):
        return f(states, positions)
    return jnp.take_along_axis(denoiser.marginals(states), positions[..., None], axis=1)


MODES = {"fixed": 0, "bernoulli": 1, "adaptive": 2}  # traced mode codes: one compilation serves all three


def binomial_inverse_cdf(u, n, p, max_n: int):
    """Binomial(n, p) draw from a uniform u in [0, 1) by float64 inverse CDF over k = 0..max_n (n <= max_n traced).

    log pmf(k) = log C(n, k) + k log p + (n - k) log(1 - p), with log C(n, k) a cumulative sum of
    log((n - j) / (j + 1)); p = 0 and p = 1 give 0 and n exactly. Exact in law and compile-light (no
    rejection loop); O(max_n) work per draw.
    """
    k = jnp.arange(max_n + 1, dtype=jnp.float64)
    nf = n.astype(jnp.float64)
    step = jnp.log(jnp.maximum(nf - k[:-1], 1.0)) - jnp.log(k[:-1] + 1.0)  # log((n - j) / (j + 1)), j < n
    logc = jnp.concatenate([jnp.zeros(1), jnp.cumsum(step)])
    logpmf = jnp.where(k <= nf, logc + jax.scipy.special.xlogy(k, p) + jax.scipy.special.xlog1py(nf - k, -p), -jnp.inf)
    pmf = jnp.exp(logpmf - jnp.max(logpmf))
    cdf = jnp.cumsum(pmf)
    return jnp.sum(cdf <= u * cdf[-1]).astype(jnp.int32)


def _count(mode, value, left, count_key, max_n):
    """Tokens to reveal this step for one sample: fixed k_n, Binomial(left, p_n) (``max_n`` = L), or 0 (adaptive).

    ``mode`` is a traced code (:data:`MODES`) shared by the batch, so only the chosen branch runs.
    """

    def fixed(_):
        return jnp.minimum(value.astype(jnp.int32), left)

    def bernoulli(_):
        u = jax.random.uniform(count_key, dtype=jnp.float64)
        return jnp.minimum(binomial_inverse_cdf(u, left, value, max_n), left)

    def adaptive(_):
        return jnp.zeros_like(left)

    return jax.lax.switch(mode, [fixed, bernoulli, adaptive], None)


def _run_ordered(sample_keys, step_ids, step_values, num_rows, denoiser, policy, mode, widths):
    """Static-order fast path: at plan row j reveal order[r : r + count] (r = tokens revealed so far).

    The step count, the plan and the counts are traced (one compilation serves every N). The
    conditionals of a step are asked for W positions in one call, W the smallest of the static ``widths``
    that covers the step's largest count (the last width is L, which covers any count), chosen per step
    with ``lax.switch``; values are drawn from the conditionals at the step's start state.
    """
    B = sample_keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    Wmax = max(widths)
    okeys = fold_in(sample_keys, ORDER)
    perm = jax.vmap(lambda k: policy.order(k, L))(okeys).astype(jnp.int32)  # (B, L)
    perm = jnp.concatenate([perm, jnp.full((B, Wmax), L, jnp.int32)], axis=1)  # (B, L + Wmax), sentinel L
    rows = jnp.arange(B)[:, None]
    inc = incremental(denoiser)

    def reveal(W, states, cache, r, count, vkeys):
        """Reveal order[r : r + count] with W >= count slots (conditionals at the step's start state)."""
        slot = jnp.arange(W, dtype=jnp.int32)[None, :]  # (1, W)
        pos = jax.vmap(lambda p, a: jax.lax.dynamic_slice_in_dim(p, a, W))(perm, r)  # (B, W)
        valid = slot < count[:, None]
        safe = jnp.where(valid, pos, 0)
        marg = denoiser.marginals_at_cached(cache, states, safe) if inc else marginals_at(denoiser, states, safe)
        u = jax.vmap(position_uniforms)(vkeys, safe)  # (B, W)
        vals = inverse_cdf(marg, u).astype(jnp.int32)
        states = states.at[rows, jnp.where(valid, pos, L)].set(vals, mode="drop")
        return states, (denoiser.update_cache(cache, states, safe, valid) if inc else cache)

    fns = [partial(reveal, W) for W in widths]

    def cond(c):
        j, _, _, r, _ = c
        return (j < num_rows) & jnp.any(r < L)

    def body(c):
        j, states, nfe, r, cache = c
        skeys = fold_in(sample_keys, step_ids[j])  # (B, key)
        vkeys = fold_in(skeys, VALUES)
        ckeys = fold_in(skeys, COUNT)
        count = jax.vmap(lambda lft, k: _count(mode, step_values[j], lft, k, L))(L - r, ckeys)  # (B,)
        need = jnp.max(count)
        branch = jnp.sum(jnp.asarray(widths[:-1], jnp.int32) < need)  # the smallest width >= need (the last is L)
        if len(fns) == 1:
            states, cache = fns[0](states, cache, r, count, vkeys)
        else:
            states, cache = jax.lax.switch(branch, fns, states, cache, r, count, vkeys)
        return j + 1, states, nfe + (count > 0).astype(jnp.int32), r + count, cache

    start = jnp.full((B, L), V, dtype=jnp.int32)
    cache = denoiser.init_cache(start) if inc else ()
    init = (jnp.int32(0), start, jnp.zeros((B,), jnp.int32), jnp.zeros((B,), jnp.int32), cache)
    _, states, nfe, _, _ = jax.lax.while_loop(cond, body, init)
    return states, nfe


def _unfinished(num_rows, V: int):
    """The while-loop condition of the general and ranked paths: plan rows left and a mask left somewhere."""

    def cond(c):
        j, states = c[0], c[1]
        return (j < num_rows) & jnp.any(states == V)

    return cond


def _step_count(sample_keys, step_ids, step_values, j, states, mode, V: int, L: int):
    """Step j's keys (``fold_in(sample key, step id)``), mask and per-sample reveal count (its own COUNT key)."""
    skeys = fold_in(sample_keys, step_ids[j])
    masked = states == V
    ckeys = fold_in(skeys, COUNT)
    count = jax.vmap(lambda lft, k: _count(mode, step_values[j], lft, k, L))(masked.sum(1).astype(jnp.int32), ckeys)
    return skeys, masked, count


def _run(sample_keys, step_ids, step_values, num_rows, denoiser, policy, mode):
    """General path: the denoiser's marginals at every position, the policy's ``select`` at every step."""
    B = sample_keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    positions = jnp.arange(L, dtype=jnp.int32)

    cond = _unfinished(num_rows, V)

    def body(c):
        j, states, nfe = c
        skeys, masked, count = _step_count(sample_keys, step_ids, step_values, j, states, mode, V, L)
        marg = denoiser.marginals(states)  # (B, L, V)
        sel_keys = fold_in(skeys, SELECT)
        reveal = jax.vmap(policy.select)(sel_keys, states, marg, count) & masked  # (B, L)
        vkeys = fold_in(skeys, VALUES)
        u = jax.vmap(lambda k: position_uniforms(k, positions))(vkeys)  # (B, L)
        vals = inverse_cdf(marg, u).astype(jnp.int32)
        states = jnp.where(reveal, vals, states)
        return j + 1, states, nfe + jnp.any(reveal, axis=1).astype(jnp.int32)

    init = (jnp.int32(0), jnp.full((B, L), V, dtype=jnp.int32), jnp.zeros((B,), jnp.int32))
    _, states, nfe = jax.lax.while_loop(cond, body, init)
    return states, nfe


def _run_ranked(
    sample_keys, step_ids, step_values, num_rows, denoiser, policy, mode, widths, cands=None, stats=False, session=None
):
    """Ranked fast path (policies with ``ranked`` true: TopK, EntropyBounded with the entropy proxy).

    Same tokens as :func:`_run` (the policy reveals the masked positions among the c lowest scores, ties by
    position), without its float64 argsort of all L scores per step:

    1. :func:`theory.policies.rank_candidates`: the ``cands`` (K, static; default :data:`RANK_WIDTH`, at most L)
       lowest scores, exactly sorted by (uint64 key, position), from two float32 ``lax.top_k`` passes and a sort
       of K; exact for the first ``n_exact`` of them;
    2. the policy's cut c from that prefix (``ranked_count`` with +inf past ``n_exact`` and a zero (L, V)
       placeholder for the marginals, whose shape only it may read); the row is settled if c < n_exact, if
       every masked position is in the exact prefix, or (``ranked_uses_scores`` false: Top-k) if c <= n_exact;
    3. if every row is settled, the step reveals the masked positions among the first c candidates; otherwise
       (the fallback) the whole batch takes the full route: one one-operand sort of all L uint64 keys
       (:func:`theory.policies.sort_keys`), the reveal set by threshold (:func:`theory.policies.lowest_by_score`),
       compacted into W slots, W the smallest of the static ``widths`` covering the step's largest reveal.

    ``session`` (:func:`host_ranked`; the key of ``denoiser.rank_session(policy.proxy)``, opened around the
    jitted call): step 1 comes from the denoiser's ranked face (``denoiser.rank_step``: one host call that
    scores the masked positions and returns the K lowest exactly; n_exact = K); the full-sort fallback step
    asks it again for every score.

    Values are drawn only at the revealed positions (``marginals_at`` where it is exact, :func:`exact_marginals_at`,
    so that the (B, L, V) marginals are not an operand of the ``lax.cond``), with the same per-position uniforms as
    :func:`_run`. ``stats`` (static): also return the number of steps run and of fallback steps.
    """
    from .policies import from_sort_keys, lowest_by_score, sort_keys

    B = sample_keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    K = min(int(L), RANK_WIDTH if cands is None else int(cands))
    rows = jnp.arange(B)[:, None]
    iota = jnp.arange(L, dtype=jnp.int32)
    stub = jnp.zeros((L, V))  # ranked_count may read only the shape of the marginals
    has_at = exact_marginals_at(denoiser)
    host = session is not None
    face = scores_face(denoiser, policy)
    ranked_count = jax.vmap(policy.ranked_count, in_axes=(0, None, 0, 0))

    def draw(states, marg, pos, valid, vkeys):
        """Values at ``pos`` (B, W) where ``valid``, from the conditionals at the step's start state."""
        safe = jnp.where(valid, pos, 0)
        m = denoiser.marginals_at(states, safe) if has_at else jnp.take_along_axis(marg, safe[..., None], axis=1)
        vals = inverse_cdf(m, jax.vmap(position_uniforms)(vkeys, safe)).astype(jnp.int32)
        return states.at[rows, jnp.where(valid, pos, L)].set(vals, mode="drop")

    def full(W, states, marg, sel, vkeys):
        idx = jnp.cumsum(sel, axis=1, dtype=jnp.int32) - 1  # slot of each revealed position
        pos = jnp.full((B, W), L, jnp.int32).at[rows, jnp.where(sel, idx, W)].set(iota[None, :], mode="drop")
        return draw(states, marg, pos, pos < L, vkeys)

    fulls = [partial(full, W) for W in widths]

    def slow(states, marg, keys, masked, count, vkeys, cpos, take):
        if host:  # the ranked face gave only the candidates: now every score, from the same host step
            keys = sort_keys(denoiser.rank_step(states, policy.proxy, K, session, full=True)[2])
        sorted_keys = jax.lax.sort(keys, dimension=1)  # one operand: the fast CPU sort
        cut = ranked_count(states, stub, count, from_sort_keys(sorted_keys))  # (B,)
        sel = masked & jax.vmap(lowest_by_score)(keys, sorted_keys, cut)  # (B, L)
        n = jnp.sum(sel, axis=1, dtype=jnp.int32)
        branch = jnp.sum(jnp.asarray(widths[:-1], jnp.int32) < jnp.max(n))
        args = (states, marg, sel, vkeys)
        return (fulls[0](*args) if len(fulls) == 1 else jax.lax.switch(branch, fulls, *args)), n

    def fast(states, marg, keys, masked, count, vkeys, cpos, take):
        return draw(states, marg, cpos, take, vkeys), jnp.sum(take, axis=1, dtype=jnp.int32)

    cond = _unfinished(num_rows, V)

    def body(c):
        j, states, nfe, falls = c
        skeys, masked, count = _step_count(sample_keys, step_ids, step_values, j, states, mode, V, L)
        # the (B, L, V) marginals only where the scores or the draws need them
        marg = denoiser.marginals(states) if not (face and has_at) else None
        if host:  # the K lowest positions and their scores, exactly, from the denoiser's ranked face
            score, cand = None, denoiser.rank_step(states, policy.proxy, K, session)
        else:
            raw = denoiser.scores(states, policy.proxy) if face else jax.vmap(policy.score)(states, marg)
            score, cand = jnp.where(masked, raw, jnp.inf), None  # (B, L)
        keys, cpos, take, settled = ranked_candidates(policy, states, score, count, K, V, cand)
        vkeys = fold_in(skeys, VALUES)
        ok = jnp.all(settled)
        args = (states, marg if not has_at else (), () if host else keys, masked, count, vkeys, cpos, take)
        states, n = jax.lax.cond(ok, fast, slow, *args)
        return j + 1, states, nfe + (n > 0).astype(jnp.int32), falls + (~ok).astype(jnp.int32)

    init = (jnp.int32(0), jnp.full((B, L), V, dtype=jnp.int32), jnp.zeros((B,), jnp.int32), jnp.int32(0))
    j, states, nfe, falls = jax.lax.while_loop(cond, body, init)
    return (states, nfe, j, falls) if stats else (states, nfe)


def exact_marginals_at(denoiser) -> bool:
    """Whether the ranked path may draw values from ``denoiser.marginals_at`` instead of the full marginals: the
    denoiser has it and declares ``exact_marginals_at`` (its rows are the full marginals' rows bit for bit in
    any program, as the Markov oracle's are: the same code at K or L positions, sums in a fixed order). Others
    (forward-backward, sparse chains) contract over hidden states with XLA's dot, whose order of summation
    depends on the shape, so the ranked path gathers their rows from the full marginals, as the general path."""
    return callable(getattr(denoiser, "marginals_at", None)) and bool(getattr(denoiser, "exact_marginals_at", False))


def scores_face(denoiser, policy) -> bool:
    """Whether the ranked path takes the policy's scores from the denoiser's ``scores(states, proxy)`` face
    (bit for bit ``proxy_score(marginals(states), proxy)``, :mod:`theory.denoiser`): the denoiser has it and
    the policy's ``score`` is ``proxy_score`` of its ``proxy`` (``score_is_proxy``: TopK, EntropyBounded)."""
    return (
        callable(getattr(denoiser, "scores", None))
        and bool(getattr(policy, "score_is_proxy", False))
        and getattr(policy, "proxy", None) in PROXIES
    )


def host_ranked(denoiser, policy) -> bool:
    """Whether the ranked path takes its scores and candidates from the denoiser's ranked face
    (``rank_step``, :mod:`theory.denoiser`; the Markov oracle's runs on the host through numba,
    :mod:`synthetic.chain_host`): :func:`scores_face` holds, the denoiser declares ``has_rank_step`` (numba
    installed, V <= 16) and :data:`HOST_RANK` is on. Same tokens either way; :func:`sample` uses it unsharded."""
    return HOST_RANK and scores_face(denoiser, policy) and bool(getattr(denoiser, "has_rank_step", False))


#: Switch for :func:`host_ranked` (tests turn it off to compare the two ranked routes).
HOST_RANK = True


def ranked_candidates(policy, states, score, count, K: int, vocab_size: int, cand=None):
    """Steps 1-2 of :func:`_run_ranked`: (keys (B, L) uint64, cpos (B, K) int32, take (B, K) bool, settled (B,)).

    ``states`` (B, L) (mask id ``vocab_size``), ``score`` (B, L) the policy's scores with unmasked positions
    at +inf, ``count`` (B,) the step's counts. Where ``settled``, the step reveals exactly the positions
    ``cpos[take]`` (the masked positions among the c lowest scores, ties by position, c the policy's
    ``ranked_count``); elsewhere only the full sort decides. ``cand`` = (cpos, cscore) (B, K) each: each
    row's K lowest positions exactly sorted by (score, position) and their scores (the denoiser's ranked
    face, :func:`host_ranked`), instead of :func:`theory.policies.rank_candidates`; then ``score`` is not read
    and ``keys`` is None.
    """
    from .policies import from_sort_keys, rank_candidates, sort_keys

    L = states.shape[-1]
    slots = jnp.arange(K, dtype=jnp.int32)[None, :]
    uses_scores = bool(getattr(policy, "ranked_uses_scores", True))
    stub = jnp.zeros((L, vocab_size))  # ranked_count may read only the shape of the marginals
    masked = states == vocab_size
    if cand is None:
        keys = sort_keys(score)  # (B, L) uint64
        cpos, ckeys, n_exact = rank_candidates(keys, K)
    else:
        keys, (cpos, cscore) = None, cand
        ckeys, n_exact = sort_keys(cscore), jnp.full(states.shape[:1], K, jnp.int32)
    prefix = jnp.where(slots < n_exact[:, None], from_sort_keys(ckeys), jnp.inf)
    cut = jax.vmap(policy.ranked_count, in_axes=(0, None, 0, 0))(states, stub, count, prefix)  # (B,)
    cmask = jnp.take_along_axis(masked, cpos, axis=1)
    covered = jnp.sum(cmask & (slots < n_exact[:, None]), axis=1) == jnp.sum(masked, axis=1)
    settled = (cut < n_exact) | covered | ((not uses_scores) & (cut <= n_exact))
    return keys, cpos, (slots < cut[:, None]) & cmask, settled


#: The ranked path's default candidate width K (:func:`_run_ranked`, :func:`rank_width`).
RANK_WIDTH = 32
#: The smallest candidate width :func:`rank_width` picks.
MIN_RANK_WIDTH = 16


def rank_width(plan: Plan, policy, length: int) -> int:
    """The ranked path's candidate width K (at most L). A policy whose cut does not read the scores
    (``ranked_uses_scores`` false: TopK) settles a step whenever its cut is <= K: K = the power of two (>=
    :data:`MIN_RANK_WIDTH`) covering ``TopK.k`` or the plan's largest fixed count. Otherwise (EB, Bernoulli
    counts) :data:`RANK_WIDTH`. A step whose cut is not settled among the K candidates takes the full sort
    (same tokens, slower: the candidate passes and the full sort): EB steps that reveal K or more tokens in
    some row of the batch, i.e. EB with gamma well above (K / 2) times the entropy rate. At the benchmark
    size (L = 1024, N = 64, |V| = 8, EB about 16 tokens per step) K = 32 settles every step; K = 64 is
    ~10 % slower."""
    need = None
    if not getattr(policy, "ranked_uses_scores", True):
        k = getattr(policy, "k", None)
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            need = int(k)
        elif plan.mode == "fixed":
            need = int(np.max(plan.values)) if plan.values.size else 1
    K = RANK_WIDTH if need is None else max(MIN_RANK_WIDTH, 1 << (max(need, 1) - 1).bit_length())
    return min(int(length), K)


def is_ranked(policy) -> bool:
    """Whether ``policy`` takes the ranked fast path: ``ranked`` true, ``score`` and ``ranked_count`` (TopK;
    EntropyBounded with the entropy proxy)."""
    return (
        bool(getattr(policy, "ranked", False))
        and callable(getattr(policy, "score", None))
        and callable(getattr(policy, "ranked_count", None))
    )


_JITTED: dict = {}
_OPTIONS: list = []


def loop_compiler_options() -> dict:
    """XLA options for the Monte-Carlo loops: on CPU, no YNNPACK library fusions (XLA:CPU's own loops are faster
    on the static-order path's small gathers and reductions over V: ~4% at L = 1024, N = 64, V = 8).
    Empty where the option is unknown (another backend or XLA version); checked once by compiling a no-op."""
    if not _OPTIONS:
        opts = {"xla_cpu_experimental_ynn_fusion_type": ""}
        try:
            if jax.default_backend() != "cpu":
                raise RuntimeError
            jax.jit(lambda x: x + 1, compiler_options=opts).lower(np.float32(0)).compile()
        except Exception:  # noqa: BLE001 - any failure means: compile with the defaults
            opts = {}
        _OPTIONS.append(opts)
    return dict(_OPTIONS[0])


PATHS = ("general", "ordered", "ranked")


def _jitted(ordered, policy_traced: bool, denoiser_traced: bool):
    """The jitted loop: policy and denoiser are traced pytree arguments when they can be (equal structures
    share one compilation: every EB gamma, every TopK k, every exact denoiser of the same (V, L), every
    Markov chain of the same shape), else static (hashable) arguments. ``ordered``: a path of
    :data:`PATHS` (True / False stand for "ordered" / "general")."""
    path = ordered if isinstance(ordered, str) else ("ordered" if ordered else "general")
    key = (path, policy_traced, denoiser_traced)
    if key not in _JITTED:
        static = ["widths"] if path != "general" else []
        static += ["cands"] if path == "ranked" else []
        static += [] if policy_traced else ["policy"]
        static += [] if denoiser_traced else ["denoiser"]
        fns: dict[str, Callable] = {"general": _run, "ordered": _run_ordered, "ranked": _run_ranked}
        _JITTED[key] = jax.jit(fns[path], static_argnames=tuple(static), compiler_options=loop_compiler_options())
    return _JITTED[key]


def _plan_rows(plan: Plan, length: int):
    """The plan as padded arrays for the jitted loops: (step_ids (P,), values (P,), rows).

    Fixed counts keep only the steps that reveal something (at most L; their step index is kept for the
    key schedule), padded to L, so one compilation serves every N. Bernoulli keeps all N steps, padded
    to max(L, next power of two). Adaptive policies get L rows (each step reveals >= 1 token).
    """
    if plan.mode == "fixed":
        ids = np.nonzero(plan.values > 0)[0]
        vals = plan.values[ids].astype(np.float64)
        P = length
    elif plan.mode == "bernoulli":
        ids = np.arange(plan.values.size)
        vals = plan.values.astype(np.float64)
        P = max(length, 1 << (max(ids.size, 1) - 1).bit_length())
    else:
        ids = np.arange(length)
        vals = np.zeros(length)
        P = length
    step_ids = np.zeros(P, np.int32)
    step_ids[: ids.size] = ids
    values = np.zeros(P)
    values[: ids.size] = vals
    return jnp.asarray(step_ids), jnp.asarray(values, dtype=jnp.float64), jnp.int32(ids.size)


def batch_sharding(num_devices: int | None = None):
    """A ``NamedSharding`` that splits the sample batch over ``num_devices`` JAX devices (default: all).

    On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before JAX starts) gives two host
    devices. Pass the result as ``sample(..., sharding=...)``; the tokens are the same as unsharded.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.devices() if num_devices is None else jax.devices()[: int(num_devices)]
    if num_devices is not None and len(devs) < int(num_devices):
        raise ValueError(
            f"only {len(devs)} JAX device(s); on CPU set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{num_devices} before importing jax."
        )
    return NamedSharding(Mesh(np.array(devs), ("batch",)), PartitionSpec("batch"))


def sample(
    key,
    denoiser,
    policy=None,
    steps=None,
    *,
    num: int,
    reveal: str = "fixed",
    schedule: Schedule | None = None,
    counts=None,
    batch_size: int | None = None,
    sharding=None,
    width: int | None = None,
    path: str = "auto",
) -> Samples:
    """Draw ``num`` sequences with any Denoiser: THE Monte-Carlo sampler (jit + vmap, float64 throughout).

    Same process as :func:`exact_law` (see the module docstring). Key schedule: sample i uses
    ``fold_in(key, i)`` and step n ``fold_in(., n)`` (see the comment above), so the tokens do not depend
    on ``batch_size`` nor on ``sharding`` (a ``jax.sharding.Sharding`` of the batch axis, e.g.
    :func:`batch_sharding`). Policies with a static order (``policy.order``) and a schedule take the
    fast path, asking the denoiser for W positions per call (default, if it has ``marginals_at``: fixed
    counts use the smallest of :func:`chunk_widths` covering the largest count, one compilation per such
    width; Bernoulli reveal picks that width per step, one compilation for every N up to L, then one per
    power of two; without ``marginals_at``, W = L, one full call per step; ``width`` fixes W). A denoiser
    with the incremental face (:mod:`theory.denoiser`) keeps its cache between steps.

    Policies that rank positions by a score (``score`` and ``ranked_count``: TopK, EntropyBounded) take
    the ranked fast path (:func:`_run_ranked`: no full float64 sort per step, values drawn only at the
    revealed positions; on the Markov oracle, unsharded, one host call per step scores the masked positions
    and picks the candidates, :func:`host_ranked`). ``path``: "auto" (the fastest that applies), or
    "general" (the denoiser's marginals and the policy's ``select`` at every step, the reference the fast
    paths are tested against), "ordered" or "ranked" to insist on one; all give the same tokens. (The ordered path draws
    from ``marginals_at``; for a denoiser whose ``marginals_at`` is not exact (``exact_marginals_at``, e.g.
    forward-backward: a dot over hidden states, summed in a shape-dependent order) its conditionals may differ
    from the full marginals in the last bit, so a draw differs only if its uniform falls within that bit of a
    CDF boundary: probability ~1e-16 per draw.)

    Returns :class:`Samples`: ``tokens`` (num, L) int32 and ``nfe`` (num,) int32, the number of steps
    that revealed at least one token.
    """
    require_x64("sample")
    policy = RandomOrder() if policy is None else policy
    check_policy(policy)
    check_denoiser(denoiser)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    V, L = denoiser.vocab_size, denoiser.length
    plan = make_plan(policy, L, steps, reveal=reveal, schedule=schedule, counts=counts)
    step_ids, values, rows = _plan_rows(plan, L)
    ordered = callable(getattr(policy, "order", None)) and plan.mode in ("fixed", "bernoulli")
    ranked = is_ranked(policy)
    if path not in ("auto",) + PATHS:
        raise ValueError(f"path must be 'auto' or one of {PATHS}, got {path!r}.")
    if path == "ordered" and not ordered:
        raise ValueError(
            f"path='ordered' needs a policy with a static order (RandomOrder, LeftToRight, FixedOrder) and a "
            f"schedule; got {type(policy).__name__} with a {plan.mode} plan. Use path='auto'."
        )
    if path == "ranked" and not ranked:
        raise ValueError(f"path='ranked' needs a policy with score and ranked_count (TopK, EntropyBounded); got "
                         f"{type(policy).__name__}. Use path='auto'.")  # fmt: skip
    if path == "auto":
        path = "ordered" if ordered else ("ranked" if ranked else "general")
    if width is not None and (
        isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= L
    ):
        raise ValueError(f"width must be an int in 1..L = {L}, got {width!r}.")
    if width is not None:
        widths = tuple(sorted({int(width), L}))
    elif callable(getattr(denoiser, "marginals_at", None)):
        widths = step_widths(plan, L)
    else:
        widths = (L,)  # one full marginals call per step
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    bs = _batch_bucket(int(num if batch_size is None else batch_size))  # padded: few compiled shapes
    ndev = 1 if sharding is None else len(sharding.device_set)
    bs = -(-bs // ndev) * ndev  # a multiple of the device count; extra samples are drawn and dropped
    mode = jnp.int32(MODES[plan.mode])
    run = _jitted(path, traceable(policy), traceable(denoiser))
    kw: dict = {"widths": widths} if path != "general" else {}
    if path == "ranked":
        # the full-sort fallback draws at one width, L (no lax.switch: it is rare, and a switch of log4(L) + 1
        # branches made the loop's compilation ~1.5 s longer)
        kw = {"widths": widths if width is not None else (L,), "cands": rank_width(plan, policy, L)}
    toks, nfes = [], []
    with contextlib.ExitStack() as stack:
        if path == "ranked" and ndev == 1 and host_ranked(denoiser, policy):  # a host call per step: unsharded
            kw["session"] = jnp.int32(stack.enter_context(denoiser.rank_session(policy.proxy)))
        for a in range(0, num, bs):
            keys = fold_in(key, jnp.arange(a, a + bs))
            if sharding is not None:
                keys = jax.device_put(keys, sharding)
            t, f = run(keys, step_ids, values, rows, denoiser=denoiser, policy=policy, mode=mode, **kw)
            n = min(bs, num - a)
            toks.append(np.asarray(t)[:n])
            nfes.append(np.asarray(f)[:n])
    tokens = np.concatenate(toks)
    if np.any(tokens == V):
        raise RuntimeError(
            f"{type(policy).__name__} left masked tokens after {L} steps: an adaptive policy must "
            "reveal at least one token per step."
        )
    return Samples(jnp.asarray(tokens), jnp.asarray(np.concatenate(nfes)))
