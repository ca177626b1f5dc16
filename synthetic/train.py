"""Training small MDM denoisers with the MDM loss, and evaluating them against the exact conditionals.

The loss (Jia2025's form, general schedule; MDLM/MD4's continuous-time ELBO)
--------------------------------------------------------------------------
For a clean sequence x (L tokens), draw t ~ p(t) and mask each token independently with probability
1 - alpha(t) (state z); then

    loss(x, t, z) = w(t) / p(t) * (-alpha'(t) / (1 - alpha(t))) * (1/L) * sum_{i masked in z} -log p_theta(x_i | z),

with the importance weight w(t)/p(t) = 1 for t ~ U[0, 1]. Its expectation over (x, t, z) is ELBO / L,
the MDM negative ELBO in nats per token, an upper bound on -E_q log p_theta(x) / L (for linear alpha this is
Jia2025's ``(1/L) sum_{i in m} -log p / t``). Two hooks make the estimator pluggable (the variance
issue plugs P-POTS, MIRROR, ... in here):

* ``t_sampler(key, batch) -> (t (batch,), weight (batch,))``: times in (0, 1] and their importance weight
  1/p(t) relative to U[0, 1] (:func:`uniform_t` gives weight 1);
* ``mask_sampler(key, t, shape) -> bool mask``: shape (B, L) or (K, B, L) (K masks per example, e.g.
  antithetic pairs; their losses are averaged). Unbiasedness needs each token masked with marginal
  probability 1 - alpha(t); :func:`bernoulli_mask` (schedule) is the standard one.

Where 1 - alpha(t) = 0 (t = 0) no token is masked and the weight is set to 0 (no 0 * inf).

Evaluation (float64, exact where the instance is small)
-------------------------------------------------------
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
error; it needs a reference Denoiser (the exact one, or a Markov oracle) for eps_learning.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from tqdm.auto import tqdm

from theory import schedules as _schedules
from theory.validation import check_size, require_x64
from theory.denoiser import check_denoiser, exact_denoiser
from theory.joint import Joint
from theory.sampling import categorical_f64
from theory.states import all_states

from .languages import HMM, MarkovChain, NGram
from .models import MODEL_KINDS, LearnedDenoiser, ModelConfig, init_network, network_logits

#: Default sizes of the training run of :func:`fit_denoiser` (see benchmarks/train.py for timings).
DEFAULT_STEPS = {"transformer": 1000, "tabular": 1500, "lowrank": 1500}
DEFAULT_LR = {"transformer": 3e-3, "tabular": 5e-2, "lowrank": 1e-2}
DEFAULT_BATCH = 128
#: Largest (V+1)**L * L * V for which evaluation="auto" enumerates all partial states.
EXACT_EVAL_MAX_ENTRIES = 2**22
#: Largest V**L for which a structured language is enumerated into a Joint automatically.
AUTO_JOINT_MAX = 2**20
#: Largest (V+1)**L for which evaluation="auto" builds the exact denoiser as the Monte-Carlo reference.
AUTO_CYLINDER_MAX = 2**25


# ================================ the two hooks =======================================================
def uniform_t(key, batch: int):
    """t ~ U(0, 1] (never 0), weight 1: the standard MDM time sampler. Returns (t (batch,), weight (batch,))."""
    t = 1.0 - jax.random.uniform(key, (batch,), dtype=jnp.float32)
    return t, jnp.ones((batch,), jnp.float32)


#: The default schedule object (one instance, so that compiled training steps are reused across runs).
LINEAR = _schedules.linear()


@lru_cache(maxsize=64)
def bernoulli_mask(schedule=None) -> Callable:
    """The standard mask sampler for ``schedule`` (default linear): each token masked with prob 1 - alpha(t)."""
    schedule = LINEAR if schedule is None else schedule

    def mask_sampler(key, t, shape):
        p = (1.0 - schedule.alpha(t)).astype(jnp.float32)  # (B,)
        return jax.random.uniform(key, shape, dtype=jnp.float32) < p[:, None]  # (B, L)

    return mask_sampler


def loss_weight(schedule, t):
    """-alpha'(t) / (1 - alpha(t)), set to 0 where 1 - alpha(t) = 0. (B,) -> (B,)."""
    a = schedule.alpha(t)
    den = 1.0 - a
    return jnp.where(den > 0, -schedule.dalpha(t) / jnp.where(den > 0, den, 1.0), 0.0)


# ================================ the loss ============================================================
def per_example_loss(net, tokens, t, weight, mask, schedule, vocab_size: int):
    """MDM loss per example (B,) in nats per token (see module docstring). mask: (B, L) or (K, B, L)."""
    L = tokens.shape[-1]
    masks = mask if mask.ndim == 3 else mask[None]  # (K, B, L)
    wt = (weight * loss_weight(schedule, t)).astype(jnp.float32)  # (B,)

    def one(m):
        z = jnp.where(m, vocab_size, tokens)  # (B, L) partial states
        logp = jax.nn.log_softmax(network_logits(net, z), axis=-1)  # (B, L, V) float32
        nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]  # (B, L)
        return jnp.sum(jnp.where(m, nll, 0.0), axis=-1) / L  # (B,)

    return wt * jnp.mean(jax.vmap(one)(masks), axis=0)


def mdm_loss(net, tokens, t, weight, mask, schedule, vocab_size: int):
    """Batch mean of :func:`per_example_loss` (a scalar; unbiased for ELBO / L)."""
    return jnp.mean(per_example_loss(net, tokens, t, weight, mask, schedule, vocab_size))


@lru_cache(maxsize=64)
def _default_optimizer(lr: float, steps: int):
    """Adam with linear warm-up over 5% of the steps and cosine decay to 5% of ``lr``."""
    warm = max(1, steps // 20)
    return optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(steps, warm + 1), end_value=lr * 0.05))


@lru_cache(maxsize=64)
def _make_step(optimizer, schedule, vocab_size, t_sampler, mask_sampler):
    """The jitted training step (cached: repeated runs with the same hooks compile once per shape)."""

    @jax.jit
    def step(net, opt_state, key, tokens):
        kt, km = jax.random.split(key)
        t, w = t_sampler(kt, tokens.shape[0])
        mask = mask_sampler(km, t, tokens.shape)
        loss, grads = jax.value_and_grad(mdm_loss)(net, tokens, t, w, mask, schedule, vocab_size)
        updates, opt_state = optimizer.update(grads, opt_state, net)
        return optax.apply_updates(net, updates), opt_state, loss

    return step


# ================================ data ================================================================
def _markov_module():
    """``synthetic.markov`` (the scalable engine, issue 3) if it is installed, else None."""
    try:
        from synthetic import markov
    except ImportError:
        return None
    return markov


def data_sampler(source, length: int | None = None) -> tuple[Callable, int, int]:
    """Resolve a data source into ``(sample(key, n) -> (n, L) ints, V, L)``.

    ``source``: a :class:`Joint` (exact sampling from the table) or a language object with
    ``vocab_size``, ``length``, ``with_length`` (``length`` re-sizes it). A language is sampled, in this
    order, with its own ``sample(key, n)`` method; ``synthetic.markov.sample(lang, key, num)`` for
    Markov/n-gram/HMM languages when that module is installed; ancestral sampling (MarkovChain); i.i.d.
    blocks (languages with a ``block`` Joint and ``num_blocks``); or its enumerated ``lang.joint()`` if
    V**L <= 2**20.
    """
    if isinstance(source, Joint):
        if length is not None and length != source.length:
            raise ValueError(f"length={length} but the Joint has length {source.length}; build the Joint at that length.")
        return jax.jit(source.sample, static_argnums=1), source.vocab_size, source.length
    if not all(hasattr(source, a) for a in ("vocab_size", "length", "with_length")):
        raise TypeError(f"training data must be a theory.joint.Joint or a language (vocab_size, length, "
                        f"with_length, and .joint() or a sampler); got {type(source).__name__}.")
    lang = source.with_length(length) if (length is not None and length != source.length) else source
    V, L = int(lang.vocab_size), int(lang.length)
    markov = _markov_module()
    if callable(getattr(lang, "sample", None)):
        return (lambda key, n: lang.sample(key, n)), V, L
    if markov is not None and isinstance(lang, (MarkovChain, NGram, HMM)):
        return (lambda key, n: markov.sample(lang, key, n)), V, L
    if isinstance(lang, MarkovChain):
        return partial(_sample_markov_chain, jnp.asarray(lang.init), jnp.asarray(lang.trans), L), V, L
    block = getattr(lang, "block", None)
    if isinstance(block, Joint) and hasattr(lang, "num_blocks"):
        nb = int(lang.num_blocks)
        f = jax.jit(block.sample, static_argnums=1)
        return (lambda key, n: f(key, n * nb).reshape(n, nb * block.length)), V, L
    if V**L <= AUTO_JOINT_MAX and callable(getattr(lang, "joint", None)):
        joint = lang.joint()
        return jax.jit(joint.sample, static_argnums=1), V, L
    raise ValueError(f"cannot sample this {type(lang).__name__} at V**L = {V}**{L}: install synthetic.markov "
                     f"(Markov/n-gram/HMM at any length), give the language a sample(key, n) method, or pass a "
                     f"callable (key, n) -> (n, L) to train().")


def language_reference(source, length: int | None = None):
    """Exact conditionals of a language at any length if available, else None: the language's own
    ``denoiser()`` (e.g. block languages) or ``synthetic.markov.denoiser(lang)`` (Markov/n-gram/HMM)."""
    if isinstance(source, Joint):
        return exact_denoiser(source) if (source.vocab_size + 1) ** source.length <= AUTO_CYLINDER_MAX else None
    lang = source.with_length(length) if (length is not None and length != source.length) else source
    if callable(getattr(lang, "denoiser", None)):
        return lang.denoiser()
    markov = _markov_module()
    if markov is not None and isinstance(lang, (MarkovChain, NGram, HMM)) and hasattr(markov, "denoiser"):
        return markov.denoiser(lang)
    return None


@partial(jax.jit, static_argnums=(2, 4))
def _sample_markov_chain(init, trans, length, key, num):
    """Ancestral float64 sampling of a MarkovChain (fallback when synthetic.markov is absent): (num, L)."""
    keys = jax.random.split(key, length)
    x0 = categorical_f64(keys[0], jnp.broadcast_to(init, (num, init.shape[0])))

    def body(x, k):
        x = categorical_f64(k, trans[x])
        return x, x

    _, rest = jax.lax.scan(body, x0, keys[1:])  # (L-1, num)
    return jnp.concatenate([x0[:, None], rest.T], axis=1).astype(jnp.int32)


def _as_joint(source, length=None) -> Joint | None:
    """A Joint for exact evaluation if the source is (or cheaply enumerates into) one, else None."""
    if isinstance(source, Joint):
        return source
    if hasattr(source, "joint") and hasattr(source, "with_length"):
        lang = source.with_length(length) if (length is not None and length != source.length) else source
        if lang.vocab_size**lang.length <= AUTO_JOINT_MAX:
            return lang.joint()
    return None


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
    """denoiser.marginals over ``states`` in chunks. Learned denoisers are already jitted (cached per network
    structure); any other Denoiser is traceable by contract and is jitted here (one compile, not op-by-op)."""
    f = denoiser.marginals if isinstance(denoiser, LearnedDenoiser) else jax.jit(denoiser.marginals)
    return jnp.concatenate([f(states[i:i + chunk]) for i in range(0, states.shape[0], chunk)])


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
        return {"eps_learning": eps, "elbo": elbo, "elbo_per_token": elbo / L, "entropy": self.entropy,
                "elbo_gap": gap}


def exact_evaluation(joint: Joint, schedule=None, max_bytes: float | None = None) -> ExactEvaluation:
    """Prepare the exact evaluation of denoisers against ``joint`` (forward process with ``schedule``, default linear).

    Cost: the exact denoiser table ((V+1)**L, L, V) and one model call per partial state.
    """
    require_x64("exact_evaluation")
    if not isinstance(joint, Joint):
        raise TypeError(f"exact_evaluation needs a theory.joint.Joint, got {type(joint).__name__}.")
    schedule = _schedules.linear() if schedule is None else _schedules.validate(schedule)
    V, L = joint.vocab_size, joint.length
    S = (V + 1) ** L
    check_size(8 * 4 * S * L * V, f"Exact evaluation over (V+1)**L = {V + 1}**{L} partial states", max_bytes,
               "Use mc_evaluation (a fixed sample with standard errors)")
    ex = exact_denoiser(joint, max_bytes)
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
    """Feng2025's eps_learning of ``denoiser`` against ``joint``, exactly (see the module docstring)."""
    return exact_evaluation(joint, schedule)(denoiser)["eps_learning"]


@dataclass(frozen=True, eq=False)
class MCEvaluation:
    """Monte-Carlo evaluation on a fixed forward sample (tokens, t, masks) with standard errors.

    ``evaluation(denoiser)`` returns ``elbo`` (nats / sequence, unbiased) with ``elbo_se``; with a
    ``reference`` Denoiser also ``eps_learning`` (ratio estimator) with a delta-method ``eps_learning_se``.
    """

    tokens: jax.Array  # (n, L) clean
    states: jax.Array  # (n, L) masked
    weight: jax.Array  # (n,) -alpha'/(1-alpha)
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
        nll = jnp.where(masked, -jnp.log(jnp.where(masked, px, 1.0)), 0.0).sum(-1)  # (n,)
        e = np.asarray(self.weight * nll)
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
    """Fix a forward sample: clean ``tokens`` (n, L) from q, t ~ U(0, 1], masks with prob 1 - alpha(t).

    ``reference``: a Denoiser giving the exact conditionals (e.g. ``exact_denoiser(joint)`` or a Markov
    oracle) for eps_learning; without it only the ELBO is estimated.
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
    mask = jax.random.uniform(km, (n, L), dtype=jnp.float64) < (1.0 - schedule.alpha(t))[:, None]
    states = jnp.where(mask, vocab_size, tokens)
    q = None
    if reference is not None:
        check_denoiser(reference, vocab_size, L)
        q = _batched_marginals(reference, states, 8192)
        if q.dtype != jnp.float64:
            raise TypeError(f"reference.marginals returned {q.dtype}; eps_learning needs float64 conditionals.")
    return MCEvaluation(tokens, states, loss_weight(schedule, t), vocab_size, reference, q)


# ================================ training loop =======================================================
def train(denoiser: LearnedDenoiser, data, *, key, steps: int, batch_size: int = DEFAULT_BATCH,
          optimizer=None, learning_rate: float | None = None, schedule=None, t_sampler: Callable | None = None,
          mask_sampler: Callable | None = None, evaluation: Callable | None = None, eval_every: int | None = None,
          progress: bool = True, desc: str = "train"):
    """Train ``denoiser``'s network on ``data`` with the MDM loss; returns (trained denoiser, history DataFrame).

    ``data``: a Joint, a language, or a callable ``(key, n) -> (n, L)``. ``optimizer``: an optax
    transformation (default Adam with ``learning_rate``, linear warm-up over 5% of the steps and cosine
    decay). ``evaluation``: a callable denoiser -> dict (e.g. :func:`exact_evaluation`), run at step 0,
    every ``eval_every`` steps and at the end. History: one row per evaluation with ``step``,
    ``train_loss`` (mean of the batch losses since the previous row, NaN at step 0) and the evaluation's
    keys. Randomness: batch n uses ``fold_in(key_data, n)`` and ``fold_in(key_loss, n)``, so the same
    key gives the same parameters.
    """
    if not isinstance(denoiser, LearnedDenoiser):
        raise TypeError(f"train needs a LearnedDenoiser (synthetic.models.init_denoiser), got {type(denoiser).__name__}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    V, L = denoiser.vocab_size, denoiser.length
    if callable(data) and not hasattr(data, "joint") and not isinstance(data, Joint):
        sample_fn = data
    else:
        sample_fn, dV, dL = data_sampler(data)
        if (dV, dL) != (V, L):
            raise ValueError(f"data has (vocab_size, length) = ({dV}, {dL}) but the model was built for ({V}, {L}).")
    schedule = LINEAR if schedule is None else schedule
    t_sampler = uniform_t if t_sampler is None else t_sampler
    mask_sampler = bernoulli_mask(schedule) if mask_sampler is None else mask_sampler
    if optimizer is None:
        optimizer = _default_optimizer(float(DEFAULT_LR[denoiser.config.kind] if learning_rate is None else learning_rate),
                                       int(steps))
    step_fn = _make_step(optimizer, schedule, V, t_sampler, mask_sampler)
    k_data, k_loss = jax.random.split(key)
    net = denoiser.net
    opt_state = optimizer.init(net)
    config = denoiser.config
    eval_every = steps if not eval_every else int(eval_every)
    rows = []

    def record(n, losses):
        row = {"step": n, "train_loss": float(np.mean([float(x) for x in losses])) if losses else float("nan")}
        if evaluation is not None:
            row.update(evaluation(LearnedDenoiser(net, config)))
        rows.append(row)
        return row

    record(0, [])
    losses = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for n in bar:
        tokens = jnp.asarray(sample_fn(jax.random.fold_in(k_data, n), batch_size)).astype(jnp.int32)
        if tokens.shape != (batch_size, L):
            raise ValueError(f"the data sampler returned shape {tokens.shape}, expected ({batch_size}, {L}).")
        net, opt_state, loss = step_fn(net, opt_state, jax.random.fold_in(k_loss, n), tokens)
        losses.append(loss)
        if n % eval_every == 0 or n == steps:
            row = record(n, losses)
            losses = []
            if progress:
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "eps_learning", "elbo")})
    if not np.isfinite(rows[-1]["train_loss"]) and steps > 0:
        raise FloatingPointError(f"training diverged (train loss {rows[-1]['train_loss']}); lower the learning rate.")
    return LearnedDenoiser(net, config), pd.DataFrame(rows)


def fit_denoiser(source, *, key, length: int | None = None, steps: int | None = None, model: str = "transformer",
                 batch_size: int = DEFAULT_BATCH, learning_rate: float | None = None, optimizer=None, schedule=None,
                 t_sampler: Callable | None = None, mask_sampler: Callable | None = None,
                 evaluation: str | Callable = "auto", reference=None, eval_every: int | None = None,
                 eval_num: int = 4096, progress: bool = True, **model_sizes):
    """Train a small denoiser on a language in one call: ``(denoiser, history DataFrame)``.

    ``source``: a Joint or a structured language (``length`` re-sizes a language). ``model``: "transformer"
    (default sizes: ModelConfig), "tabular" or "lowrank"; ``model_sizes`` override ModelConfig fields.
    ``evaluation``: "auto" (exact if the language enumerates and (V+1)**L * L * V <= 2**22, else Monte Carlo
    on a fixed sample of ``eval_num`` draws, with eps_learning against ``reference`` or, by default, the
    language's exact conditionals (:func:`language_reference`: ``synthetic.markov.denoiser``, a block
    language's ``denoiser()``, or a small Joint's exact denoiser); without any, only the ELBO),
    "exact", "mc", "none", or a callable denoiser -> dict. ``eval_every`` defaults to steps // 10.
    ``key`` seeds everything (initialisation, data, masks, evaluation sample).
    """
    require_x64("fit_denoiser (its evaluation is float64)")
    if model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {model!r}.")
    sample_fn, V, L = data_sampler(source, length)
    steps = DEFAULT_STEPS[model] if steps is None else steps
    k_init, k_train, k_eval = jax.random.split(key, 3)
    den = LearnedDenoiser(init_network(ModelConfig(model, V, L, **model_sizes), k_init),
                          ModelConfig(model, V, L, **model_sizes))
    ev = _resolve_evaluation(evaluation, source, length, V, L, sample_fn, k_eval, reference, schedule, eval_num)
    return train(den, sample_fn, key=k_train, steps=steps, batch_size=batch_size, optimizer=optimizer,
                 learning_rate=learning_rate, schedule=schedule, t_sampler=t_sampler, mask_sampler=mask_sampler,
                 evaluation=ev, eval_every=eval_every or max(1, steps // 10), progress=progress,
                 desc=f"fit {model} V={V} L={L}")


def _resolve_evaluation(evaluation, source, length, V, L, sample_fn, key, reference, schedule, eval_num):
    if callable(evaluation):
        return evaluation
    if evaluation not in ("auto", "exact", "mc", "none"):
        raise ValueError(f"evaluation must be 'auto', 'exact', 'mc', 'none' or a callable, got {evaluation!r}.")
    if evaluation == "none":
        return None
    small = (V + 1) ** L * L * V <= EXACT_EVAL_MAX_ENTRIES
    joint = _as_joint(source, length) if (evaluation == "exact" or small or reference is None) else None
    if evaluation == "exact" or (evaluation == "auto" and joint is not None and small):
        if joint is None:
            raise ValueError("evaluation='exact' needs a Joint or a language small enough to enumerate.")
        return exact_evaluation(joint, schedule)
    if reference is None:  # exact conditionals for the Monte-Carlo eps_learning: the language's oracle first
        reference = language_reference(source, length)
    if reference is None and joint is not None:
        reference = language_reference(joint)
    tokens = sample_fn(jax.random.fold_in(key, 0), eval_num)
    return mc_evaluation(tokens, key=jax.random.fold_in(key, 1), vocab_size=V, reference=reference, schedule=schedule)


# ================================ checkpoints =========================================================
def save_checkpoint(path, denoiser: LearnedDenoiser, history: pd.DataFrame | None = None, meta: dict | None = None) -> str:
    """Save a LearnedDenoiser (config + float32 parameters, bit-exact) and its history to ``path`` (.npz)."""
    if not isinstance(denoiser, LearnedDenoiser):
        raise TypeError(f"save_checkpoint needs a LearnedDenoiser, got {type(denoiser).__name__}.")
    path = str(path)
    if not path.endswith(".npz"):
        raise ValueError(f"checkpoint path must end in .npz, got {path!r}.")
    leaves = jax.tree_util.tree_leaves(denoiser.net)
    arrays = {"__format__": np.array("mdm-theory-denoiser-v1"), "__config__": np.array(denoiser.config.to_json()),
              "__meta__": np.array(json.dumps(meta or {}, sort_keys=True, default=str))}
    for i, leaf in enumerate(leaves):
        arrays[f"param/{i:04d}"] = np.asarray(leaf)
    cols = [] if history is None else list(history.columns)
    arrays["__history_columns__"] = np.array(json.dumps(cols))
    for c in cols:
        arrays[f"history/{c}"] = history[c].to_numpy()
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path[:-4] + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path) -> tuple[LearnedDenoiser, pd.DataFrame, dict]:
    """Load ``(denoiser, history, meta)`` saved by :func:`save_checkpoint` (parameters bit-exact)."""
    with np.load(str(path), allow_pickle=False) as f:
        if "__format__" not in f or str(f["__format__"]) != "mdm-theory-denoiser-v1":
            raise ValueError(f"{path} is not an mdm-theory denoiser checkpoint (missing or wrong __format__).")
        config = ModelConfig.from_json(str(f["__config__"]))
        meta = json.loads(str(f["__meta__"]))
        skeleton = eqx.filter_eval_shape(init_network, config, jax.random.PRNGKey(0))
        shapes, treedef = jax.tree_util.tree_flatten(skeleton)
        keys = sorted(k for k in f.files if k.startswith("param/"))
        if len(keys) != len(shapes):
            raise ValueError(f"{path}: {len(keys)} parameter arrays but the {config.kind} config needs {len(shapes)}.")
        leaves = []
        for k, s in zip(keys, shapes):
            a = f[k]
            if a.shape != s.shape or a.dtype != s.dtype:
                raise ValueError(f"{path}: {k} has {a.shape} {a.dtype}, the config needs {s.shape} {s.dtype}.")
            leaves.append(jnp.asarray(a))
        net = jax.tree_util.tree_unflatten(treedef, leaves)
        cols = json.loads(str(f["__history_columns__"]))
        history = pd.DataFrame({c: f[f"history/{c}"] for c in cols})
    return LearnedDenoiser(net, config), history, meta


def train_or_load(path, source, *, key, length: int | None = None, model: str = "transformer", retrain: bool = False,
                  **fit_kwargs) -> tuple[LearnedDenoiser, pd.DataFrame]:
    """Load the checkpoint at ``path`` if it exists (and matches V, L, model), else :func:`fit_denoiser` and save.

    A checkpoint for another vocabulary, length or model kind raises ValueError (delete it or pass
    ``retrain=True``). The settings of the run are stored in the checkpoint's ``meta``.
    """
    _, V, L = data_sampler(source, length)
    if os.path.exists(str(path)) and not retrain:
        den, hist, meta = load_checkpoint(path)
        have = (den.vocab_size, den.length, den.config.kind)
        if have != (V, L, model):
            raise ValueError(f"checkpoint {path} holds a model for (V, L, kind) = {have}, not {(V, L, model)}; "
                             f"delete it, choose another path, or pass retrain=True.")
        return den, hist
    den, hist = fit_denoiser(source, key=key, length=length, model=model, **fit_kwargs)
    meta = {"key": np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key).tolist(),
            "length": L, "model": model,
            **{k: v for k, v in fit_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    save_checkpoint(path, den, hist, meta)
    return den, hist
