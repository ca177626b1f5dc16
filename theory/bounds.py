"""Closed forms of the papers' theorems live here: one function per closed form, each citing the paper
(short name), the theorem/equation, and a one-line statement. Sections are headed by issue number;
append new sections, do not rewrite others'.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from .validation import check_steps, check_vocab_length, require_x64

# --- issue 4: Feng2025 (steps vs length) ----------------------------------------------------------
#
# Sampler (Feng2025, Sec. 3 [paper]): N steps; at each step every masked token is revealed with the
# schedule's conditional probability r_s = (alpha_s - alpha_t) / (1 - alpha_t) ("bernoulli"), or k_s
# uniformly chosen masked tokens are revealed ("fixed" counts); revealed values are drawn independently
# from the per-position conditionals. Metrics: log TER(p) = E_p[-log q(x)] / L, SER(p) = p(q(x) = 0).


def _check_length_even(length) -> int:
    _, L = check_vocab_length(2, length)
    if L % 2:
        raise ValueError(f"the copy-pairs language needs an even length, got {L}.")
    return L


def unconditional_reveal_probs(reveal_probs) -> np.ndarray:
    """pi_s = r_s prod_{u<s} (1 - r_u): probability that a given token is revealed exactly at step s.

    ``reveal_probs`` are the per-step *conditional* probabilities r_s of :func:`theory.schedules.reveal_probs`
    (the chance that a still-masked token is revealed at step s). A token survives steps 1..s-1 with
    probability prod_{u<s}(1 - r_u) and is then revealed with probability r_s. For a schedule,
    pi_s = alpha(s_s) - alpha(t_s) (the telescoping product of (1 - alpha_s)/(1 - alpha_t)). The last r
    must be 1 so that sum_s pi_s = 1 (every token is revealed); otherwise ValueError.
    """
    r = np.asarray(reveal_probs, dtype=np.float64)
    if r.ndim != 1 or r.size < 1:
        raise ValueError(f"reveal_probs must be a 1-D array with one probability per step, got shape {r.shape}.")
    if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > 1):
        raise ValueError(f"reveal_probs must lie in [0, 1], got {r.tolist()}.")
    if r[-1] != 1.0:
        raise ValueError(
            "the last reveal probability must be 1 (every token is revealed by the end); "
            f"got {r[-1]!r}. Use theory.schedules.reveal_probs(schedule, N)."
        )
    surv = np.concatenate([[1.0], np.cumprod(1.0 - r)[:-1]])
    return r * surv


def copy_pairs_ser_bernoulli(length: int, reveal_probs) -> float:
    """[ours; Feng2025 Thm. on SER, worst case] Copy pairs, Bernoulli reveal: SER = 1 - (1 - ½ Σ_s pi_s²)^{L/2}.

    Derivation. Each token's reveal step is independent, equal to s with probability pi_s
    (:func:`unconditional_reveal_probs`). The exact conditional of a masked token is "copy the partner"
    if the partner is visible, else uniform on {0, 1}. So a block is wrong iff both its tokens are
    revealed at the same step (probability Σ_s pi_s²) and the two independent uniform draws disagree
    (probability ½). Blocks are independent (product language, independent reveal times, independent
    value draws), hence P(all L/2 blocks right) = (1 - ½ Σ pi_s²)^{L/2}. For the linear schedule pi_s = 1/N:
    SER = 1 - (1 - 1/(2N))^{L/2} ≈ 1 - exp(-L / (4N)).
    """
    L = _check_length_even(length)
    pi = unconditional_reveal_probs(reveal_probs)
    block_fail = 0.5 * float(np.sum(pi**2))
    return float(-np.expm1((L // 2) * np.log1p(-block_fail)))


def copy_pairs_ser_lower_bound(length: int, steps: int) -> float:
    """[ours] For every Bernoulli schedule with N steps: SER >= 1 - (1 - 1/(2N))^{L/2} (copy pairs).

    Cauchy-Schwarz: Σ_s pi_s² >= (Σ_s pi_s)² / N = 1/N, with equality iff pi_s = 1/N (the linear schedule),
    and SER of :func:`copy_pairs_ser_bernoulli` increases with Σ pi_s². So the linear schedule is optimal.
    """
    L = _check_length_even(length)
    N = check_steps(steps)
    return float(-np.expm1((L // 2) * np.log1p(-0.5 / N)))


def _log_comb(n, k):
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    ok = (k >= 0) & (k <= n) & (n >= 0)
    val = gammaln(np.where(ok, n, 0) + 1) - gammaln(np.where(ok, k, 0) + 1) - gammaln(np.where(ok, n - k, 0) + 1)
    return np.where(ok, val, -np.inf)


def copy_pairs_ser_fixed(length: int, counts) -> float:
    """[ours; Feng2025 SER worst case, LLaDA-style fixed counts] Exact SER of copy pairs with k_s tokens per step.

    With fixed counts k_1..k_N (Σ k_s = L) and uniformly random reveal sets (RandomOrder), the blocks are
    NOT independent (the counts couple them), but the assignment of positions to steps is uniform over the
    L! / Π k_s! ordered set partitions with these sizes. A block that has both tokens revealed in the same
    step ("collides") is wrong with probability ½ independently of everything else (two independent
    uniform draws; a block whose first token is already visible is copied correctly). So
    SER = 1 - E[2^{-C}], C = number of colliding blocks.

    E[2^{-C}] by an exact dynamic program over steps. State after a step: u untouched blocks (no token
    revealed) and o half-open blocks; with R revealed tokens o = L - 2u - R, so u alone is the state.
    At a step revealing k of the 2u + o masked tokens uniformly, the number of sets with c collisions,
    a untouched blocks opened (one token), b half-open blocks closed (2c + a + b = k) is
    C(u, c) C(u - c, a) 2^a C(o, b), out of C(2u + o, k); the step multiplies the weight by 2^{-c} and moves
    u -> u - c - a. All terms are positive (no cancellation); computed with log-binomials in float64.
    The DP carries W[u] = E[2^{-C}; u] and G[u] = E[1 - 2^{-C}; u] apart (1 - 2^{-(C+c)} =
    (1 - 2^{-C}) + 2^{-C}(1 - 2^{-c})) and returns G, so a schedule without collisions gives exactly 0.
    """
    L = _check_length_even(length)
    k = np.asarray(counts)
    if k.ndim != 1 or k.size < 1 or k.dtype.kind not in "iu" or np.any(k < 0) or int(k.sum()) != L:
        raise ValueError(f"counts must be non-negative ints summing to L = {L}, got {np.asarray(counts).tolist()}.")
    m = L // 2
    W = np.zeros(m + 1)  # W[u] = E[2^{-C so far}; u untouched]
    G = np.zeros(m + 1)  # G[u] = E[1 - 2^{-C so far}; u untouched] (kept apart: exactly 0 without collisions)
    W[m] = 1.0
    R = 0
    for ks in k.tolist():
        if ks == 0:
            continue
        u = np.nonzero((W > 0) | (G > 0))[0]  # reachable states only
        o = L - 2 * u - R  # half-open blocks per state
        Wu, Gu = W[u], G[u]
        W, G = np.zeros(m + 1), np.zeros(m + 1)
        tot = _log_comb(2 * u + o, ks)  # (S,)
        a = np.arange(ks + 1)[None, :]  # (1, ks+1)
        for c in range(ks // 2 + 1):
            b = ks - 2 * c - a  # (1, ks+1)
            lp = (
                _log_comb(u[:, None], c)
                + _log_comb(u[:, None] - c, a)
                + a * np.log(2.0)
                + _log_comb(o[:, None], b)
                - tot[:, None]
            )  # (S, ks+1) log transition probability
            tp = np.exp(lp)
            ok = tp > 0
            dest = (u[:, None] - c - a)[ok]
            # 1 - 2^{-(C+c)} = (1 - 2^{-C}) + 2^{-C} (1 - 2^{-c})
            W += np.bincount(dest, weights=(tp * Wu[:, None] * 2.0**-c)[ok], minlength=m + 1)
            g = tp * (Gu[:, None] + Wu[:, None] * (1.0 - 2.0**-c))
            G += np.bincount(dest, weights=g[ok], minlength=m + 1)
        R += ks
    return float(min(G[0], 1.0))  # a probability: summed roundoff can overshoot 1 by ~1e-12


def copy_pairs_min_steps_linear(length: int, delta: float) -> int:
    """[ours; Feng2025 SER theorem shape] Smallest N with copy-pairs SER <= delta, linear Bernoulli schedule.

    From SER(N) = 1 - (1 - 1/(2N))^{L/2} <= delta:  N >= 1 / (2 (1 - (1 - delta)^{2/L})) ~ L / (4 ln(1/(1-delta))).
    By :func:`copy_pairs_ser_lower_bound` no Bernoulli schedule does better: the N needed is linear in L.
    """
    L = _check_length_even(length)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}.")
    x = -math.expm1((2.0 / L) * math.log1p(-delta))  # 1 - (1-delta)^{2/L}
    N = max(1, math.ceil(1.0 / (2.0 * x) - 1e-9))
    while copy_pairs_ser_lower_bound(L, N) > delta:  # guard the float rounding of the ceiling
        N += 1
    while N > 1 and copy_pairs_ser_lower_bound(L, N - 1) <= delta:
        N -= 1
    return N


def copy_pairs_min_steps(
    length: int, delta: float, *, reveal: str = "fixed", schedule=None, max_steps: int | None = None
) -> int:
    """Smallest N with copy-pairs SER(N) <= delta for a schedule (default linear), by exact evaluation.

    reveal = "fixed": counts from :func:`theory.schedules.fixed_counts` and :func:`copy_pairs_ser_fixed`
    (N = L with one token per step always reaches SER = 0); "bernoulli": :func:`copy_pairs_ser_bernoulli`.
    Scans N = 1, 2, ... up to ``max_steps`` (default 64 L); raises ValueError if never reached.
    """
    from . import schedules as S  # local: schedules imports nothing from here

    require_x64("copy_pairs_min_steps")
    L = _check_length_even(length)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}.")
    sched = S.linear() if schedule is None else schedule
    top = 64 * L if max_steps is None else int(max_steps)
    for N in range(1, top + 1):
        if reveal == "fixed":
            ser = copy_pairs_ser_fixed(L, S.fixed_counts(sched, N, L))
        elif reveal == "bernoulli":
            ser = copy_pairs_ser_bernoulli(L, S.reveal_probs(sched, N))
        else:
            raise ValueError(f"reveal must be 'fixed' or 'bernoulli', got {reveal!r}.")
        if ser <= delta:
            return N
    raise ValueError(f"SER <= {delta} not reached within {top} steps; raise max_steps.")


def feng2025_ter_bound(eps: float, vocab_size: int, eps_learning: float = 0.0) -> float:
    """Feng2025, Thm. (TER, n-gram languages) as recalled: log TER(p) - log TER(q) <= eps_learning + 4 eps log|V|.

    Statement implemented (papers.md marks it [recalled]): for an n-gram language q and eps > 0 there is a
    schedule with N = O((n - 1) / eps^n) steps, independent of L for L large enough, such that the MDM with
    per-token learning error eps_learning (KL of the learned conditionals) satisfies
    log TER(p) <= log TER(q) + eps_learning + 4 eps log|V|  (nats; constants: 1 in front of eps_learning,
    4 in front of eps log|V|). What we could confirm from the paper's public abstract (arXiv 2502.09622,
    OpenReview NeurIPS 2025): near-optimal perplexity in a number of steps independent of L "under mild
    conditions", and worst-case linear-in-L steps for the SER. What we could NOT confirm: the theorem's
    number, the constant inside O(.), the exact conditions (full support? stationarity? the schedule) and
    the definition of eps_learning; so :func:`feng2025_steps` takes the O-constant as an argument. The
    toolkit's checkable, instance-level statements are :func:`dependence_kl_bound` (KL(q||p_N) <= model
    error + summed dependence) and :func:`ter_gap_locality_bound` (TER gap <= window TVs x log-ranges).
    """
    V, _ = check_vocab_length(vocab_size, 1)
    if not eps > 0 or eps_learning < 0:
        raise ValueError(f"need eps > 0 and eps_learning >= 0, got eps={eps}, eps_learning={eps_learning}.")
    return float(eps_learning + 4.0 * eps * math.log(V))


def feng2025_steps(order: int, eps: float, constant: float = 1.0) -> int:
    """Feng2025 (recalled): steps N = ceil(constant * (n - 1) / eps^n) for an n-gram; ``constant`` is the
    unconfirmed O(.) constant (default 1, our choice, not the paper's). Independent of L."""
    if order < 2 or not eps > 0 or not constant > 0:
        raise ValueError(f"need order >= 2, eps > 0, constant > 0; got {order}, {eps}, {constant}.")
    return int(math.ceil(constant * (order - 1) / eps**order))


def feng2025_eps(order: int, steps: int, constant: float = 1.0) -> float:
    """The eps at which Feng2025's recalled step count is ``steps``: eps = (constant (n - 1) / N)^(1/n).

    Inverse of :func:`feng2025_steps` (N = ceil(constant (n - 1) / eps^n)): the smallest eps whose stated
    step count is N, i.e. the tightest bound :func:`feng2025_ter_bound` that the theorem (as recalled, with
    the given O-constant) offers at N steps. Nudged up by a few ulps where float rounding would make
    ``feng2025_steps(order, eps, constant)`` exceed N, so that round trip always returns N.
    """
    N = check_steps(steps)
    if order < 2 or not constant > 0:
        raise ValueError(f"need order >= 2 and constant > 0; got {order}, {constant}.")
    eps = (constant * (order - 1) / N) ** (1.0 / order)
    while feng2025_steps(order, eps, constant) > N:
        eps = math.nextafter(eps, math.inf)
    return float(eps)


def dependence_kl_bound(joint, policy=None, steps=None, **kw):
    """Feng2025 / BenHamu2025 (papers.md "Bound"): KL(q || p_N) <= Σ_i E_{q_phi}[model error + dependence].

    Thin named wrapper over :func:`theory.dependence.error_decomposition` (the computation lives there):
    returns that :class:`ErrorDecomposition` (``.kl`` exact KL(q||p_N), ``.dependence`` the summed
    per-step total correlation of the tokens revealed together along the data path q_phi, ``.model_error``,
    ``.bound``). Per token: KL(q||p_N)/L <= eps_learning + dependence/L, since each token is revealed once
    and contributes at most eps_learning (its per-token KL) to the model-error term.
    """
    from .dependence import error_decomposition

    return error_decomposition(joint, policy, steps, **kw)


def _ngram_window_logs(lang):
    """Per-window local log-probabilities of an NGram: [(positions, log table over V**|w|)], init first."""
    n, L = lang.order, lang.length
    with np.errstate(divide="ignore"):
        out = [(tuple(range(n - 1)), np.log(lang.init))]
        lc = np.log(lang.cond.reshape(-1))
    out += [(tuple(range(j - n + 1, j + 1)), lc) for j in range(n - 1, L)]
    return out


def _window_marginal(p_table: np.ndarray, V: int, L: int, pos) -> np.ndarray:
    t = p_table.reshape((V,) * L)
    other = tuple(i for i in range(L) if i not in pos)
    return t.sum(axis=other).reshape(-1)  # positions in increasing order, row-major


def ter_gap_locality_bound(p, lang, reference=None) -> dict:
    """[ours; the locality behind Feng2025's TER theorem] |log TER(p) - log TER(q)| <= (1/L) Σ_w R_w TV(p_w, q_w).

    For an n-gram, -log q(x) = Σ_w phi_w(x_w) with local terms over windows w (the first n-1 tokens with
    phi = -log init, then each n-token window with phi = -log cond). Hence
    E_p[-log q] - E_q[-log q] = Σ_w Σ_{x_w} (p_w - q_w)(x_w) (phi_w(x_w) - c_w) for any constants c_w, which
    is at most Σ_w (max phi_w - min phi_w) TV(p_w, q_w) with the max/min over q_w's support (R_w). If p_w
    puts mass outside q_w's support, the gap and the bound are +inf. The bound is per token and involves
    only window marginals, so it stays flat in L when the sampler's local errors do (Feng2025's claim).

    ``p``: a table (V**L,) (e.g. ``exact_law(...).probs``); ``lang``: a :class:`synthetic.languages.NGram`.
    ``reference``: compare with another table r instead of q (the same argument bounds
    |E_p[-log q] - E_r[-log q]| / L, e.g. the TER move caused by a learning error, p = p~_N, r = p_N).
    Returns dict(ter_gap (exact, (E_p - E_r)[-log q] / L), bound, window_tv (array), window_range (array)).
    """
    require_x64("ter_gap_locality_bound")
    V, L = lang.vocab_size, lang.length
    q = np.asarray(lang.joint().probs)
    p = np.asarray(p, dtype=np.float64)
    r = q if reference is None else np.asarray(reference, dtype=np.float64)
    if p.shape != q.shape or r.shape != q.shape:
        raise ValueError(f"p and reference must be tables over V**L = {q.size} sequences, got {p.shape}, {r.shape}.")
    bound, tvs, ranges = 0.0, [], []
    for pos, logt in _ngram_window_logs(lang):
        pw, rw, qw = (_window_marginal(t, V, L, pos) for t in (p, r, q))
        tv = 0.5 * float(np.abs(pw - rw).sum())
        if np.any(((pw > 0) | (rw > 0)) & (qw == 0)):
            rng = float("inf")
        else:
            sup = qw > 0
            rng = float(logt[sup].max() - logt[sup].min())
        tvs.append(tv)
        ranges.append(rng)
        bound += rng * tv if tv > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lq = np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), -np.inf)
        ce = float(-np.sum(np.where(p > 0, p * lq, 0.0))) if not np.any((p > 0) & (q == 0)) else float("inf")
        Hr = float(-np.sum(np.where(r > 0, r * lq, 0.0))) if not np.any((r > 0) & (q == 0)) else float("inf")
    return {"ter_gap": (ce - Hr) / L, "bound": bound / L, "window_tv": np.array(tvs), "window_range": np.array(ranges)}
