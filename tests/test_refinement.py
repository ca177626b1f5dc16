"""More steps, less KL? What refining a step plan does to KL(q || p) with the exact denoiser.

Notation: q over V**L, exact denoiser, a *plan* is fixed counts c = (k_1..k_m) (sum L) or Bernoulli
reveal; c' *refines* c if it splits steps of c. h(A) = H(x_A) (marginal entropy of the positions A),
TC(q) = sum_l H(x_l) - H(q) (total correlation), and by Han's averages

    hbar(j) = mean over |A| = j of h(A),   Delta(j) = hbar(j + 1) - hbar(j)
            = mean over (A, l), |A| = j, l not in A, of H(x_l | x_A).

**False (pinned here).** "Splitting a step in two never increases KL" (random order):
q uniform on {0000, 0011, 0101, 1001, 1110}: [2, 2] -> 0.1985, [1, 1, 2] -> 0.2301 (the counter-example
that refuted the old test), and a closed-form one, [2, 2] -> log 4/3, [1, 1, 2] -> log 3/2. Splitting
every step that can be split is not enough either when a step has one token ([3, 1] -> [1, 2, 1]), and
with Bernoulli reveal a refinement of the time grid that splits one cell can raise KL too.

**True (proved; property-tested below).**

1. *Fixed order* (LeftToRight, FixedOrder): with blocks B_i and P_i = B_1 u ... u B_{i-1},
   KL(q || p_c) = sum_i [ sum_{l in B_i} H(x_l | x_{P_i}) - H(x_{B_i} | x_{P_i}) ]  (chain rule:
   q(x) = prod_i q(x_{B_i} | x_{P_i}) and p_c(x) = prod_i prod_{l in B_i} q(x_l | x_{P_i}) on supp q,
   where every conditional is defined), and refining never increases it: splitting B into (B', B'')
   replaces sum_{l in B''} H(x_l | x_P) by sum_{l in B''} H(x_l | x_{P u B'}), no larger, while
   H(x_B | x_P) = H(x_B' | x_P) + H(x_B'' | x_{P u B'}) is unchanged.
2. *Random order, fixed counts*: p_c = E_sigma[p_{c, sigma}], a mixture over the uniformly random
   order sigma, so by convexity of KL in its second argument
   KL(q || p_c) <= M(c) := E_sigma KL(q || p_{c, sigma}) = sum_i k_i Delta(s_{i-1}) - H(q)
   (s_i = k_1 + ... + k_i: the revealed set before step i is a uniform s_{i-1}-subset; H(q) telescopes
   as hbar(L) - hbar(0)). M(c) is BenHamu2025's dependence sum, equal to
   :func:`theory.dependence.error_decomposition`'s ``dependence`` (checked). Han: Delta is
   non-increasing (H(x_l | x_A) <= H(x_l | x_{A minus a}); average a over A), so writing
   M(c) = sum_{t=0}^{L-1} [Delta(start(t)) - Delta(t)], start(t) = s_{i-1} for the t-th revealed token,
   each term is >= 0 and a refinement raises start(t): **M is non-increasing under refinement**,
   M([L]) = L Delta(0) - H(q) = TC(q), M([1]*L) = 0. The sampler's KL is below this monotone bound but
   is not itself monotone: the mixture over orders is what breaks refinement.
3. *Any policy, any plan* (value-blind or adaptive — TopK, EntropyBounded —, fixed counts or
   Bernoulli with any schedule): **KL(q || p) <= TC(q) = KL(q || p_one step)**. Proof: for a fixed
   realisation of the randomness that does not look at values (orders, Bernoulli coins, tie-breaks),
   the reveal set at each step is a function of the current state, so given x the path is fixed and
   KL = sum_l E_q[-log q(x_l | Z_l)] - H(q), Z_l the state just before l is revealed; the event
   {Z_l = (P, x_P)} is {x agrees with x_P} (the path to P is a function of x_P), so the l-term is the
   conditional entropy H(x_l | Z_l) <= H(x_l). Average over the randomness and use convexity. One step
   reveals all tokens from their marginals: p = product of marginals, KL = TC.
   (One token per step gives KL = 0: tests/test_sampling.py::test_one_token_per_step_generates_q.)
4. For Bernoulli reveal with cell masses pi_n (token revealed at step n with probability pi_n,
   independently), the same averaging gives KL <= M_B = L sum_n pi_n E[Delta(J_n)] - H(q),
   J_n ~ Binomial(L - 1, pi_1 + ... + pi_{n-1}); M_B <= TC.

**Open (no proof, no counter-example): splitting EVERY step.** If every step of c has >= 2 tokens and
c' splits each of them (e.g. doubling the linear schedule, N -> 2N with 2N | L, counts k -> (k/2, k/2)),
KL(q || p_c') <= KL(q || p_c); for Bernoulli reveal, grids that split every cell (N -> 2N for every
library schedule) and the linear schedule N -> N + 1. For L <= 7 doubling the linear schedule is
covered by 3. (N = 1: KL <= TC) and one token per step (2N = L: KL = 0); the first open case is
L = 8, [4, 4] -> [2, 2, 2, 2]. Searched (notes_claims.md): all 65535 uniform supports at V=2, L=4,
all uniform supports containing 0000.. of size <= 5 (L=5) / <= 4 (L=6), 20000 random tables at L=8
(sparse, structured, near-deterministic, Dirichlet), gradient ascent on the KL difference: no
violation. ``test_split_every_step_conjecture`` (slow) keeps looking.
"""

from __future__ import annotations

import itertools
from math import comb

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import metrics, policies, schedules
from theory.dependence import error_decomposition
from theory.joint import Joint
from theory.reference import reference_law
from theory.sampling import exact_law

from conftest import assert_close
from strategies import (
    any_proxy,
    compositions,
    joints,
    schedules_st,
    single_splits,
    steps_st,
)

RTOL = 1e-10
ATOL = 1e-12  # absolute floor for KL values that are exactly 0


# ---- entropies of q, from the table alone (no sampler code) ---------------------------------------
def subset_entropies(q: Joint) -> dict:
    """{frozenset A: H(x_A)} for every subset A of positions."""
    V, L = q.vocab_size, q.length
    t = np.asarray(q.probs).reshape((V,) * L)
    out = {}
    for r in range(L + 1):
        for A in itertools.combinations(range(L), r):
            m = t.sum(axis=tuple(i for i in range(L) if i not in A)) if r < L else t
            m = m[m > 0]
            out[frozenset(A)] = float(-(m * np.log(m)).sum())
    return out


def han_increments(h: dict, L: int) -> np.ndarray:
    """Delta(j) = mean_{|A|=j+1} h(A) - mean_{|A|=j} h(A), j = 0..L-1."""
    hbar = [np.mean([v for A, v in h.items() if len(A) == j]) for j in range(L + 1)]
    return np.diff(hbar)


def total_correlation(q: Joint) -> float:
    h = subset_entropies(q)
    return sum(h[frozenset([i])] for i in range(q.length)) - h[frozenset(range(q.length))]


def fixed_order_kl(h: dict, order, counts) -> float:
    """Chain-rule KL of a fixed order revealing order[s_{i-1}:s_i] at step i (statement 1)."""
    total, P = 0.0, frozenset()
    s = 0
    for k in counts:
        B = [int(i) for i in order[s : s + k]]
        total += sum(h[P | {l}] - h[P] for l in B) - (h[P | set(B)] - h[P])
        P = P | set(B)
        s += k
    return total


def mixture_bound_fixed(h: dict, L: int, counts) -> float:
    """M(c) = sum_i k_i Delta(s_{i-1}) - H(q) (statement 2)."""
    d = han_increments(h, L)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    return float(np.dot(counts, d[starts]) - h[frozenset(range(L))])


def mixture_bound_bernoulli(h: dict, L: int, reveal_probs) -> float:
    """M_B = L sum_n pi_n E[Delta(Binomial(L-1, F_{n-1}))] - H(q) (statement 4)."""
    d = han_increments(h, L)
    p = np.asarray(reveal_probs, dtype=np.float64)
    still = np.concatenate([[1.0], np.cumprod(1.0 - p)[:-1]])  # P(masked before step n)
    pi = p * still
    F = 1.0 - still  # P(a given other token is revealed before step n)
    total = 0.0
    for n in range(len(p)):
        w = np.array([comb(L - 1, j) * F[n] ** j * (1 - F[n]) ** (L - 1 - j) for j in range(L)])
        total += pi[n] * np.dot(w, d)
    return float(L * total - h[frozenset(range(L))])


def kl_of(q, **kw) -> float:
    return metrics.kl(q.probs, exact_law(q, **kw).probs)


def kl_ref(q, **kw) -> float:
    return metrics.kl(q.probs, reference_law(q.probs, q.vocab_size, q.length, **kw))


# ---- pinned counter-examples -------------------------------------------------------------------------
def test_single_split_counterexample_brief():
    """The counter-example that refuted "splitting a step never increases KL" (random order, exact
    denoiser): q uniform on {0000, 0011, 0101, 1001, 1110}; [2, 2] -> 0.1985, [1, 1, 2] -> 0.2301
    (papers.md, to 4 digits). Engine and independent reference agree to 1e-10."""
    q = Joint.from_support([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]], 2, 4)
    k22, k112 = kl_ref(q, counts=[2, 2]), kl_ref(q, counts=[1, 1, 2])
    assert_close(kl_of(q, counts=[2, 2]), k22, rtol=RTOL)
    assert_close(kl_of(q, counts=[1, 1, 2]), k112, rtol=RTOL)
    assert abs(k22 - 0.1985) < 5e-5 and abs(k112 - 0.2301) < 5e-5
    assert k112 > k22 + 0.03
    # the same q with a fixed order obeys statement 1
    h = subset_entropies(q)
    for c, c2 in (([2, 2], [1, 1, 2]), ([2, 2], [2, 1, 1])):
        a = kl_of(q, policy=policies.LeftToRight(), counts=c)
        b = kl_of(q, policy=policies.LeftToRight(), counts=c2)
        assert_close(a, fixed_order_kl(h, range(4), c), rtol=RTOL)
        assert b <= a + ATOL


def test_single_split_counterexample_closed_form():
    """q uniform on S = {0000, 1111, 0101, 0110, 1001, 1010} (x0x1 equal => x2x3 = x0x1; x0x1 unequal
    => x2x3 unequal). Random order, exact denoiser: KL[2,2] = log 4/3 < KL[1,1,2] = log 3/2.

    Facts: every marginal is uniform (S is closed under complement); pair marginals: (0,1) and (2,3)
    agree w.p. 1/3 (00, 11: 1/6 each; 01, 10: 1/3 each), the four cross pairs agree w.p. 2/3
    (00, 11: 1/3; 01, 10: 1/6). The law is invariant under swapping 0<->1, 2<->3, the halves, and
    complement, whose orbits on S are {0000, 1111} and {0101, 0110, 1001, 1010}.

    [2, 2]: p(x) = (1/6) sum_{pairs P} (1/4) prod_{l not in P} q(x_l | x_P).
      x = 0000: P = {0,1} or {2,3}: x_P = 00 leaves only 0000, product 1; each cross pair leaves two
      sequences (e.g. {0,2} -> 0000, 0101), product 1/2 * 1/2. Sum 1 + 1 + 4/4 = 3, p = 3/24 = 1/8.
      x = 0101: {0,1}: 01 -> {0101, 0110}: 1/4; {2,3}: 01 -> {0101, 1001}: 1/4; {0,2}: 00 -> {0000,
      0101}: 1/4; {1,3}: 11 -> {0101, 1111}: 1/4; {0,3}: x0=0, x3=1 -> only 0101: 1; {1,2}: x1=1,
      x2=0 -> only 0101: 1. Sum 3, p = 1/8.
      So p = 1/8 on all of S (mass 3/4 on S, SER 1/4) and KL = log((1/6)/(1/8)) = log 4/3.
    [1, 1, 2]: the first two tokens are drawn exactly (q(x_i) q(x_j | x_i) = q(x_i, x_j)), so
      p(x) = (1/6) sum_{pairs P} q(x_P) prod_{l not in P} q(x_l | x_P).
      x = 0000: 2 * (1/6 * 1) + 4 * (1/3 * 1/4) = 2/3; x = 0101: {0,1}: 1/3 * 1/4, {2,3}: 1/3 * 1/4,
      {0,2}: 1/3 * 1/4, {1,3}: 1/3 * 1/4, {0,3}: 1/6 * 1, {1,2}: 1/6 * 1; sum 2/3.
      So p = (1/6)(2/3) = 1/9 on S (SER 1/3) and KL = log((1/6)/(1/9)) = log 3/2.
    One step: product of uniform marginals, KL = TC = 4 log 2 - log 6 = log 8/3.
    """
    S = [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0]]
    q = Joint.from_support(S, 2, 4)
    on = np.asarray(q.probs) > 0
    for counts, mass, want in (
        ([2, 2], 1 / 8, np.log(4 / 3)),
        ([1, 1, 2], 1 / 9, np.log(3 / 2)),
        ([4], None, np.log(8 / 3)),
    ):
        p = np.asarray(exact_law(q, None, counts=counts).probs)
        ref = reference_law(q.probs, 2, 4, counts=counts)
        assert_close(p, ref, rtol=RTOL, atol=1e-15)
        if mass is not None:
            assert_close(p[on], np.full(6, mass), rtol=RTOL)
            assert_close(metrics.sequence_error_rate(p, q), 1 - 6 * mass, rtol=RTOL)
        assert_close(metrics.kl(q.probs, p), want, rtol=RTOL)
    assert_close(total_correlation(q), np.log(8 / 3), rtol=RTOL)


def test_splitting_every_splittable_step_can_raise_kl():
    """[3, 1] -> [1, 2, 1] splits every step that has two tokens or more, and raises KL for q uniform
    on an 11-sequence support (found by exhaustive search over uniform supports at V=2, L=4; one of 32
    such supports). Checked against the independent reference."""
    S = ["0001", "0010", "0011", "0100", "0111", "1000", "1001", "1010", "1101", "1110", "1111"]
    q = Joint.from_support([[int(c) for c in s] for s in S], 2, 4)
    k31, k121 = kl_ref(q, counts=[3, 1]), kl_ref(q, counts=[1, 2, 1])
    assert_close(kl_of(q, counts=[3, 1]), k31, rtol=1e-9)
    assert_close(kl_of(q, counts=[1, 2, 1]), k121, rtol=1e-9)
    assert k121 > k31 + 1e-3


def _kinked():
    """alpha = 1 - 3.2 t on [0, 1/4], 0.2 on [1/4, 1/2], 0.4 (1 - t) on [1/2, 1]: N = 2 gives cell
    masses (0.2, 0.8); N = 4 gives (0.1, 0.1, 0, 0.8): doubling N splits only the first cell."""
    return schedules.from_function(
        lambda t: jnp.where(t <= 0.25, 1 - 3.2 * t, jnp.where(t <= 0.5, 0.2, 0.4 * (1 - t))), name="kinked"
    )


def test_bernoulli_grid_refinement_can_raise_kl():
    """Bernoulli reveal, q uniform on the six words of weight 2 at L = 4: the kinked schedule's N = 4
    grid refines its N = 2 grid (splitting one cell) and KL goes up (about 0.7537 -> 0.7585). With
    the linear schedule the same q has KL decreasing in N. Engine == independent reference."""
    q = Joint.from_support([s for s in itertools.product([0, 1], repeat=4) if sum(s) == 2], 2, 4)
    sch = _kinked()
    assert_close(schedules.reveal_probs(sch, 2), [0.2, 1.0], rtol=1e-12)
    assert_close(schedules.reveal_probs(sch, 4), [0.1, 1 / 9, 0.0, 1.0], rtol=1e-12, atol=1e-15)
    k = {}
    for N in (2, 4):
        k[N] = kl_ref(q, reveal_probs=schedules.reveal_probs(sch, N))
        assert_close(kl_of(q, steps=N, reveal="bernoulli", schedule=sch), k[N], rtol=RTOL)
    assert k[4] > k[2] + 3e-3
    lin = [kl_of(q, steps=N, reveal="bernoulli") for N in (1, 2, 3, 4, 8)]
    assert all(b < a for a, b in itertools.pairwise(lin))


# ---- statement 1: fixed order ------------------------------------------------------------------------
@given(joints(max_states=3**5, min_length=3), st.data())
def test_fixed_order_chain_rule_and_refinement(q, data):
    """Fixed order: KL equals the chain-rule sum of marginal entropies, and a single split lowers it."""
    L = q.length
    perm = data.draw(st.permutations(range(L)))
    pol = data.draw(st.sampled_from([policies.LeftToRight(), policies.FixedOrder(tuple(perm))]))
    order = list(range(L)) if isinstance(pol, policies.LeftToRight) else list(perm)
    c = data.draw(compositions(L))
    c2 = data.draw(single_splits(c))
    h = subset_entropies(q)
    k1, k2 = kl_of(q, policy=pol, counts=c), kl_of(q, policy=pol, counts=c2)
    assert_close(k1, fixed_order_kl(h, order, c), rtol=1e-9, atol=ATOL)
    assert_close(k2, fixed_order_kl(h, order, c2), rtol=1e-9, atol=ATOL)
    assert k2 <= k1 + ATOL


# ---- statement 2: random order, mixture bound ----------------------------------------------------------
@given(joints(max_states=3**5, min_length=3), st.data())
def test_random_order_kl_below_monotone_mixture_bound(q, data):
    """KL(q||p_c) <= M(c) = sum_i k_i Delta(s_{i-1}) - H(q) = error_decomposition's dependence;
    Delta non-increasing (Han); M non-increasing under a split; M([L]) = TC = KL(one step)."""
    L = q.length
    c = data.draw(compositions(L))
    c2 = data.draw(single_splits(c))
    h = subset_entropies(q)
    d = han_increments(h, L)
    assert np.all(np.diff(d) <= 1e-12)
    m1, m2 = mixture_bound_fixed(h, L, c), mixture_bound_fixed(h, L, c2)
    dec = error_decomposition(q, policies.RandomOrder(), counts=c)
    assert_close(dec.dependence, m1, rtol=1e-9, atol=ATOL)
    assert dec.kl <= m1 + ATOL
    assert m2 <= m1 + ATOL
    tc = total_correlation(q)
    assert_close(mixture_bound_fixed(h, L, [L]), tc, rtol=1e-9, atol=ATOL)
    assert_close(kl_of(q, counts=[L]), tc, rtol=1e-9, atol=ATOL)
    assert abs(mixture_bound_fixed(h, L, [1] * L)) <= ATOL


@given(joints(max_states=3**5, min_length=3), schedules_st, steps_st)
def test_bernoulli_kl_below_mixture_bound(q, sch, N):
    """Bernoulli reveal (random order): KL <= M_B (statement 4) = error_decomposition's dependence <= TC."""
    h = subset_entropies(q)
    mb = mixture_bound_bernoulli(h, q.length, schedules.reveal_probs(sch, N))
    dec = error_decomposition(q, policies.RandomOrder(), N, reveal="bernoulli", schedule=sch)
    assert_close(dec.dependence, mb, rtol=1e-9, atol=ATOL)
    assert dec.kl <= mb + ATOL
    assert mb <= total_correlation(q) + ATOL


# ---- statement 3: one step is the worst plan ------------------------------------------------------------
@st.composite
def any_policy(draw, length: int):
    kind = draw(st.sampled_from(["random", "l2r", "fixed", "topk", "eb"]))
    if kind == "random":
        return policies.RandomOrder()
    if kind == "l2r":
        return policies.LeftToRight()
    if kind == "fixed":
        return policies.FixedOrder(tuple(draw(st.permutations(range(length)))))
    if kind == "topk":
        return policies.TopK(draw(any_proxy))
    return policies.EntropyBounded(draw(st.sampled_from([0.0, 0.1, 0.5, 2.0, float("inf")])), draw(any_proxy))


@given(
    joints(max_states=3**5, min_length=3),
    st.data(),
    st.sampled_from(["fixed", "bernoulli", "counts"]),
    schedules_st,
    steps_st,
)
def test_kl_at_most_one_step_kl(q, data, reveal, sch, N):
    """Any policy (value-blind or adaptive), any plan: KL(q || p) <= TC(q) = KL(q || p_one step)."""
    pol = data.draw(any_policy(q.length))
    if not pol.uses_count:
        law = exact_law(q, pol)
    elif reveal == "counts":
        law = exact_law(q, pol, counts=data.draw(compositions(q.length)))
    else:
        law = exact_law(q, pol, N, reveal=reveal, schedule=sch)
    tc = total_correlation(q)
    assert metrics.kl(q.probs, law.probs) <= tc + ATOL
    if pol.uses_count:
        assert_close(kl_of(q, policy=pol, counts=[q.length]), tc, rtol=1e-9, atol=ATOL)


# ---- open: splitting every step -------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=100)
@given(joints(max_states=3**8, min_length=4), st.data())
def test_split_every_step_conjecture(q, data):
    """CONJECTURE (see the module docstring; no proof): if every step of c has >= 2 tokens and c'
    splits each of them, KL(q||p_c') <= KL(q||p_c); for Bernoulli, N -> 2N with any library schedule
    and N -> N + 1 with the linear one. A failure here is a counter-example: pin it and update
    notes_claims.md."""
    L = q.length
    m = data.draw(st.integers(1, L // 2))
    cuts = sorted(data.draw(st.sets(st.integers(1, L - m - 1), min_size=m - 1, max_size=m - 1))) if m > 1 else []
    c = (np.diff([0, *cuts, L - m]) + 1).tolist()  # m steps of >= 2 tokens
    c2 = []
    for k in c:
        a = data.draw(st.integers(1, k - 1))
        c2 += [a, k - a]
    assert kl_of(q, counts=c2) <= kl_of(q, counts=c) + ATOL
    sch = data.draw(schedules_st)
    N = data.draw(st.integers(1, 3))

    def kb(n, s):
        return kl_of(q, steps=n, reveal="bernoulli", schedule=s)

    assert kb(2 * N, sch) <= kb(N, sch) + ATOL
    assert kb(N + 1, schedules.linear()) <= kb(N, schedules.linear()) + ATOL
