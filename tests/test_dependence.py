"""BenHamu2025's error decomposition (theory/dependence.py), checked against brute force on tables.

* reveal_set_entropies: H(x_S | z), sum_l H(x_l | z), max_l H(x_l | z) equal a numpy slice-and-sum
  computation on the (V,)*L table; the total correlation sum H - H(joint) <= sum H - max H.
* For every policy: KL(q || p_phi) <= model error + dependence (along q_phi); equality (1e-10) for a
  deterministic policy with fixed counts, with exact and with perturbed conditionals.
* For a fixed order the data path is q itself and the dependence has a closed form by the chain rule,
  sum_i sum_{l in B_i} H(x_l | x_{B_<i}) - H(q), computed here from marginal entropies of the table.
* Pinned: copy pairs (a, a) with L = 4, values derived by hand.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.tasks import copy_pairs_task
from theory import policies
from theory.denoiser import TabularDenoiser
from theory.dependence import error_decomposition, reveal_set_entropies
from theory.joint import Joint

from conftest import assert_close
from strategies import any_proxy, eb_gammas, joints, perturbed_table, seeds

LN2 = np.log(2.0)
ATOL = 1e-12  # absolute floor for quantities that are exactly 0 (KL of an exact sampler)


# ---- brute force --------------------------------------------------------------------------------------
def _H(p):
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _conditional(joint, z):
    """q(x_masked | visible part of z) as a tensor over the masked positions (in position order)."""
    V, L = joint.vocab_size, joint.length
    t = np.asarray(joint.probs).reshape((V,) * L)
    t = t[tuple(slice(None) if z[i] == V else int(z[i]) for i in range(L))]
    return t / t.sum()


def _entropies_bruteforce(joint, z, S):
    V, L = joint.vocab_size, joint.length
    masked = [i for i in range(L) if z[i] == V]
    c = _conditional(joint, z)
    ax = {pos: a for a, pos in enumerate(masked)}
    keep = [ax[i] for i in S]
    drop = tuple(a for a in range(len(masked)) if a not in keep)
    hj = _H(c.sum(axis=drop))
    hl = [_H(c.sum(axis=tuple(a for a in range(len(masked)) if a != ax[i]))) for i in S]
    return hj, sum(hl), max(hl)


def _marginal_entropy(joint, A):
    """H(x_A) under q for a set of positions A."""
    V, L = joint.vocab_size, joint.length
    if not A:
        return 0.0
    t = np.asarray(joint.probs).reshape((V,) * L)
    return _H(t.sum(axis=tuple(i for i in range(L) if i not in A)))


# ---- reveal-set entropies -----------------------------------------------------------------------------
@settings(max_examples=3)
@given(joints(max_states=4**4), seeds)
def test_reveal_set_entropies_match_bruteforce(q, seed):
    V, L = q.vocab_size, q.length
    rng = np.random.default_rng(seed)
    ex = q.denoiser()
    from theory.states import decode_sequence

    x = decode_sequence(rng.choice(q.size, size=6, p=np.asarray(q.probs)), V, L)  # values from q's support
    masks = rng.random((6, L)) < 0.6
    masks[np.arange(6), rng.integers(L, size=6)] = True  # at least one masked position
    z = np.where(masks, V, x)
    subsets = masks & (rng.random((6, L)) < 0.7)
    subsets[np.arange(6), np.argmax(masks, 1)] = True
    idx = z @ (V + 1) ** np.arange(L - 1, -1, -1)
    hj, hs, hm = reveal_set_entropies(np.asarray(ex.cyl), V, L, idx, subsets)
    for r in range(6):
        bj, bs, bm = _entropies_bruteforce(q, z[r], list(np.nonzero(subsets[r])[0]))
        assert_close(hj[r], bj, atol=ATOL)
        assert_close(hs[r], bs, atol=ATOL)
        assert_close(hm[r], bm, atol=ATOL)
        assert hs[r] - hj[r] >= -1e-12  # total correlation >= 0
        assert hs[r] - hj[r] <= hs[r] - hm[r] + 1e-12  # <= sum H - max H


# ---- the bound and its equality -----------------------------------------------------------------------
@st.composite
def policy_cases(draw, L):
    kind = draw(st.sampled_from(["random", "l2r", "fixed", "topk", "topk_int", "eb"]))
    if kind == "random":
        pol = policies.RandomOrder()
    elif kind == "l2r":
        pol = policies.LeftToRight()
    elif kind == "fixed":
        pol = policies.FixedOrder(tuple(draw(st.permutations(range(L)))))
    elif kind == "topk":
        pol = policies.TopK(draw(any_proxy))
    elif kind == "topk_int":
        pol = policies.TopK(draw(any_proxy), k=draw(st.integers(1, 3)))
    else:
        pol = policies.EntropyBounded(draw(eb_gammas), draw(any_proxy))
    if pol.uses_count:
        reveal = draw(st.sampled_from(["fixed", "bernoulli"]))
        steps = draw(st.integers(1, L + 1))
    else:
        reveal, steps = "fixed", None
    return pol, reveal, steps


@settings(max_examples=15)
@given(st.data())
def test_kl_bounded_by_model_plus_dependence(data):
    q = data.draw(joints(max_states=4**4, max_length=4))
    L = q.length
    pol, reveal, steps = data.draw(policy_cases(L))
    eps = data.draw(st.sampled_from([0.0, 0.05, 0.3]))
    den = None if eps == 0 else TabularDenoiser(perturbed_table(q, data.draw(seeds), eps), q.vocab_size, L)
    dec = error_decomposition(q, pol, steps, denoiser=den, reveal=reveal)
    assert np.isfinite(dec.kl) and np.isfinite(dec.bound)
    assert dec.kl <= dec.bound * (1 + 1e-10) + ATOL
    ps = dec.per_step
    assert np.all(ps["dependence"] >= -1e-12)
    assert np.all(ps["dependence"] <= ps["entropy_bound"] + 1e-12)
    assert np.all(ps["model_error"] >= -1e-12)
    if eps == 0:
        assert abs(dec.model_error) <= ATOL
    if pol.deterministic and reveal == "fixed":  # z a function of the revealed values: equality
        assert_close(dec.kl, dec.bound, rtol=1e-10, atol=ATOL)
    assert_close(ps["tokens"].sum(), float(L), rtol=1e-10)  # every token revealed once along q_phi


@settings(max_examples=15)
@given(joints(max_states=4**4), st.data())
def test_fixed_order_dependence_chain_rule(q, data):
    """Fixed order, fixed counts: q_phi = q, blocks B_i fixed, so by the chain rule
    dependence = sum_i sum_{l in B_i} H(x_l | x_{B_<i}) - H(q), and KL(q || p) equals it (exact model)."""
    L = q.length
    perm = data.draw(st.permutations(range(L)))
    cuts = sorted(data.draw(st.sets(st.integers(1, L - 1), max_size=L - 1))) if L > 1 else []
    counts = np.diff([0, *cuts, L])
    dec = error_decomposition(q, policies.FixedOrder(tuple(perm)), counts=counts)
    _total, done, per_step = 0.0, [], []
    for c in counts:
        block = list(perm[len(done) : len(done) + c])
        hd = _marginal_entropy(q, done)
        step = sum(_marginal_entropy(q, done + [l]) - hd for l in block) - (_marginal_entropy(q, done + block) - hd)
        per_step.append(step)
        done += block
    expected = (
        sum(
            sum(
                _marginal_entropy(q, list(perm[:a]) + [l]) - _marginal_entropy(q, list(perm[:a]))
                for l in perm[a : a + c]
            )
            for a, c in zip(np.cumsum([0, *counts[:-1]]), counts)
        )
        - q.entropy()
    )
    assert_close(np.asarray(dec.per_step["dependence"]), np.asarray(per_step), atol=ATOL)
    assert_close(dec.dependence, expected, atol=ATOL)
    assert_close(dec.kl, expected, atol=ATOL)


def test_copy_pairs_pinned():
    """q uniform on {(a, a, b, b)}: H(q) = 2 log 2, each token has H = log 2 until its partner is seen."""
    q = copy_pairs_task(4).joint()
    # two steps of two, left to right: each step reveals a pair, TC = 2 log 2 - log 2; p uniform on 16.
    d = error_decomposition(q, policies.LeftToRight(), counts=[2, 2])
    assert_close(np.asarray(d.per_step["dependence"]), np.array([LN2, LN2]))
    assert_close(np.asarray(d.per_step["entropy_bound"]), np.array([LN2, LN2]))
    assert_close(d.kl, 2 * LN2)
    # counts (1, 2, 1): x0; then x1 (determined) with x2; then x3 (determined): no dependence.
    d = error_decomposition(q, policies.LeftToRight(), counts=[1, 2, 1])
    assert abs(d.dependence) <= ATOL and abs(d.kl) <= ATOL
    # EB with gamma = inf: all four at once, sum H = 4 log 2, H(joint) = 2 log 2, max H = log 2.
    d = error_decomposition(q, policies.EntropyBounded(float("inf")))
    assert_close(d.dependence, 2 * LN2)
    assert_close(d.entropy_bound, 3 * LN2)
    assert_close(d.kl, 2 * LN2)
    assert_close(d.expected_nfe, 1.0)
    # EB with gamma = 0 (entropy proxy): one positive-entropy token per step plus zero-entropy ones.
    d = error_decomposition(q, policies.EntropyBounded(0.0))
    assert abs(d.kl) <= ATOL
    assert_close(d.expected_nfe, 3.0)  # {x0}, {x1 (H = 0), x2}, {x3 (H = 0)}


def test_model_error_pinned_one_token():
    """L = 1: KL(q || p) is the model error; with q = (1/2, 1/2), p = (3/4, 1/4): KL = log(2/3)/2 + log 2 / 2."""
    q = Joint(np.array([0.5, 0.5]), 2, 1)
    table = np.array([[[0.75, 0.25]], [[0.75, 0.25]], [[0.75, 0.25]]])
    d = error_decomposition(q, policies.LeftToRight(), 1, denoiser=TabularDenoiser(table, 2, 1))
    want = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert_close(d.model_error, want)
    assert_close(d.kl, want)
    assert d.dependence == 0.0


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5])
def test_eb_entropy_bound_at_most_gamma_per_step(gamma):
    """With the exact denoiser the EB rule's left side is the step's entropy bound: <= gamma per step."""
    from synthetic.languages import dirichlet

    q = dirichlet(jax.random.PRNGKey(3), 3, 4, 0.3)
    for proxy in policies.PROXIES:
        d = error_decomposition(q, policies.EntropyBounded(gamma, proxy))
        ps = d.per_step
        assert np.all(ps["entropy_bound"] <= gamma * ps["p_reveal"] + 1e-12)
        assert d.kl <= d.entropy_bound + 1e-12


def test_sampler_path_is_not_a_bound():
    """papers.md [ours]: the same sums taken along the sampler's own path need not bound KL(q || p).

    q: x0 uniform on {0, 1}, x1 = x0. Model (one token per step, left to right): p(x0 = 1) = d;
    p(x1 = 0 | x0 = 0) = 1; p(x1 = 1 | x0 = 1) = e (wrong). By hand:
    KL = 1/2 log(1 / (2 (1 - d))) + 1/2 log(1 / (2 d e)); along q_phi the step-2 error is 1/2 log(1/e)
    (equality holds); along the sampler's path state (1, M) has weight d, not 1/2, so the sum is
    KL(step 1) + d log(1/e) < KL.
    """
    d, e = 0.1, 0.01
    q = copy_pairs_task(2).joint()
    table = np.full((9, 2, 2), 0.5)  # index z0 * 3 + z1, mask = 2
    table[8, 0] = [1 - d, d]
    table[2, 1] = [1.0, 0.0]
    table[5, 1] = [1 - e, e]
    model = TabularDenoiser(table, 2, 2)
    dec = error_decomposition(q, policies.LeftToRight(), counts=[1, 1], denoiser=model)
    kl_hand = 0.5 * np.log(1 / (2 * (1 - d))) + 0.5 * np.log(1 / (2 * d * e))
    step1 = 0.5 * np.log(0.5 / (1 - d)) + 0.5 * np.log(0.5 / d)
    assert_close(dec.kl, kl_hand)
    assert_close(np.asarray(dec.per_step["model_error"]), np.array([step1, 0.5 * np.log(1 / e)]))
    assert_close(dec.bound, kl_hand)
    # the same model-error sum along the sampler's path (values drawn from the model), by exact_law
    ex = q.denoiser()
    sums = []

    def cb(n, states, probs, marg, parent, subsets, weights):
        qm, pm = np.asarray(ex.marginals(states))[parent], marg[parent]
        kl_pos = np.sum(np.where(qm > 0, qm * np.log(np.where(qm > 0, qm, 1) / np.where(pm > 0, pm, 1)), 0), -1)
        sums.append(float(np.sum(probs[parent] * weights * np.where(subsets, kl_pos, 0).sum(1))))

    from theory.sampling import exact_law

    exact_law(q, policies.LeftToRight(), counts=[1, 1], denoiser=model, callback=cb)
    assert_close(np.asarray(sums), np.array([step1, d * np.log(1 / e)]))
    assert sum(sums) < dec.kl - 1.0  # not a bound along the sampler's path
