"""A registry of published MDM samplers, each composed from the toolkit's policies, schedules and reveal modes.

Every entry is a :class:`Sampler` with a Monte-Carlo face and an exact face that describe the same law::

    s = get_sampler("llada-low-confidence")          # or get_sampler("eb-sampler", gamma=0.5)
    out = s.sample(key, denoiser, steps, num=1000)    # theory.sampling.Samples: tokens (num, L), nfe (num,)
    law = s.exact_law(joint, steps)                   # theory.sampling.Law: probs over V**L, expected_nfe

``steps`` is the sampler's step budget N; adaptive samplers (EB, confidence threshold) choose their own
number of steps and ignore it (their knob is ``gamma`` / ``tau``, passed to :func:`get_sampler`).

The entries, in the community's own words (each class docstring gives the formulas):

==========================  ==========================================================================
``mdlm``                    MDLM / MD4 ancestral sampling: random order, Bernoulli reveal, linear alpha
``llada-low-confidence``    LLaDA: fixed counts (even split), keep the tokens whose *sampled* value is
                            most probable (the rest are remasked)
``llada-semi-ar``           LLaDA's semi-autoregressive variant: blocks left to right, steps split evenly
``topk-confidence``         the max-probability Top-k rule (theory.policies.TopK) with LLaDA's counts
``maskgit``                 MaskGIT: cosine mask schedule, sampled-token confidence + annealed Gumbel noise
``maskgit-maxprob``         simpler MaskGIT variant: toolkit cosine counts, max-probability confidence
``eb-sampler``              BenHamu2025's entropy-bounded unmasking (theory.policies.EntropyBounded)
``confidence-threshold``    Fast-dLLM-style: reveal every mask with confidence > tau, at least one
``remdm-cap``               ReMDM remasking (cap strategy): clean tokens remasked with prob sigma_t
==========================  ==========================================================================

Three engines. Samplers expressible as (policy, schedule, reveal) run through
:func:`theory.sampling.exact_law` / :func:`theory.sampling.sample` (:class:`PolicySampler`). Sampled-token
confidence (LLaDA, MaskGIT) ranks positions by the probability of the value the sampler *drew*, so the
reveal set depends on the values; the core engine cannot express that, and :class:`SampledConfidenceSampler`
enumerates the value draws (V**m for m masked positions) and, with Gumbel noise, the Plackett–Luce law
of the kept set. ReMDM remasks clean tokens (:class:`ReMDMSampler`): its exact law propagates a dense
distribution over the (V+1)**L partial states through the per-position product transition. Both own
engines are for small enumerable instances (they say so and point to ``sample`` when too large).

NFE counts the steps that change the sequence (reveal or remask at least one token), as
:mod:`theory.sampling` and :mod:`theory.anyprocess` do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import sampling as _sampling
from .denoiser import check_denoiser
from .joint import Joint
from .policies import EntropyBounded, Policy, RandomOrder, TopK, pad_batch, register_policy, reveal_by_score
from .pytree import traceable
from .rng import fold_in
from .sampling import Law, Samples, batched_marginals, inverse_cdf, position_uniforms
from .schedules import Schedule, alphas_on_grid, cosine, linear
from .states import strides
from .validation import check_steps, human_bytes, require_x64

__all__ = [
    "SAMPLERS",
    "ConfidenceThreshold",
    "PolicySampler",
    "ReMDMController",
    "ReMDMSampler",
    "SampledConfidenceSampler",
    "Sampler",
    "get_sampler",
    "list_samplers",
    "remdm_controller",
    "llada_counts",
    "maskgit_counts",
    "semi_ar_plan",
]

#: Largest (V+1)**L the own exact engines accept: ReMDM's dense step transition is (V+1)**L squared
#: float64s (4096**2 * 8 B = 128 MiB); the sampled-confidence engine loops over the states in Python.
_MAX_EXACT_STATES = 4096


# ================================ policies the registry needs ========================================
@register_policy(data_fields=("tau",))
@dataclass(frozen=True)
class ConfidenceThreshold(Policy):
    """Reveal every masked position whose confidence max_v p(x_l = v | z) exceeds ``tau``; at least the
    single most confident one (ties by position). Adaptive (``uses_count`` False) and deterministic.

    Source: Wu et al. 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache
    and Parallel Decoding" (confidence-aware parallel decoding, Sec. 3.3: unmask every token with
    confidence above a threshold, else the most confident one; default threshold 0.9).
    """

    tau: float = 0.9

    uses_count = False
    deterministic = True

    def __post_init__(self):
        if isinstance(self.tau, bool):
            raise TypeError("ConfidenceThreshold tau must be a float in [0, 1], got a bool.")
        try:
            t = float(self.tau)
        except (TypeError, ValueError):
            raise TypeError(f"ConfidenceThreshold tau must be a float in [0, 1], got {self.tau!r}.") from None
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"ConfidenceThreshold tau must lie in [0, 1] (a probability), got {self.tau!r}.")
        object.__setattr__(self, "tau", t)

    def count(self, state, marginals):
        """Tokens revealed this step: #(masked with confidence > tau), at least 1 if any mask. (L,), (L, V) -> ()."""
        masked = state == marginals.shape[-1]
        conf = jnp.max(marginals, axis=-1)
        n = jnp.sum(masked & (conf > self.tau))
        return jnp.where(jnp.any(masked), jnp.maximum(n, 1), 0)

    def select(self, key, state, marginals, count):
        masked = state == marginals.shape[-1]
        return reveal_by_score(-jnp.max(marginals, axis=-1), masked, self.count(state, marginals))

    def reveal_distribution(self, states, marginals, counts):
        """One reveal set per row (deterministic): the jitted, vmapped ``select`` with a traced ``tau`` (one
        compilation per batch shape serves every tau), batches padded to a power of two (>= 8)."""
        states = np.asarray(states)
        B = states.shape[0]
        zs, ms = pad_batch(states, marginals)
        sel = np.asarray(_threshold_batch(self, jnp.asarray(zs), jnp.asarray(ms)))[:B]
        return np.arange(B), sel & (states == ms.shape[-1]), np.ones(B)


@jax.jit
def _threshold_batch(policy, states, marginals):
    """``policy.select`` over a batch; ``policy`` is a traced pytree (its tau a leaf)."""
    return jax.vmap(lambda s, m: policy.select(None, s, m, 0))(states, marginals)


# ================================ step plans =========================================================
def llada_counts(length: int, steps: int) -> np.ndarray:
    """LLaDA's ``get_num_transfer_tokens``: L // N tokens per step, one more in the first L % N steps.

    Nie et al. 2025, "Large Language Diffusion Models", reference code ``generate.py``. (N,) int64, sum L
    (steps beyond L reveal nothing).
    """
    N = check_steps(steps)
    L = int(length)
    c = np.full(N, L // N, dtype=np.int64)
    c[: L % N] += 1
    return c


def semi_ar_plan(length: int, block_size: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """LLaDA's semi-autoregressive plan: (counts (N,), block index of each step (N,)).

    L / B blocks of B = ``block_size`` tokens, decoded left to right, N / (L / B) steps each, the counts
    of a block split by :func:`llada_counts`. LLaDA requires B | L and (L / B) | N; so do we.
    """
    N = check_steps(steps)
    L, B = int(length), int(block_size)
    if B < 1 or L % B:
        raise ValueError(f"block_size must divide the length L = {L} (LLaDA's rule), got {block_size}.")
    nb = L // B
    if N % nb:
        raise ValueError(
            f"steps must be a multiple of the number of blocks L / block_size = {nb} (LLaDA splits the steps "
            f"evenly over blocks), got steps = {N}; use e.g. steps = {nb * max(1, round(N / nb))}."
        )
    per = N // nb
    counts = np.concatenate([llada_counts(B, per) for _ in range(nb)])
    return counts, np.repeat(np.arange(nb, dtype=np.int64), per)


def maskgit_counts(length: int, steps: int) -> np.ndarray:
    """MaskGIT's reveal counts (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer", Eq. 3
    and the reference ``parallel_decode.py``): at step n = 0..N-1, ratio r = (n+1)/N, the number left
    masked is  mask_len = clip(floor(L cos(pi r / 2)), 1, #masked - 1)  (at least one token stays masked
    and at least one is kept), except the last step, which reveals everything. (N,) int64, sum L.
    """
    N = check_steps(steps)
    L = int(length)
    left, out = L, []
    for n in range(N):
        if n == N - 1:
            out.append(left)
            break
        keep_masked = int(np.floor(L * np.cos(np.pi / 2 * (n + 1) / N)))
        keep_masked = max(1, min(left - 1, keep_masked))
        out.append(left - keep_masked)
        left = keep_masked
    return np.asarray(out, dtype=np.int64)


# ================================ the interface =======================================================
@dataclass(frozen=True)
class Sampler:
    """A published sampler: ``name`` (registry key), ``source`` (citation and the equation used).

    ``sample(key, denoiser, steps, *, num) -> Samples`` (tokens (num, L) int, nfe (num,)) and
    ``exact_law(joint_or_denoiser, steps) -> Law`` (probs over V**L in theory.states order, expected_nfe)
    describe the same law; the tests chi-square one against the other.
    """

    name: str
    source: str

    def sample(self, key, denoiser, steps: int, *, num: int) -> Samples:  # pragma: no cover - interface
        raise NotImplementedError

    def exact_law(self, joint_or_denoiser, steps: int) -> Law:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def adaptive(self) -> bool:
        """True if the sampler chooses its own number of steps (``steps`` is ignored)."""
        return False


def _denoiser_of(joint_or_denoiser):
    if isinstance(joint_or_denoiser, Joint):
        return joint_or_denoiser.denoiser()
    check_denoiser(joint_or_denoiser)
    return joint_or_denoiser


def _check_num(num):
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    return int(num)


# ================================ composed from the core engine ======================================
@dataclass(frozen=True)
class PolicySampler(Sampler):
    """A (policy, schedule, reveal) triple run by :func:`theory.sampling.exact_law` / :func:`~theory.sampling.sample`.

    ``counts`` = "schedule" (the schedule's fixed counts or Bernoulli probabilities, theory.schedules) or
    "llada" (:func:`llada_counts`, with ``reveal="fixed"``). Adaptive policies ignore ``steps``.
    """

    policy: object = field(default_factory=RandomOrder)
    schedule: Schedule = field(default_factory=linear)
    reveal: str = "fixed"
    counts: str = "schedule"

    def __post_init__(self):
        if self.reveal not in _sampling.REVEALS:
            raise ValueError(f"reveal must be one of {_sampling.REVEALS}, got {self.reveal!r}.")
        if self.counts not in ("schedule", "llada"):
            raise ValueError(f"counts must be 'schedule' or 'llada', got {self.counts!r}.")
        if self.counts == "llada" and self.reveal != "fixed":
            raise ValueError("counts='llada' is a fixed-count plan: use reveal='fixed'.")

    @property
    def adaptive(self) -> bool:
        return not getattr(self.policy, "uses_count", True)

    def _plan(self, length: int, steps):
        if self.adaptive:
            return {}
        if self.counts == "llada":
            return {"counts": llada_counts(length, steps)}
        return {"steps": check_steps(steps), "reveal": self.reveal, "schedule": self.schedule}

    def sample(self, key, denoiser, steps: int, *, num: int) -> Samples:
        check_denoiser(denoiser)
        return _sampling.sample(key, denoiser, self.policy, num=_check_num(num), **self._plan(denoiser.length, steps))

    def exact_law(self, joint_or_denoiser, steps: int) -> Law:
        L = _denoiser_of(joint_or_denoiser).length
        return _sampling.exact_law(joint_or_denoiser, self.policy, **self._plan(L, steps))


# ================================ sampled-token confidence (LLaDA, MaskGIT) ==========================
VALUES, NOISE = 0, 1  # fold_in tags of a step key (per sample i: fold_in(key, i); step n: fold_in(., n))


@dataclass(frozen=True)
class SampledConfidenceSampler(Sampler):
    """Draw a value for every masked position, keep the ``k_n`` whose drawn value is most probable, remask the rest.

    Step n (n = 0..N-1) at state z with conditionals p_l = p(x_l | z):

    1. x̂_l ~ p_l independently for every masked l (float64 inverse CDF);
    2. confidence c_l = log p_l(x̂_l) + tau_n g_l,  g_l ~ Gumbel(0, 1) i.i.d.,
       tau_n = ``choice_temperature`` (1 - (n+1)/N)  (MaskGIT's annealed noise; 0 = no noise);
       c_l = -inf outside the step's block (semi-AR) and at clean positions;
    3. reveal x̂ at the k_n positions of largest c (ties, possible only when tau_n = 0, by position).

    Counts k_n: ``counts="llada"`` (:func:`llada_counts`, or :func:`semi_ar_plan` with ``block_size``) or
    ``"maskgit"`` (:func:`maskgit_counts`). Exact law: for each partial state, enumerate the V**m value
    draws of its m eligible masked positions; with tau_n = 0 the kept set is the top-k_n (deterministic),
    with tau_n > 0 sorting c is a Plackett–Luce ranking with weights w_l = p_l(x̂_l)**(1/tau_n), so
    P(kept set = S) = sum over orderings (s_1..s_k) of S of prod_i w_{s_i} / (W - w_{s_1} - ... - w_{s_{i-1}})
    (W = sum of the eligible weights): enumerated over the k-permutations (small L only).
    """

    counts: str = "llada"
    block_size: int | None = None
    choice_temperature: float = 0.0

    def __post_init__(self):
        if self.counts not in ("llada", "maskgit"):
            raise ValueError(f"counts must be 'llada' or 'maskgit', got {self.counts!r}.")
        if self.block_size is not None and (isinstance(self.block_size, bool) or int(self.block_size) < 1):
            raise ValueError(f"block_size must be a positive int or None, got {self.block_size!r}.")
        if self.block_size is not None and self.counts != "llada":
            raise ValueError("block_size (semi-autoregressive blocks) goes with counts='llada'.")
        if not float(self.choice_temperature) >= 0:
            raise ValueError(f"choice_temperature must be >= 0, got {self.choice_temperature!r}.")

    def plan(self, length: int, steps: int):
        """(counts (N,), lo (N,), hi (N,), tau (N,)): reveal counts, eligible window [lo, hi), noise scale."""
        N = check_steps(steps)
        L = int(length)
        if self.counts == "maskgit":
            c, lo, hi = maskgit_counts(L, N), np.zeros(N, np.int64), np.full(N, L, np.int64)
        elif self.block_size is None:
            c, lo, hi = llada_counts(L, N), np.zeros(N, np.int64), np.full(N, L, np.int64)
        else:
            c, blk = semi_ar_plan(L, int(self.block_size), N)
            lo, hi = blk * int(self.block_size), (blk + 1) * int(self.block_size)
        tau = float(self.choice_temperature) * (1.0 - (np.arange(N) + 1.0) / N)
        return c, lo, hi, tau

    # ---- Monte Carlo ----
    def sample(self, key, denoiser, steps: int, *, num: int) -> Samples:
        require_x64("SampledConfidenceSampler.sample")
        check_denoiser(denoiser)
        num = _check_num(num)
        L = denoiser.length
        c, lo, hi, tau = self.plan(L, steps)
        arrs = tuple(jnp.asarray(a) for a in (c.astype(np.int32), lo.astype(np.int32), hi.astype(np.int32)))
        tau_a = jnp.asarray(tau, dtype=jnp.float64)
        run = _jitted(_conf_run, traceable(denoiser))
        toks, nfes = [], []
        bs = _sampling._batch_bucket(num)
        for a in range(0, num, bs):
            keys = fold_in(key, jnp.arange(a, a + bs))
            t, f = run(keys, *arrs, tau_a, denoiser=denoiser)
            n = min(bs, num - a)
            toks.append(np.asarray(t)[:n])
            nfes.append(np.asarray(f)[:n])
        return Samples(jnp.asarray(np.concatenate(toks)), jnp.asarray(np.concatenate(nfes)))

    # ---- exact ----
    def exact_law(self, joint_or_denoiser, steps: int) -> Law:
        require_x64("SampledConfidenceSampler.exact_law")
        den = _denoiser_of(joint_or_denoiser)
        V, L = den.vocab_size, den.length
        _check_small(V, L, self.name)
        c, lo, hi, tau = self.plan(L, steps)
        st = strides(V + 1, L)
        S = (V + 1) ** L
        probs = np.zeros(S)
        probs[V * st.sum()] = 1.0
        nfe = 0.0
        for n in range(len(c)):
            idx = np.nonzero(probs > 0)[0]
            states = (idx[:, None] // st) % (V + 1)  # (K, L)
            marg = batched_marginals(den, states)  # (K, L, V)
            new = np.zeros(S)
            for i in range(len(idx)):
                elig = np.nonzero((states[i] == V) & (np.arange(L) >= lo[n]) & (np.arange(L) < hi[n]))[0]
                k = min(int(c[n]), elig.size)
                if k == 0:
                    new[idx[i]] += probs[idx[i]]
                    continue
                nfe += probs[idx[i]]
                children, w = _conf_children(idx[i], marg[i, elig], elig, k, float(tau[n]), st, V)
                np.add.at(new, children, probs[idx[i]] * w)
            probs = new
        final = probs[_clean_index(V, L)]
        return Law(jnp.asarray(final), float(nfe), int(len(c)))


def _check_small(V: int, L: int, who: str):
    S = (V + 1) ** L
    if S > _MAX_EXACT_STATES:
        raise ValueError(
            f"{who}'s exact law enumerates the (V+1)**L = {V + 1}**{L} = {S} partial states (a dense step "
            f"transition of {human_bytes(8.0 * S * S)}); it accepts at most {_MAX_EXACT_STATES}. Use the sampler's "
            "Monte-Carlo face, Sampler.sample, which scales to any L."
        )


def _clean_index(V: int, L: int) -> np.ndarray:
    """Indices in (V+1)**L of the V**L clean sequences, in V**L (theory.states) order."""
    seqs = np.stack(np.meshgrid(*[np.arange(V)] * L, indexing="ij"), -1).reshape(-1, L)
    return seqs @ strides(V + 1, L)


def _conf_children(parent: int, marg, elig, k: int, tau: float, st, V: int):
    """Children (indices in (V+1)**L) and probabilities of one sampled-confidence step from ``parent``.

    ``marg`` (m, V) conditionals at the m eligible masked positions ``elig``; k tokens kept.
    """
    m = elig.size
    combos = _sampling.value_combos(V, m)  # (C, m)
    pv = marg[np.arange(m)[None, :], combos]  # (C, m) p_l(x̂_l)
    pc = pv.prod(1)  # (C,)
    keep = pc > 0
    combos, pv, pc = combos[keep], pv[keep], pc[keep]
    sp = st[elig]  # (m,)
    base = parent  # masks (value V) at elig: child = parent + sum (x̂_l - V) stride_l over kept l
    if tau == 0.0:
        order = np.argsort(-pv, axis=1, kind="stable")[:, :k]  # (C, k) ranks by probability, ties by position
        sel = np.zeros(pv.shape, bool)
        np.put_along_axis(sel, order, True, axis=1)
        child = base + ((combos - V) * sp * sel).sum(1)
        return child, pc
    logw = np.log(pv) / tau  # (C, m) Plackett-Luce log-weights
    logw = logw - logw.max(1, keepdims=True)
    w = np.exp(logw)
    W = w.sum(1)  # (C,)
    perms = np.array(list(itertools.permutations(range(m), k)), dtype=np.int64)  # (P, k)
    wp = w[:, perms]  # (C, P, k)
    prev = np.concatenate([np.zeros(wp.shape[:2] + (1,)), np.cumsum(wp, axis=2)[:, :, :-1]], axis=2)
    pl = np.prod(wp / (W[:, None, None] - prev), axis=2)  # (C, P)
    sel = np.zeros((perms.shape[0], m), bool)
    sel[np.arange(perms.shape[0])[:, None], perms] = True  # (P, m)
    child = base + np.einsum("cm,pm->cp", (combos - V) * sp, sel.astype(np.int64))  # (C, P)
    return child.reshape(-1), (pc[:, None] * pl).reshape(-1)


def _step_keys(keys, n):
    """Step n's value and noise keys of every sample: fold_in(fold_in(k_i, n), VALUES / NOISE) (batched fold_in,
    bit for bit jax.random.fold_in)."""
    skeys = fold_in(keys, n)
    return fold_in(skeys, VALUES), fold_in(skeys, NOISE)


def _conf_run(keys, counts, lo, hi, tau, denoiser):
    """Jitted Monte-Carlo loop of :class:`SampledConfidenceSampler` (N = counts.shape[0] steps)."""
    B = keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    pos = jnp.arange(L, dtype=jnp.int32)

    def body(n, c):
        states, nfe = c
        vkeys, gkeys = _step_keys(keys, n)
        marg = denoiser.marginals(states)  # (B, L, V)
        u = jax.vmap(lambda k: position_uniforms(k, pos))(vkeys)  # (B, L)
        vals = inverse_cdf(marg, u).astype(jnp.int32)  # (B, L)
        pv = jnp.take_along_axis(marg, vals[..., None], axis=-1)[..., 0]  # (B, L) p(x̂)
        g = jax.vmap(lambda k: jax.random.gumbel(k, (L,), dtype=jnp.float64))(gkeys)
        elig = (states == V) & (pos >= lo[n]) & (pos < hi[n])
        score = jnp.where(tau[n] > 0, jnp.log(pv) + tau[n] * g, pv)  # tau = 0: rank by p (exact ties kept)
        score = jnp.where(elig, score, -jnp.inf)
        reveal = jax.vmap(lambda s, e: reveal_by_score(-s, e, counts[n]))(score, elig)
        states = jnp.where(reveal, vals, states)
        return states, nfe + jnp.any(reveal, axis=1).astype(jnp.int32)

    init = (jnp.full((B, L), V, dtype=jnp.int32), jnp.zeros((B,), jnp.int32))
    return jax.lax.fori_loop(0, counts.shape[0], body, init)


_JITTED: dict = {}


def _jitted(run, denoiser_traced: bool):
    """``jax.jit(run)`` with the denoiser traced (a registered pytree) or static (hashable), built once each."""
    key = (run, denoiser_traced)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(run, static_argnames=() if denoiser_traced else ("denoiser",))
    return _JITTED[key]


# ================================ ReMDM remasking =====================================================
@dataclass(frozen=True)
class ReMDMSampler(Sampler):
    """ReMDM remasking, "cap" strategy (Wang et al. 2025, "Remasking Discrete Diffusion Models with
    Inference-Time Scaling", Eq. 7 (the remasking posterior) with sigma_t of ReMDM-cap).

    Fixed length L, N steps on the grid t_n = 1 - n/N (toolkit convention: alpha(t) = P(clean),
    alpha(1) = 0). From t to s < t, every position independently (conditionals p_l from z_t):

    * clean token: remasked with probability sigma_t = min(eta, (1 - alpha_s) / alpha_t) (0 if alpha_t = 0),
      else kept;
    * mask: revealed with probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t), value ~ p_l.

    So P(clean at s) = alpha_s as in MDLM, and eta = 0 is MDLM ancestral sampling exactly (the tests
    check it). The last step has alpha_s = 1, sigma = 0: every mask is revealed and the output is clean.

    This is an any-process (Yang2025) generation with the remask bit only; it is run here with a fixed
    N-step loop rather than :func:`theory.anyprocess.exact_law`, whose "mask-free fixed point" stopping
    rule would end a run early on a clean sequence that happens not to be remasked at one step (true
    ReMDM continues and may remask later). Exact law: a dense distribution over the (V+1)**L partial
    states, each step's transition the product over positions of the rule above (small L only).
    :func:`remdm_controller` gives the same process as an AP-MDM controller (with a clock mask that
    defuses that stop); the tests check that anyprocess.exact_law of it equals this law to 1e-12.
    """

    eta: float = 0.04
    schedule: Schedule = field(default_factory=linear)

    def __post_init__(self):
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"eta (ReMDM-cap's remasking cap) must lie in [0, 1], got {self.eta!r}.")

    def rates(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(sigma (N,), unmask probability (N,)) of each step."""
        a = alphas_on_grid(self.schedule, check_steps(steps))  # alpha at t_0 = 1 .. t_N = 0 (sampling order)
        at, as_ = a[:-1], a[1:]
        sigma = np.where(at > 0, np.minimum(float(self.eta), (1.0 - as_) / np.where(at > 0, at, 1.0)), 0.0)
        den = 1.0 - at
        pu = np.where(den > 0, (as_ - (1.0 - sigma) * at) / np.where(den > 0, den, 1.0), 1.0)
        pu[-1], sigma[-1] = 1.0, 0.0
        return sigma, np.clip(pu, 0.0, 1.0)

    def exact_law(self, joint_or_denoiser, steps: int) -> Law:
        require_x64("ReMDMSampler.exact_law")
        den = _denoiser_of(joint_or_denoiser)
        V, L = den.vocab_size, den.length
        _check_small(V, L, self.name)
        sigma, pu = self.rates(steps)
        S = (V + 1) ** L
        st = strides(V + 1, L)
        allstates = (np.arange(S)[:, None] // st) % (V + 1)  # (S, L)
        probs = np.zeros(S)
        probs[V * st.sum()] = 1.0
        nfe = 0.0
        for n in range(len(pu)):
            idx = np.nonzero(probs > 0)[0]
            z = allstates[idx]  # (K, L)
            marg = batched_marginals(den, z)  # (K, L, V)
            masked = z == V
            out = np.zeros(z.shape + (V + 1,))  # (K, L, V+1) per-position outcome law
            out[..., :V] = np.where(masked[..., None], pu[n] * marg, 0.0)
            out[..., V] = np.where(masked, 1.0 - pu[n], sigma[n])
            kk, ll = np.nonzero(~masked)
            out[kk, ll, z[kk, ll]] = 1.0 - sigma[n]
            T = out[:, 0, :]
            for pos in range(1, L):
                T = (T[:, :, None] * out[:, pos, None, :]).reshape(len(idx), -1)  # (K, (V+1)**(pos+1))
            stay = T[np.arange(len(idx)), idx]
            nfe += float(np.sum(probs[idx] * (1.0 - stay)))
            probs = probs[idx] @ T
        return Law(jnp.asarray(probs[_clean_index(V, L)]), float(nfe), int(len(pu)))

    def sample(self, key, denoiser, steps: int, *, num: int) -> Samples:
        require_x64("ReMDMSampler.sample")
        check_denoiser(denoiser)
        num = _check_num(num)
        sigma, pu = self.rates(steps)
        run = _jitted(_remdm_run, traceable(denoiser))
        toks, nfes = [], []
        bs = _sampling._batch_bucket(num)
        for a in range(0, num, bs):
            keys = fold_in(key, jnp.arange(a, a + bs))
            t, f = run(keys, jnp.asarray(sigma), jnp.asarray(pu), denoiser=denoiser)
            n = min(bs, num - a)
            toks.append(np.asarray(t)[:n])
            nfes.append(np.asarray(f)[:n])
        return Samples(jnp.asarray(np.concatenate(toks)), jnp.asarray(np.concatenate(nfes)))


@dataclass(frozen=True, eq=False)
class ReMDMController:
    """ReMDM as an any-process (Yang2025) controller for :func:`theory.anyprocess.exact_law` (``branches`` only).

    Sequences carry one extra trailing mask, a *clock*, that always predicts M and is deleted at the last
    step (delete bit 1 at n = N - 1): with it a sequence is never mask-free before the end, so the engine's
    "mask-free fixed point" stop cannot cut a ReMDM run short. Positions 0..L-1 follow
    :class:`ReMDMSampler`'s rule (remask bit = sigma_n on clean tokens; a mask predicts p_l with probability
    pu_n, else M). Run with ``init = (V,) * (L + 1)``, ``max_steps = N``, ``stop_when_clean=True``; the law of
    the clean output (``AnyLaw.table(L)``) is ReMDM's. (Its NFE also counts the clock's deletion when the
    sequence was already clean before the last step.) Build with :func:`remdm_controller`.
    """

    denoiser: object
    sigma: np.ndarray
    pu: np.ndarray
    vocab_size: int

    def branches(self, states, n):
        states = np.asarray(states)
        V = self.vocab_size
        K, L1 = states.shape
        z = states[:, : L1 - 1]
        marg = batched_marginals(self.denoiser, z)  # (K, L, V)
        masked = z == V
        tp = np.zeros((K, L1, V + 1))
        tp[:, :-1, :V] = self.pu[n] * marg
        tp[:, :-1, V] = 1.0 - self.pu[n]
        tp[:, -1, V] = 1.0  # the clock stays masked ...
        bp = np.zeros((K, L1, 3))
        bp[:, :-1, 0] = np.where(masked, 0.0, self.sigma[n])  # remask clean tokens
        bp[:, -1, 2] = 1.0 if n == len(self.pu) - 1 else 0.0  # ... until it is deleted at the last step
        return np.arange(K), np.ones(K), tp, bp


def remdm_controller(sampler: ReMDMSampler, denoiser, steps: int) -> ReMDMController:
    """The any-process controller of ``sampler`` (a :class:`ReMDMSampler`) with ``denoiser`` and N = ``steps``."""
    check_denoiser(denoiser)
    sigma, pu = sampler.rates(steps)
    return ReMDMController(denoiser, sigma, pu, int(denoiser.vocab_size))


def _remdm_run(keys, sigma, pu, denoiser):
    B = keys.shape[0]
    V, L = denoiser.vocab_size, denoiser.length
    pos = jnp.arange(L, dtype=jnp.int32)

    def body(n, c):
        states, nfe = c
        vkeys, ukeys = _step_keys(keys, n)
        marg = denoiser.marginals(states)  # (B, L, V)
        vals = inverse_cdf(marg, jax.vmap(lambda k: position_uniforms(k, pos))(vkeys)).astype(jnp.int32)
        u = jax.vmap(lambda k: jax.random.uniform(k, (L,), dtype=jnp.float64))(ukeys)  # (B, L)
        masked = states == V
        new = jnp.where(masked, jnp.where(u < pu[n], vals, V), jnp.where(u < sigma[n], V, states))
        return new, nfe + jnp.any(new != states, axis=1).astype(jnp.int32)

    init = (jnp.full((B, L), V, dtype=jnp.int32), jnp.zeros((B,), jnp.int32))
    return jax.lax.fori_loop(0, sigma.shape[0], body, init)


# ================================ the registry ========================================================
_MDLM = (
    "Sahoo et al. 2024, 'Simple and Effective Masked Diffusion Language Models' (MDLM), ancestral sampler "
    "(Eq. 8/SUBS: each masked token revealed independently with probability (alpha_s - alpha_t)/(1 - alpha_t)); "
    "Shi et al. 2024, 'Simplified and Generalized Masked Diffusion for Discrete Data' (MD4), Alg. 2; linear alpha."
)
_LLADA = (
    "Nie et al. 2025, 'Large Language Diffusion Models' (LLaDA), Alg. 5 'low-confidence remasking' and "
    "reference generate.py (get_num_transfer_tokens; x̂ sampled at temperature 1, confidence = p(x̂))."
)
_LLADA_BLOCK = _LLADA[:-1] + "; semi-autoregressive remasking (Sec. 2.4, block_length, steps split over blocks)."
_TOPK = (
    "Top-k by max-probability confidence with LLaDA's counts (LLaDA's ranking at temperature 0, values drawn at "
    "temperature 1; BenHamu2025's Top-k baseline with the schedule's k); theory.policies.TopK('confidence')."
)
_MASKGIT = (
    "Chang et al. 2022, 'MaskGIT: Masked Generative Image Transformer', Eq. 3 (cosine mask schedule) and "
    "reference parallel_decode.py (confidence = log p(sampled token) + choice_temperature (1 - r) Gumbel, "
    "choice_temperature 4.5)."
)
_MASKGIT_MAXPROB = (
    "Simplified MaskGIT: toolkit cosine fixed counts (theory.schedules.cosine, round(L alpha) differences), "
    "max-probability confidence, no Gumbel noise (differs from MaskGIT, which ranks the sampled token's "
    "probability with annealed noise and keeps one mask until the last step)."
)
_EB = (
    "Ben-Hamu et al. 2025, 'Accelerated Sampling from Masked Diffusion Models via Entropy Bounded "
    "Unmasking' (EB-sampler), the EB rule sum_U H - max_U H <= gamma; theory.policies.EntropyBounded."
)
_THRESHOLD = (
    "Wu et al. 2025, 'Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel "
    "Decoding', confidence-aware parallel decoding (unmask every token with confidence above the threshold, else "
    "the most confident one; threshold 0.9)."
)
_REMDM = (
    "Wang et al. 2025, 'Remasking Discrete Diffusion Models with Inference-Time Scaling' (ReMDM), Eq. 7 with "
    "sigma_t = min(eta_cap, (1 - alpha_s)/alpha_t) (ReMDM-cap), linear alpha."
)


def _mdlm(schedule: Schedule | None = None) -> Sampler:
    return PolicySampler("mdlm", _MDLM, RandomOrder(), linear() if schedule is None else schedule, "bernoulli")


def _llada() -> Sampler:
    return SampledConfidenceSampler("llada-low-confidence", _LLADA, counts="llada")


def _llada_block(block_size: int = 2) -> Sampler:
    return SampledConfidenceSampler("llada-semi-ar", _LLADA_BLOCK, counts="llada", block_size=block_size)


def _topk() -> Sampler:
    return PolicySampler("topk-confidence", _TOPK, TopK("confidence"), linear(), "fixed", counts="llada")


def _maskgit(choice_temperature: float = 4.5) -> Sampler:
    return SampledConfidenceSampler("maskgit", _MASKGIT, counts="maskgit", choice_temperature=choice_temperature)


def _maskgit_maxprob() -> Sampler:
    return PolicySampler("maskgit-maxprob", _MASKGIT_MAXPROB, TopK("confidence"), cosine(), "fixed")


def _eb(gamma: float = 0.1, proxy: str = "entropy") -> Sampler:
    return PolicySampler("eb-sampler", _EB, EntropyBounded(gamma, proxy))


def _threshold(tau: float = 0.9) -> Sampler:
    return PolicySampler("confidence-threshold", _THRESHOLD, ConfidenceThreshold(tau))


def _remdm(eta: float = 0.04, schedule: Schedule | None = None) -> Sampler:
    return ReMDMSampler("remdm-cap", _REMDM, eta, linear() if schedule is None else schedule)


#: name -> factory taking the sampler's own keyword defaults.
SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "mdlm": _mdlm,
    "llada-low-confidence": _llada,
    "llada-semi-ar": _llada_block,
    "topk-confidence": _topk,
    "maskgit": _maskgit,
    "maskgit-maxprob": _maskgit_maxprob,
    "eb-sampler": _eb,
    "confidence-threshold": _threshold,
    "remdm-cap": _remdm,
}


def list_samplers() -> list[str]:
    """The registered sampler names, in registry order."""
    return list(SAMPLERS)


def get_sampler(name: str, **overrides) -> Sampler:
    """The registered sampler ``name`` with its keyword defaults overridden (e.g. ``gamma=0.5``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}.")
    try:
        return SAMPLERS[name](**overrides)
    except TypeError as e:
        raise TypeError(f"get_sampler({name!r}): bad keyword override ({e}).") from None
