"""Feng2025 measurements: TER gap and SER of the MDM sampler versus steps N and length L.

Library side of ``experiments/steps_vs_length.py`` (the script is a thin loop over these functions).
Every function takes any Language (:mod:`theory.language`) and uses only its protocol members.

* :func:`exact_metrics` — exact log TER, TER gap, SER and KL(q||p_N) by enumeration (small L, any
  enumerable language) for any denoiser.
* :func:`mc_metrics` — Monte-Carlo log TER / TER gap / SER with standard errors at any L, through the
  core sampler :func:`theory.sampling.sample` and the language's exact conditionals (``denoiser()``),
  log q (``log_prob``) and H(q) (``entropy()``). The TER gap's reference log TER(q) = H(q)/L is exact, so
  its standard error is that of the sample mean of -log q(x)/L.
* :func:`min_steps` — the smallest N of a measured curve that reaches a target.
"""

from __future__ import annotations

import jax
import numpy as np

from theory import metrics
from theory.language import check_language, is_correct
from theory.policies import RandomOrder
from theory.sampling import exact_law, sample
from theory.validation import require_x64


def exact_metrics(lang, steps: int, *, reveal: str = "bernoulli", schedule=None, denoiser=None, policy=None) -> dict:
    """Exact log TER(p_N), TER gap, SER and KL(q || p_N) by enumeration (small L).

    ``lang``: an enumerable language (``joint()``, e.g. a Joint); ``denoiser`` defaults to q's exact denoiser.
    """
    require_x64("exact_metrics")
    q = lang.joint()
    law = exact_law(
        q, RandomOrder() if policy is None else policy, steps, reveal=reveal, schedule=schedule, denoiser=denoiser
    )
    p = np.asarray(law.probs)
    lt = metrics.log_ter(p, q)
    lq = q.entropy() / q.length
    return {
        "log_ter": lt,
        "log_ter_q": lq,
        "ter_gap": lt - lq,
        "ter_gap_se": 0.0,
        "ser": metrics.sequence_error_rate(p, q),
        "ser_se": 0.0,
        "kl_q_p": metrics.kl(np.asarray(q.probs), p),
        "expected_nfe": law.expected_nfe,
        "law": p,
    }


def mc_metrics(
    key,
    lang,
    steps: int,
    *,
    num: int,
    reveal: str = "bernoulli",
    schedule=None,
    denoiser=None,
    policy=None,
    batch_size: int | None = None,
) -> dict:
    """Monte-Carlo log TER(p_N), TER gap and SER with standard errors, and the mean NFE, at any L.

    ``lang``: any Language; ``denoiser`` defaults to its exact conditionals (``lang.denoiser()``);
    ``policy`` to RandomOrder (Feng2025's sampler). Samples are scored with the language's exact log q;
    log TER(q) = H(q)/L is exact.
    """
    require_x64("mc_metrics")
    check_language(lang)
    d = lang.denoiser() if denoiser is None else denoiser
    s = sample(
        key,
        d,
        RandomOrder() if policy is None else policy,
        steps,
        num=num,
        reveal=reveal,
        schedule=schedule,
        batch_size=batch_size,
    )
    toks = np.asarray(s.tokens)
    lq_x = np.asarray(lang.log_prob(toks), dtype=np.float64)
    L = toks.shape[1]
    ok = is_correct(lang, toks)
    lqr = lang.entropy() / L
    ser = metrics.ser_mc(ok)
    ter = metrics.log_ter_mc(lq_x, L)  # +inf (mean and se) if a sample leaves the support
    nfe = metrics.mean_se(np.asarray(s.nfe, dtype=np.float64))
    return {
        "log_ter": ter.mean,
        "log_ter_q": lqr,
        "ter_gap": ter.mean - lqr,
        "ter_gap_se": ter.se,
        "ser": ser.mean,
        "ser_se": ser.se,
        "n": len(lq_x),
        "nfe": nfe.mean,
        "nfe_se": nfe.se,
    }


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
