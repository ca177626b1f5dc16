"""Feng2025 measurements: TER gap and SER of the MDM sampler versus steps N and length L.

Library side of ``experiments/steps_vs_length.py`` (the script is a thin loop over these functions).

* :func:`exact_metrics` — exact log TER, TER gap, SER and KL(q||p_N) by enumeration (small L), for any
  language with ``.joint()`` and any denoiser.
* :func:`mc_metrics` — Monte-Carlo log TER / TER gap / SER with standard errors at any L: n-gram,
  Markov and HMM languages through the Markov engine (``synthetic.markov``: exact conditionals and
  exact log q), block languages (:mod:`synthetic.worst_case`) through their block denoiser. The TER
  gap's reference log TER(q) = H(q)/L is exact (closed-form entropy), so its standard error is that of
  the sample mean of -log q(x)/L.
* :class:`SmoothedDenoiser` — the learning-error variant: (1 - lam) q(x_i | z) + lam / V at every
  masked position. Since p~ >= (1 - lam) q pointwise, the per-token KL(q(.|z) || p~(.|z)) is at most
  eps_learning = -log(1 - lam) at every state (:func:`smoothing_eps_learning`).
* :func:`sample_random_order` — a fast Monte-Carlo sampler for the RandomOrder policy, equal in law to
  :func:`theory.sampling.sample` with ``RandomOrder``: the reveal step of every token is drawn up front
  (Bernoulli: independently with the unconditional probabilities pi_s of
  :func:`theory.bounds.unconditional_reveal_probs`; fixed counts: a uniform random permutation cut into
  consecutive groups of k_1, ..., k_N), then the steps run with values drawn independently from the
  denoiser's conditionals. The number of steps is a traced loop bound, so one compilation serves every N
  (the core sampler recompiles per N); steps that reveal nothing skip the denoiser call.
* :func:`min_steps` — the smallest N of a measured curve that reaches a target.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from theory import metrics
from theory.validation import require_x64
from theory.denoiser import SmoothedDenoiser, exact_denoiser, smoothed, smoothing_kl_bound  # noqa: F401 (re-exported)
from theory.policies import RandomOrder
from theory.sampling import categorical_f64, exact_law, make_plan, sample
from theory.bounds import unconditional_reveal_probs

from .worst_case import BlockLanguage


try:  # the scalable Markov / n-gram / HMM engine (issue 3)
    from . import markov as _markov
except ImportError:  # pragma: no cover - only before issue 3 is merged
    _markov = None


def has_markov_engine() -> bool:
    """True if ``synthetic.markov`` (exact conditionals at any L) is available."""
    return _markov is not None


# The smoothed "learning-error" denoiser lives with the other denoisers (shared with synthetic.tasks).
smoothing_eps_learning = smoothing_kl_bound


def exact_denoiser_of(lang):
    """The exact denoiser of a language at its length: block languages -> BlockDenoiser, Markov/n-gram/HMM
    -> ``synthetic.markov.denoiser`` (needs issue 3's engine), a Joint -> theory's exact denoiser."""
    if isinstance(lang, BlockLanguage):
        return lang.denoiser()
    if hasattr(lang, "probs"):
        return exact_denoiser(lang)
    if _markov is None:
        raise ValueError("Monte Carlo on Markov/n-gram/HMM languages needs synthetic.markov (issue 3), which is "
                         "not installed; use exact enumeration (exact_metrics) at small L or a BlockLanguage.")
    return _markov.denoiser(lang)


def entropy_of(lang) -> float:
    """Exact H(q) in nats (block languages: closed form; Markov/n-gram/HMM: synthetic.markov.entropy)."""
    if isinstance(lang, BlockLanguage):
        return lang.entropy()
    if hasattr(lang, "probs"):
        return lang.entropy()
    if _markov is None:
        return lang.joint().entropy()
    return float(_markov.entropy(lang))


def log_prob_of(lang, tokens) -> np.ndarray:
    if isinstance(lang, BlockLanguage):
        return lang.log_prob(tokens)
    if hasattr(lang, "probs"):
        return np.asarray(lang.log_prob(tokens))
    if _markov is None:
        return np.asarray(lang.joint().log_prob(tokens))
    return np.asarray(_markov.log_prob(lang, tokens))


def exact_metrics(lang, steps: int, *, reveal: str = "bernoulli", schedule=None, denoiser=None, policy=None) -> dict:
    """Exact log TER(p_N), TER gap, SER and KL(q || p_N) by enumeration (small L).

    ``lang``: a Joint or a language with ``.joint()``; ``denoiser`` defaults to q's exact denoiser.
    """
    require_x64("exact_metrics")
    q = lang if hasattr(lang, "probs") else lang.joint()
    law = exact_law(q, RandomOrder() if policy is None else policy, steps, reveal=reveal, schedule=schedule,
                    denoiser=denoiser)
    p = np.asarray(law.probs)
    lt = metrics.log_ter(p, q)
    lq = q.entropy() / q.length
    return {"log_ter": lt, "log_ter_q": lq, "ter_gap": lt - lq, "ter_gap_se": 0.0,
            "ser": metrics.sequence_error_rate(p, q), "ser_se": 0.0,
            "kl_q_p": metrics.kl(np.asarray(q.probs), p), "expected_nfe": law.expected_nfe, "law": p}


def mc_metrics(key, lang, steps: int, *, num: int, reveal: str = "bernoulli", schedule=None, denoiser=None,
               policy=None, batch_size: int | None = None) -> dict:
    """Monte-Carlo log TER(p_N), TER gap and SER with standard errors, at any L.

    ``denoiser`` defaults to the exact one (:func:`exact_denoiser_of`). Samples are scored with the
    language's exact log q; log TER(q) = H(q)/L is exact.
    """
    require_x64("mc_metrics")
    d = exact_denoiser_of(lang) if denoiser is None else denoiser
    if policy is None or isinstance(policy, RandomOrder):
        toks = sample_random_order(key, d, steps, num=num, reveal=reveal, schedule=schedule,
                                   batch_size=batch_size or 1000)
        nfe = float("nan")
    else:
        s = sample(key, d, policy, steps, num=num, reveal=reveal, schedule=schedule, batch_size=batch_size)
        toks, nfe = np.asarray(s.tokens), float(np.mean(np.asarray(s.nfe)))
    lq_x = log_prob_of(lang, toks)
    L = toks.shape[1]
    ok = np.isfinite(lq_x)
    lqr = entropy_of(lang) / L
    ser = metrics.ser_mc(ok)
    if ok.all():
        ter = metrics.log_ter_mc(lq_x, L)
    else:  # outside the support: log TER is infinite
        ter = metrics.Estimate(float("inf"), float("inf"), len(lq_x))
    return {"log_ter": ter.mean, "log_ter_q": lqr, "ter_gap": ter.mean - lqr, "ter_gap_se": ter.se,
            "ser": ser.mean, "ser_se": ser.se, "n": len(lq_x), "nfe": nfe}


def min_steps(steps, values, target: float, se=None, z: float = 0.0):
    """Smallest N in ``steps`` (sorted) with value + z * se <= target, or None if none does."""
    steps = np.asarray(steps)
    v = np.asarray(values, dtype=np.float64) + (0.0 if se is None else z * np.asarray(se, dtype=np.float64))
    order = np.argsort(steps)
    for N, val in zip(steps[order], v[order]):
        if val <= target:
            return int(N)
    return None


def mc_key(seed: int, *labels: int):
    """A PRNG key for one measured point: fold the integer labels into PRNGKey(seed)."""
    k = jax.random.PRNGKey(seed)
    for lab in labels:
        k = jax.random.fold_in(k, int(lab))
    return k


# ---- fast RandomOrder sampler ---------------------------------------------------------------------------
def reveal_steps(key, num: int, length: int, steps=None, *, reveal: str = "bernoulli", schedule=None,
                 counts=None) -> jnp.ndarray:
    """Reveal step (0-based) of every token under RandomOrder, shape (num, L) int32, and the number of steps.

    Bernoulli: i.i.d. per token with P(step = s) = pi_s (unconditional reveal probabilities). Fixed
    counts: token ranks from a uniform random permutation; rank r goes to the step s with
    K_{s-1} <= r < K_s, K_s = k_1 + ... + k_s.
    """
    plan = make_plan(RandomOrder(), length, steps, reveal=reveal, schedule=schedule, counts=counts)
    u = jax.random.uniform(key, (num, length), dtype=jnp.float64)
    if plan.mode == "bernoulli":
        cdf = jnp.asarray(np.cumsum(unconditional_reveal_probs(plan.values)))
        st = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    else:
        rank = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
        st = jnp.searchsorted(jnp.asarray(np.cumsum(plan.values)), rank, side="right")
    return jnp.minimum(st, plan.max_steps - 1).astype(jnp.int32), plan.max_steps


@partial(jax.jit, static_argnames=("denoiser",))
def _run_reveal_steps(key, step_of, num_steps, denoiser):
    V = denoiser.vocab_size
    states0 = jnp.full(step_of.shape, V, dtype=jnp.int32)

    def body(n, states):
        reveal = step_of == n  # (B, L)

        def do(s):
            marg = denoiser.marginals(s)  # (B, L, V)
            vals = categorical_f64(jax.random.fold_in(key, n), marg).astype(jnp.int32)
            return jnp.where(reveal, vals, s)

        return jax.lax.cond(jnp.any(reveal), do, lambda s: s, states)

    return jax.lax.fori_loop(0, num_steps, body, states0)


def sample_random_order(key, denoiser, steps=None, *, num: int, reveal: str = "bernoulli", schedule=None,
                        counts=None, batch_size: int = 1000) -> np.ndarray:
    """Draw ``num`` sequences (num, L) from the RandomOrder MDM sampler (same law as theory.sampling.sample)."""
    require_x64("sample_random_order")
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    L = denoiser.length
    out = []
    for b, a in enumerate(range(0, num, batch_size)):
        kb = jax.random.fold_in(key, b)
        k1, k2 = jax.random.split(kb)
        step_of, n_steps = reveal_steps(k1, min(batch_size, num - a), L, steps, reveal=reveal, schedule=schedule,
                                        counts=counts)
        out.append(np.asarray(_run_reveal_steps(k2, step_of, jnp.int32(n_steps), denoiser)))
    return np.concatenate(out)
