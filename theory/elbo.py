"""The MDM training loss and the ELBO, exactly and by Monte Carlo; Feng2025's eps_learning.

The loss (MDLM/MD4's continuous-time ELBO in Jia2025's form; per-position schedules as in Garg2025)
--------------------------------------------------------------------------------------------------
For a clean sequence x (L tokens), draw t ~ p(t) and mask token l independently with probability
1 - alpha_{t,l} (state z); then

    loss(x, t, z) = w(t)/p(t) * (1/L) * sum_{l masked in z} (-alpha'_{t,l} / (1 - alpha_{t,l})) (-log p_theta(x_l | z)),

with the importance weight w(t)/p(t) = 1 for t ~ U[0, 1]. A schedule is a shared
:class:`theory.schedules.Schedule` (alpha_{t,l} = alpha(t)) or a :class:`theory.schedules.PerPosition`
(one schedule per position). Its expectation over (x, t, z) is ELBO / L, the MDM negative ELBO in nats
per token, an upper bound on -E_q log p_theta(x) / L (for linear alpha this is Jia2025's
``(1/L) sum_{i in m} -log p / t``). Two hooks make the estimator pluggable (the variance issue plugs
P-POTS, MIRROR, ... in here):

* ``t_sampler(key, batch) -> (t (batch,), weight (batch,))``: times in (0, 1] and their importance weight
  1/p(t) relative to U[0, 1] (:func:`uniform_t` gives weight 1);
* ``mask_sampler(key, t, shape) -> bool mask``: shape (B, L) or (K, B, L) (K masks per example, e.g.
  antithetic pairs; their losses are averaged). Unbiasedness needs token l masked with marginal
  probability 1 - alpha_{t,l}: :func:`bernoulli_mask` (schedule) is the standard one.

Where 1 - alpha = 0 (t = 0) no token is masked and the weight is set to 0 (no 0 * inf). The loss takes
the model as a function ``log_probs(states (B, L)) -> (B, L, V)`` (log-probabilities over clean tokens),
so any network plugs in (:mod:`synthetic.train` passes its transformer).

Evaluation (float64, exact where the instance is small; shared schedules)
-------------------------------------------------------------------------
Write C[z] = q(visible part of z) (the cylinder sums of theory/denoiser.py), m(z) = number of masked
positions, q_i(.|z) the exact conditional and p_i(.|z) the model's.

* **eps_learning** (Feng2025's learning error, the per-token KL of the learned conditionals): the
  average over masked positions of KL(q_i(.|z) || p_i(.|z)) under the *forward (training) process*
  t ~ U[0, 1], x ~ q, z ~ mask(x, t):

      eps_learning = E[ sum_{i masked} KL_i(z) ] / E[ m(z) ]     (nats per masked token).

  Exactly: the probability of z is C[z] * w_fwd(m(z)) with w_fwd(m) = int_0^1 alpha(t)^(L-m) (1 - alpha(t))^m dt
  (Gauss-Legendre, exact for polynomial alpha; for linear alpha w_fwd(m) = (L-m)! m! / (L+1)!).
* **ELBO** (the NLL bound, nats per sequence) = sum_z C[z] w_elbo(m) sum_{i masked} CE(q_i, p_i),
  w_elbo(m) = 1 / (m * binom(L, m)) = integral of the loss weight -alpha' alpha^(L-m) (1-alpha)^(m-1) dt,
  the same for every schedule. It is the average over reveal orders of the order's autoregressive NLL,
  so for the exact denoiser it equals H(q) (chain rule in every order) and in general
  ELBO - H(q) = sum_z C[z] w_elbo(m) sum_i KL_i(z) >= 0 (``elbo_gap``).

:func:`exact_evaluation` enumerates all (V+1)**L partial states (small instances). :func:`mc_evaluation`
uses a *fixed* sample (fixed key: the same states at every evaluation) of n forward draws and reports
eps_learning as a ratio estimator with a delta-method standard error, and the ELBO with its standard
error; it needs a reference Denoiser (a language's exact conditionals, ``lang.denoiser()``) for eps_learning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from . import schedules as _schedules
from .denoiser import check_denoiser
from .joint import Joint
from .states import all_states
from .validation import check_size, require_x64


# ================================ the two hooks =======================================================
def uniform_t(key, batch: int):
    """t ~ U(0, 1] (never 0), weight 1: the standard MDM time sampler. Returns (t (batch,), weight (batch,))."""
    t = 1.0 - jax.random.uniform(key, (batch,), dtype=jnp.float32)
    return t, jnp.ones((batch,), jnp.float32)


def _per_position(schedule) -> bool:
    """PerPosition, or any object with ``length`` and ``alpha``/``dalpha`` returning t.shape + (L,)
    (theory.orders.PolynomialFamily, FunctionFamily)."""
    return isinstance(schedule, _schedules.PerPosition) or (
        hasattr(schedule, "length") and hasattr(schedule, "alpha") and hasattr(schedule, "dalpha")
    )


def position_alphas(schedule, t, length: int):
    """alpha_{t,l} and alpha'_{t,l}, each (B, L), for times t (B,) and a shared or per-position schedule."""
    if _per_position(schedule):
        if schedule.length != length:
            raise ValueError(f"the per-position schedule has {schedule.length} positions, the data has L = {length}.")
        return schedule.alpha(t), schedule.dalpha(t)  # (B, L)
    a, d = schedule.alpha(t), schedule.dalpha(t)  # (B,)
    return jnp.broadcast_to(a[:, None], t.shape + (length,)), jnp.broadcast_to(d[:, None], t.shape + (length,))


@lru_cache(maxsize=64)
def bernoulli_mask(schedule=None) -> Callable:
    """The standard mask sampler for ``schedule`` (default linear): token l masked with prob 1 - alpha_{t,l}."""
    schedule = _schedules.linear() if schedule is None else schedule

    def mask_sampler(key, t, shape):
        a, _ = position_alphas(schedule, t, shape[-1])
        p = (1.0 - a).astype(jnp.float32)  # (B, L)
        return jax.random.uniform(key, shape, dtype=jnp.float32) < p  # (B, L) (or (K, B, L), broadcast)

    return mask_sampler


def loss_weight(schedule, t, length: int | None = None):
    """-alpha'_{t,l} / (1 - alpha_{t,l}), 0 where 1 - alpha = 0.

    (B,) for a shared schedule with ``length`` None, else (B, L).
    """
    if length is None:
        if _per_position(schedule):
            raise ValueError("a per-position schedule needs the length: loss_weight(schedule, t, length).")
        a, d = schedule.alpha(t), schedule.dalpha(t)
    else:
        a, d = position_alphas(schedule, t, length)
    den = 1.0 - a
    return jnp.where(den > 0, -d / jnp.where(den > 0, den, 1.0), 0.0)


# ================================ the loss ============================================================
def per_example_loss(log_probs: Callable, tokens, t, weight, mask, schedule, vocab_size: int):
    """MDM loss per example (B,) in nats per token (module docstring).

    ``log_probs(states (B, L)) -> (B, L, V)``: the model's log-probabilities over the clean tokens;
    ``tokens`` (B, L) clean; ``t``, ``weight`` (B,) from the t-sampler; ``mask`` (B, L) or (K, B, L) (the K
    masks' losses are averaged); ``schedule`` shared or per-position; ``vocab_size`` V (the mask id).
    """
    L = tokens.shape[-1]
    masks = mask if mask.ndim == 3 else mask[None]  # (K, B, L)
    w = weight[:, None] * loss_weight(schedule, t, L)  # (B, L)

    def one(m):
        z = jnp.where(m, vocab_size, tokens)  # (B, L) partial states
        lp = log_probs(z)  # (B, L, V)
        nll = -jnp.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0]  # (B, L)
        # the weights take the model's precision: float32 for training, float64 for an exact denoiser
        return jnp.sum(jnp.where(m, w.astype(nll.dtype) * nll, 0.0), axis=-1) / L  # (B,)

    return jnp.mean(jax.vmap(one)(masks), axis=0)


def mdm_loss(log_probs: Callable, tokens, t, weight, mask, schedule, vocab_size: int):
    """Batch mean of :func:`per_example_loss` (a scalar; unbiased for ELBO / L)."""
    return jnp.mean(per_example_loss(log_probs, tokens, t, weight, mask, schedule, vocab_size))


# ================================ evaluation ==========================================================
def _xlogy_ratio(q, p):
    """Elementwise q log(q/p) with 0 where q = 0 (float64)."""
    return jnp.where(q > 0, q * (jnp.log(jnp.where(q > 0, q, 1.0)) - jnp.log(jnp.where(q > 0, p, 1.0))), 0.0)


def _cross_entropy(q, p):
    return -jnp.where(q > 0, q * jnp.log(jnp.where(q > 0, p, 1.0)), 0.0)


def forward_weights(schedule, length: int, nodes: int = 256) -> np.ndarray:
    """w_fwd(m) = int_0^1 alpha^(L-m) (1-alpha)^m dt for m = 0..L (Gauss-Legendre with ``nodes`` nodes), (L+1,)."""
    require_x64("forward_weights")
    x, w = np.polynomial.legendre.leggauss(nodes)
    t, w = (x + 1.0) / 2.0, w / 2.0
    a = np.clip(np.asarray(schedule.alpha(jnp.asarray(t)), dtype=np.float64), 0.0, 1.0)
    m = np.arange(length + 1)
    return (w[None, :] * a[None, :] ** (length - m)[:, None] * (1.0 - a[None, :]) ** m[:, None]).sum(1)


def elbo_weights(length: int) -> np.ndarray:
    """w_elbo(m) = 1 / (m * binom(L, m)) for m = 0..L (0 at m = 0), (L+1,)."""
    return np.array([0.0] + [1.0 / (m * math.comb(length, m)) for m in range(1, length + 1)])


def _batched_marginals(denoiser, states, chunk: int):
    """denoiser.marginals over ``states`` in chunks (every toolkit denoiser jits its own marginals)."""
    return jnp.concatenate([denoiser.marginals(states[i : i + chunk]) for i in range(0, states.shape[0], chunk)])


@jax.jit
def _exact_sums(q, p, masked, w_fwd, w_elbo):
    """(sum_z w_fwd KL(z), sum_z w_elbo CE(z), sum_z w_elbo KL(z)) with KL/CE summed over masked positions."""
    kl = jnp.where(masked, _xlogy_ratio(q, p).sum(-1), 0.0).sum(-1)  # (S,)
    ce = jnp.where(masked, _cross_entropy(q, p).sum(-1), 0.0).sum(-1)  # (S,)
    return jnp.sum(w_fwd * kl), jnp.sum(w_elbo * ce), jnp.sum(w_elbo * kl)


@dataclass(frozen=True, eq=False)
class ExactEvaluation:
    """Exact evaluation against a Joint by enumerating its (V+1)**L partial states (callable on a denoiser).

    ``evaluation(denoiser)`` returns a dict: ``eps_learning`` (nats / masked token), ``elbo`` and
    ``entropy`` (nats / sequence), ``elbo_gap`` = elbo - entropy (>= 0), ``elbo_per_token`` = elbo / L
    (the expected training loss).
    """

    joint: Joint
    states: jax.Array  # (S, L)
    q: jax.Array  # (S, L, V) exact conditionals
    masked: jax.Array  # (S, L) bool
    w_fwd: jax.Array  # (S,) C[z] w_fwd(m(z))
    w_elbo: jax.Array  # (S,) C[z] w_elbo(m(z))
    mean_masked: float  # E[m(z)] under the forward process
    entropy: float
    chunk: int = 1 << 14

    def model_marginals(self, denoiser) -> jax.Array:
        check_denoiser(denoiser, self.joint.vocab_size, self.joint.length)
        p = _batched_marginals(denoiser, self.states, self.chunk)
        if p.dtype != jnp.float64:
            raise TypeError(f"denoiser.marginals returned {p.dtype}; the evaluation needs float64 marginals.")
        return p

    def __call__(self, denoiser) -> dict:
        p = self.model_marginals(denoiser)
        eps_num, elbo, gap = (float(x) for x in _exact_sums(self.q, p, self.masked, self.w_fwd, self.w_elbo))
        eps = eps_num / self.mean_masked
        L = self.joint.length
        return {"eps_learning": eps, "elbo": elbo, "elbo_per_token": elbo / L, "entropy": self.entropy, "elbo_gap": gap}


def exact_evaluation(joint: Joint, schedule=None, max_bytes: float | None = None) -> ExactEvaluation:
    """Prepare the exact evaluation of denoisers against ``joint`` (forward process with ``schedule``, default linear).

    Cost: the exact denoiser table ((V+1)**L, L, V) and one model call per partial state.
    """
    require_x64("exact_evaluation")
    if not isinstance(joint, Joint):
        raise TypeError(f"exact_evaluation needs a theory.joint.Joint, got {type(joint).__name__}.")
    schedule = _schedules.linear() if schedule is None else schedule
    if _per_position(schedule):
        raise ValueError(
            "exact_evaluation's closed-form weights need a shared schedule; per-position schedules "
            "make the order law non-uniform (Garg2025): use theory.orders.elbo (exact) or mc_evaluation."
        )
    _schedules.validate(schedule)
    V, L = joint.vocab_size, joint.length
    S = (V + 1) ** L
    check_size(
        8 * 4 * S * L * V,
        f"Exact evaluation over (V+1)**L = {V + 1}**{L} partial states",
        max_bytes,
        "Use mc_evaluation (a fixed sample with standard errors)",
    )
    ex = joint.denoiser(max_bytes)
    states_np = all_states(V, L)
    states = jnp.asarray(states_np)
    q = jax.jit(ex.marginals)(states)  # (S, L, V)
    C = np.asarray(ex.cyl)  # (S,) q(visible part)
    masked = states_np == V
    m = masked.sum(-1)
    wf = forward_weights(schedule, L)
    we = elbo_weights(L)
    w_fwd = jnp.asarray(np.where(C > 0, C * wf[m], 0.0))
    w_elbo = jnp.asarray(np.where(C > 0, C * we[m], 0.0))
    masked = jnp.asarray(masked)
    mean_masked = float(sum(math.comb(L, k) * wf[k] * k for k in range(L + 1)))  # E[m] = L E[1 - alpha(t)]
    return ExactEvaluation(joint, states, q, masked, w_fwd, w_elbo, mean_masked, joint.entropy())


def eps_learning(denoiser, joint: Joint, schedule=None) -> float:
    """Feng2025's eps_learning of ``denoiser`` against ``joint``, exactly: E[sum_{i masked} KL(q_i || p_i)] / E[m]
    under the forward process (nats per masked token; see the module docstring)."""
    return exact_evaluation(joint, schedule)(denoiser)["eps_learning"]


@dataclass(frozen=True, eq=False)
class MCEvaluation:
    """Monte-Carlo evaluation on a fixed forward sample (tokens, t, masks) with standard errors.

    ``evaluation(denoiser)`` returns ``elbo`` (nats / sequence, unbiased) with ``elbo_se``; with a
    ``reference`` Denoiser also ``eps_learning`` (ratio estimator) with a delta-method ``eps_learning_se``.
    """

    tokens: jax.Array  # (n, L) clean
    states: jax.Array  # (n, L) masked
    weight: jax.Array  # (n, L) -alpha'_{t,l}/(1-alpha_{t,l})
    vocab_size: int
    reference: object | None
    q: jax.Array | None  # (n, L, V) reference conditionals
    chunk: int = 1 << 13

    def __call__(self, denoiser) -> dict:
        V, L = self.vocab_size, int(self.states.shape[1])
        check_denoiser(denoiser, V, L)
        p = _batched_marginals(denoiser, self.states, self.chunk)
        if p.dtype != jnp.float64:
            raise TypeError(f"denoiser.marginals returned {p.dtype}; the evaluation needs float64 marginals.")
        masked = self.states == V
        n = self.states.shape[0]
        px = jnp.take_along_axis(p, self.tokens[..., None], axis=-1)[..., 0]  # (n, L)
        nll = jnp.where(masked, -jnp.log(jnp.where(masked, px, 1.0)), 0.0)  # (n, L)
        e = np.asarray((self.weight * nll).sum(-1))  # (n,)
        out = {"elbo": float(e.mean()), "elbo_se": float(e.std(ddof=1) / np.sqrt(n)), "n": int(n)}
        out["elbo_per_token"] = out["elbo"] / L
        if self.q is not None:
            K = np.asarray(jnp.where(masked, _xlogy_ratio(self.q, p).sum(-1), 0.0).sum(-1))  # (n,)
            M = np.asarray(masked.sum(-1), dtype=np.float64)
            r = K.mean() / M.mean()
            se = np.std(K - r * M, ddof=1) / np.sqrt(n) / M.mean()
            out.update(eps_learning=float(r), eps_learning_se=float(se))
        return out


def mc_evaluation(tokens, *, key, vocab_size: int, reference=None, schedule=None) -> MCEvaluation:
    """Fix a forward sample: clean ``tokens`` (n, L) from q, t ~ U(0, 1], token l masked with prob 1 - alpha_{t,l}.

    ``reference``: a Denoiser giving the exact conditionals (a language's ``denoiser()``) for eps_learning;
    without it only the ELBO is estimated. ``schedule``: shared or per-position (default linear).
    """
    require_x64("mc_evaluation")
    schedule = _schedules.linear() if schedule is None else schedule
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] < 2:
        raise ValueError(f"tokens must be (n, L) with n >= 2, got {tokens.shape}.")
    n, L = tokens.shape
    if tokens.dtype.kind not in "iu" or int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise ValueError(f"tokens must be ints in 0..{vocab_size - 1}.")
    kt, km = jax.random.split(key)
    t = 1.0 - jax.random.uniform(kt, (n,), dtype=jnp.float64)
    alpha, _ = position_alphas(schedule, t, L)  # (n, L)
    mask = jax.random.uniform(km, (n, L), dtype=jnp.float64) < (1.0 - alpha)
    states = jnp.where(mask, vocab_size, tokens)
    q = None
    if reference is not None:
        check_denoiser(reference, vocab_size, L)
        q = _batched_marginals(reference, states, 8192)
        if q.dtype != jnp.float64:
            raise TypeError(f"reference.marginals returned {q.dtype}; eps_learning needs float64 conditionals.")
    return MCEvaluation(tokens, states, loss_weight(schedule, t, L), vocab_size, reference, q)
