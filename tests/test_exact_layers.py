"""The layered exact law (theory.exact_layers) against the frontier engine, hand-derived laws, refusals.

The frontier engine of :func:`theory.sampling.exact_law` (``engine="frontier"``) is the oracle: on
hypothesis-drawn tables (adversarial kinds included: sparse supports, hard constraints, near-deterministic)
the layered engine must give the same law to 1e-12, the same expected NFE and steps, for every value-blind
policy, random counts (with empty steps) and schedules.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import exact_layers, policies, schedules
from theory.denoiser import smoothed
from theory.joint import Joint
from theory.sampling import exact_law

from conftest import assert_close
from strategies import joints

TOL = 1e-12


@st.composite
def plans(draw, length: int):
    """Explicit counts (N parts of L, zeros allowed), or (steps, schedule) with fixed or Bernoulli reveal."""
    kind = draw(st.sampled_from(["counts", "schedule", "bernoulli"]))
    if kind == "counts":
        N = draw(st.integers(1, length + 1))
        cuts = sorted(draw(st.lists(st.integers(0, length), min_size=N - 1, max_size=N - 1)))
        counts = np.diff([0, *cuts, length]).tolist()
        return {"counts": counts, "reveal": "fixed"}
    sched = draw(st.sampled_from([schedules.linear(), schedules.cosine(), schedules.polynomial(2.0)]))
    reveal = "fixed" if kind == "schedule" else "bernoulli"
    return {"steps": draw(st.integers(1, 5)), "schedule": sched, "reveal": reveal}


@st.composite
def value_blind(draw, length: int):
    kind = draw(st.sampled_from(["random", "l2r", "fixed"]))
    if kind == "random":
        return policies.RandomOrder()
    if kind == "l2r":
        return policies.LeftToRight()
    perm = draw(st.permutations(list(range(length))))
    return policies.FixedOrder(tuple(perm))


def _check_same(q, policy, plan, values="independent"):
    new = exact_law(q, policy, values=values, engine="layers", **plan)
    old = exact_law(q, policy, values=values, engine="frontier", **plan)
    a, b = np.asarray(new.probs), np.asarray(old.probs)
    assert np.max(np.abs(a - b)) <= TOL
    assert_close(a, b, rtol=TOL, atol=1e-15)
    assert abs(a.sum() - 1.0) <= TOL
    assert abs(new.expected_nfe - old.expected_nfe) <= TOL
    assert new.steps_run == old.steps_run
    return a


@settings(max_examples=6)
@given(data=st.data())
def test_layers_equal_frontier_engine(data):
    q = data.draw(joints(max_states=4**5, max_length=6))
    policy = data.draw(value_blind(q.length))
    plan = data.draw(plans(q.length))
    values = data.draw(st.sampled_from(["independent", "independent", "joint"]))
    _check_same(q, policy, plan, values)


def test_auto_takes_layers_and_never_the_frontier(monkeypatch):
    """exact_law dispatches value-blind fixed-count calls (Joint or ExactDenoiser given) to the layered
    engine: the frontier engine's marginal calls are never made."""
    import theory.sampling as S

    q = Joint(np.random.default_rng(0).dirichlet(np.ones(2**5)), 2, 5)
    ref = np.asarray(exact_law(q, policies.RandomOrder(), 3, engine="frontier").probs)
    ref_bern = np.asarray(exact_law(q, policies.LeftToRight(), 3, reveal="bernoulli", engine="frontier").probs)

    def boom(*a, **k):
        raise AssertionError("frontier engine called")

    monkeypatch.setattr(S, "batched_marginals", boom)
    for target in (q, q.denoiser()):
        law = exact_law(target, policies.RandomOrder(), 3)
        assert_close(np.asarray(law.probs), ref, rtol=TOL, atol=1e-15)
        assert abs(law.expected_nfe - 3.0) <= TOL and law.steps_run == 3
        law = exact_law(target, policies.LeftToRight(), 3, reveal="bernoulli")
        assert_close(np.asarray(law.probs), ref_bern, rtol=TOL, atol=1e-15)
    with pytest.raises(AssertionError, match="frontier"):  # Top-k looks at values: frontier engine
        exact_law(q, policies.TopK("confidence"), 3)


def test_pinned_copy_triple():
    """q uniform on {000, 111} (the impossible-state example of theory.denoiser), counts [2, 1].

    RandomOrder: the pair gets equal values w.p. 1/2 (then the copy: 000, 111 w.p. 1/4 each); unequal
    w.p. 1/2, an impossible state whose last token is uniform: each of the six other sequences has 2 of
    its 3 pairs unequal, 2 x (1/3)(1/4)(1/2) = 1/12. LeftToRight: x0 != x1 w.p. 1/2, then x2 uniform:
    1/8 for 010, 011, 100, 101 and 0 for 001, 110. values="joint" gives q itself."""
    q = Joint.from_support(np.array([[0, 0, 0], [1, 1, 1]]), 2, 3)
    rnd = _check_same(q, policies.RandomOrder(), {"counts": [2, 1]})
    assert_close(rnd, np.array([1 / 4] + [1 / 12] * 6 + [1 / 4]), rtol=1e-14)
    l2r = _check_same(q, policies.LeftToRight(), {"counts": [2, 1]})
    assert_close(l2r, np.array([1 / 4, 0, 1 / 8, 1 / 8, 1 / 8, 1 / 8, 0, 1 / 4]), rtol=1e-14)
    for policy in (policies.RandomOrder(), policies.FixedOrder((2, 0, 1))):
        assert_close(_check_same(q, policy, {"counts": [2, 1]}, "joint"), np.asarray(q.probs), rtol=1e-14)


def test_pinned_bernoulli_copy_pair():
    """q uniform on {00, 11}, Bernoulli reveal, N = 2 linear steps: p_1 = 1/2, p_2 = 1. Step 1 reveals
    nothing (1/4; step 2 draws both from the marginals: 1/16 each), one token (1/2; the other copies it:
    00, 11 w.p. 1/4 each) or both independently (1/4: 1/16 each). Law 3/8, 1/8, 1/8, 3/8; E[NFE] = 3/4
    (step 1 reveals >= 1) + 3/4 (a mask is left) = 3/2; two steps run."""
    q = Joint.from_support(np.array([[0, 0], [1, 1]]), 2, 2)
    for policy in (policies.RandomOrder(), policies.LeftToRight()):
        plan = {"steps": 2, "schedule": schedules.linear(), "reveal": "bernoulli"}
        law = exact_law(q, policy, **plan)
        assert_close(np.asarray(law.probs), np.array([3 / 8, 1 / 8, 1 / 8, 3 / 8]), rtol=1e-14)
        assert abs(law.expected_nfe - 1.5) <= 1e-14 and law.steps_run == 2
        _check_same(q, policy, plan)


def test_pinned_one_step_and_one_token_per_step():
    """One step revealing all L tokens: the product of q's one-token marginals. One token per step
    (any order): q itself (chain rule). A product q: q itself for any counts."""
    V, L = 3, 4
    rng = np.random.default_rng(1)
    q = Joint(rng.dirichlet(np.full(V**L, 0.3)), V, L)
    t = np.asarray(q.probs).reshape((V,) * L)
    marg = [t.sum(axis=tuple(j for j in range(L) if j != i)) for i in range(L)]
    prod = np.einsum("a,b,c,d->abcd", *marg).reshape(-1)
    for policy in (policies.RandomOrder(), policies.LeftToRight()):
        assert_close(np.asarray(exact_law(q, policy, counts=[L]).probs), prod, rtol=1e-13)
        assert_close(np.asarray(exact_law(q, policy, counts=[1] * L).probs), np.asarray(q.probs), rtol=1e-12)
    ps = [rng.dirichlet(np.ones(V)) for _ in range(L)]
    qp = Joint(np.einsum("a,b,c,d->abcd", *ps).reshape(-1), V, L)
    for counts in ([2, 2], [1, 3], [0, 4, 0]):
        law = exact_law(qp, policies.RandomOrder(), counts=counts)
        assert_close(np.asarray(law.probs), np.asarray(qp.probs), rtol=1e-13)


def test_transition_count_and_layer_sizes():
    """Layer n holds binom(L, K_n) V**K_n values for RandomOrder, one set for a fixed order."""
    sets = exact_layers.layer_sets("random", 6, [0, 2, 5, 6])
    assert [len(s) for s in sets] == [1, 15, 6, 1]
    assert all(list(map(tuple, s)) == list(itertools.combinations(range(6), K)) for s, K in zip(sets, [0, 2, 5, 6]))
    fixed = exact_layers.layer_sets((3, 1, 0, 2, 5, 4), 6, [0, 2, 5, 6])
    assert [tuple(s[0]) for s in fixed] == [(), (1, 3), (0, 1, 2, 3, 5), (0, 1, 2, 3, 4, 5)]


def test_refusals_give_memory_and_the_scalable_engine():
    """Too large for the budget: the memory estimate and the engine that scales. Not applicable with
    engine='layers': a message saying why."""
    L = 10
    q = Joint(np.full(2**L, 2.0**-L), 2, L)
    need = exact_layers.layered_bytes(2, L, [3, 2, 3, 2])
    assert need > 8 * 3**L  # the cylinder table (which fits) plus the layers
    with pytest.raises(
        ValueError, match=r"(?s)layered engine.*would need.*Monte-Carlo sampler theory\.sampling\.sample"
    ):
        exact_law(q, policies.RandomOrder(), counts=[3, 2, 3, 2], max_bytes=8 * 3**L + 1000)
    small = Joint(np.full(8, 1 / 8), 2, 3)
    with pytest.raises(ValueError, match="value-blind"):
        exact_law(small, policies.TopK("confidence"), 2, engine="layers")
    with pytest.raises(ValueError, match="chooses its own"):
        exact_law(small, policies.TopK("confidence", k=2), 2, engine="layers")
    with pytest.raises(ValueError, match=r"(?s)bernoulli reveal.*would need.*Monte-Carlo"):
        exact_law(q, policies.RandomOrder(), 4, reveal="bernoulli", max_bytes=8 * 3**L + 1000)
    with pytest.raises(ValueError, match="engine must be one of"):
        exact_law(small, policies.RandomOrder(), 2, engine="fast")


def test_mid_size_law_sums_to_one():
    """The layered law sums to 1 within 1e-12 on a mid-size instance (V = 2, L = 10, N = 4)."""
    q = Joint(np.random.default_rng(3).dirichlet(np.full(2**10, 0.5)), 2, 10)
    law = exact_law(q, policies.RandomOrder(), 4)
    assert abs(float(law.probs.sum()) - 1.0) <= TOL
    assert abs(law.expected_nfe - 4.0) <= TOL  # summed over the layers' mass, as the frontier engine does


def test_threads_blocks_and_uncached_permutations(monkeypatch):
    """Small blocks (many blocks of children, so several worker threads) and no permutation cache give the
    frontier engine's law; 1 and 3 threads give the same bits (disjoint blocks of children)."""
    q = Joint(np.random.default_rng(4).dirichlet(np.full(2**8, 0.3)), 2, 8)
    cyl = np.asarray(q.denoiser().cyl)
    ref = np.asarray(exact_law(q, policies.RandomOrder(), counts=[2, 3, 3], engine="frontier").probs)
    monkeypatch.setattr(exact_layers, "BLOCK", 64)
    monkeypatch.setattr(exact_layers, "PERM_CACHE", 0)
    one = exact_layers.layered_law(cyl, 2, 8, [2, 3, 3], threads=1)
    three = exact_layers.layered_law(cyl, 2, 8, [2, 3, 3], threads=3)
    assert np.array_equal(one, three)
    assert_close(one, ref, rtol=TOL, atol=1e-15)
    probs = schedules.reveal_probs(schedules.linear(), 3)
    bern = exact_layers.layered_run(cyl, 2, 8, probs, "bernoulli", threads=2)
    ref_b = exact_law(q, policies.RandomOrder(), 3, reveal="bernoulli", engine="frontier")
    assert_close(bern.probs, np.asarray(ref_b.probs), rtol=TOL, atol=1e-15)
    assert abs(bern.expected_nfe - ref_b.expected_nfe) <= TOL and bern.steps_run == ref_b.steps_run
    with pytest.raises(ValueError, match="threads"):
        exact_layers.layered_law(cyl, 2, 8, [2, 3, 3], threads=0)


# ---- sparse engine (adaptive and other deterministic policies) against the frontier engine ----------------
@st.composite
def deterministic_policies(draw, length: int):
    kind = draw(st.sampled_from(["topk", "topk_k", "eb", "l2r"]))
    proxy = draw(st.sampled_from(list(policies.PROXIES)))
    if kind == "topk":
        return policies.TopK(proxy)
    if kind == "topk_k":
        return policies.TopK(proxy, k=draw(st.integers(1, length)))
    if kind == "eb":
        return policies.EntropyBounded(draw(st.sampled_from([0.0, 0.05, 0.5, float("inf")])), proxy)
    return policies.LeftToRight()


def _check_sparse(q, policy, plan, values="independent", denoiser=None):
    """Sparse engine == frontier engine: law, expected NFE, steps and every callback call (same states, in
    the same sorted order, same probabilities to 1e-12)."""
    calls: dict = {"sparse": [], "frontier": []}
    laws = {}
    for engine in ("sparse", "frontier"):

        def cb(n, states, probs, marg, parent, subsets, weights, log=calls[engine]):
            log.append((n, states.copy(), probs.copy(), subsets.copy(), weights.copy()))

        laws[engine] = exact_law(q, policy, values=values, engine=engine, denoiser=denoiser, callback=cb, **plan)
    new, old = laws["sparse"], laws["frontier"]
    a, b = np.asarray(new.probs), np.asarray(old.probs)
    assert np.max(np.abs(a - b)) <= TOL
    assert abs(a.sum() - 1.0) <= TOL
    assert abs(new.expected_nfe - old.expected_nfe) <= TOL and new.steps_run == old.steps_run
    assert len(calls["sparse"]) == len(calls["frontier"])
    for (n1, s1, p1, sub1, w1), (n2, s2, p2, sub2, w2) in zip(calls["sparse"], calls["frontier"]):
        assert n1 == n2 and np.array_equal(s1, s2) and np.array_equal(sub1, sub2) and np.array_equal(w1, w2)
        assert np.max(np.abs(p1 - p2)) <= TOL
    return a, new


@settings(max_examples=4)
@given(data=st.data())
def test_sparse_equals_frontier_engine(data):
    """Default draws: V = 2, L = 4 (every kind of table; JAX compiles once per shape); the slow twin draws
    V and L too."""
    q = data.draw(joints(max_states=3**4, min_length=4, max_length=4))
    policy = data.draw(deterministic_policies(q.length))
    plan = data.draw(plans(q.length)) if policy.uses_count else {"steps": data.draw(st.integers(1, 3))}
    values = data.draw(st.sampled_from(["independent", "independent", "joint"]))
    _check_sparse(q, policy, plan, values)


@pytest.mark.slow
@settings(max_examples=60)
@given(data=st.data())
def test_sparse_equals_frontier_engine_many(data):
    q = data.draw(joints(max_states=4**5, max_length=6))
    policy = data.draw(deterministic_policies(q.length))
    plan = data.draw(plans(q.length)) if policy.uses_count else {"steps": data.draw(st.integers(1, 3))}
    values = data.draw(st.sampled_from(["independent", "independent", "joint"]))
    _check_sparse(q, policy, plan, values)


def test_pinned_topk_and_eb():
    """q(000) = 1/2, q(011) = q(101) = 1/4. Marginal confidences 3/4, 3/4, 1/2 (entropies h = H(3/4),
    h, ln 2). Top-k (confidence), counts [2, 1], and EB with gamma = 0.6 (h <= 0.6 < 2h) both reveal
    x0, x1 first, independently: 00, 01, 10, 11 w.p. 9/16, 3/16, 3/16, 1/16; x2 then copies the
    support (00 -> 0, 01 -> 1, 10 -> 1) or, from the impossible 11, is uniform: law 000 9/16, 011 3/16,
    101 3/16, 110 = 111 = 1/32. EB with gamma = 0 reveals x0 alone; after x0 = 0 the conditionals of x1
    and x2 are both (2/3, 1/3) (tie: x1 first), after x0 = 1 both are certain (revealed together): the
    chain rule, law q, E[NFE] = 3/4 * 3 + 1/4 * 2 = 11/4, three steps."""
    q = Joint(np.array([1 / 2, 0, 0, 1 / 4, 0, 1 / 4, 0, 0]), 2, 3)
    two = np.array([9 / 16, 0, 0, 3 / 16, 0, 3 / 16, 1 / 32, 1 / 32])
    a, law = _check_sparse(q, policies.TopK("confidence"), {"counts": [2, 1]})
    assert_close(a, two, rtol=1e-14)
    a, law = _check_sparse(q, policies.EntropyBounded(0.6), {"steps": 3})
    assert_close(a, two, rtol=1e-14)
    assert law.expected_nfe == 2.0 and law.steps_run == 2
    a, law = _check_sparse(q, policies.EntropyBounded(0.0), {"steps": 3})
    assert_close(a, np.asarray(q.probs), rtol=1e-14)
    assert abs(law.expected_nfe - 11 / 4) <= 1e-14 and law.steps_run == 3


def test_sparse_dispatch_merge_and_refusal(monkeypatch):
    """auto takes the sparse engine for deterministic policies (the frontier's dense state space is never
    sized); merging in several sorted runs gives the same law; too large: the memory and the scalable engine."""
    import theory.sampling as S

    q = Joint(np.random.default_rng(5).dirichlet(np.full(2**4, 0.3)), 2, 4)
    pol = policies.EntropyBounded(0.2)
    ref = np.asarray(exact_law(q, pol, engine="frontier").probs)

    def boom(*a, **k):
        raise AssertionError("frontier engine called")

    monkeypatch.setattr(S, "check_size", boom)
    monkeypatch.setattr(exact_layers, "MERGE_CHUNK", 4)
    law = exact_law(q, pol)
    assert_close(np.asarray(law.probs), ref, rtol=TOL, atol=1e-15)
    with pytest.raises(AssertionError, match="frontier"):  # a random policy with another denoiser: frontier
        exact_law(q, policies.RandomOrder(), 3, denoiser=smoothed(q.denoiser(), 0.1))
    idx, prob = exact_layers.merge_sorted(np.array([5, 2, 5, 9, 2]), np.array([0.25, 0.5, 0.25, 0.0, -0.5]))
    assert idx.tolist() == [5] and prob.tolist() == [0.5]  # 2 sums to exactly 0, 9 carries 0: dropped
    monkeypatch.undo()
    need = exact_layers.sparse_bytes(2, 4, True)
    with pytest.raises(
        ValueError, match=r"(?s)sparse engine.*would need.*Monte-Carlo sampler theory\.sampling\.sample"
    ):
        exact_law(q, pol, max_bytes=need - 1)


def test_lifted_bernoulli_equals_layers_and_frontier(monkeypatch):
    """RandomOrder with Bernoulli reveal: the lifted engine (exact_law's default where it fits) against the
    layers (forced by LIFTED_MAX_BYTES = 0) and the frontier engine, both value laws, small blocks (several
    row chunks and column blocks), 1 and 3 threads (the same bits), and plans with p = 0 (skipped), a p
    with p**L < 1e-250 (butterflies instead of subset sums) and p = 1 (rows summed)."""
    q = Joint.from_support(np.array([[0, 0, 1, 1, 0], [1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]), 2, 5)
    cyl = np.asarray(q.denoiser().cyl)
    plan = {"steps": 3, "schedule": schedules.cosine(), "reveal": "bernoulli"}
    monkeypatch.setattr(exact_layers, "LIFTED_BLOCK", 8)
    for values in ("independent", "joint"):
        assert exact_layers.use_lifted(2, 5, "random", "bernoulli")
        _check_same(q, policies.RandomOrder(), plan, values)
        lifted = exact_law(q, policies.RandomOrder(), values=values, **plan)
        probs = [0.0, 1e-60, 0.3, 0.0, 0.6, 1.0]
        one = exact_layers.lifted_run(cyl, 2, 5, probs, values, np.asarray(q.probs), threads=1)
        three = exact_layers.lifted_run(cyl, 2, 5, probs, values, np.asarray(q.probs), threads=3)
        assert np.array_equal(one.probs, three.probs)
        with monkeypatch.context() as m:
            m.setattr(exact_layers, "LIFTED_MAX_BYTES", 0)
            assert not exact_layers.use_lifted(2, 5, "random", "bernoulli")
            layers = exact_law(q, policies.RandomOrder(), values=values, **plan)
            ref = exact_layers.layered_run(cyl, 2, 5, probs, "bernoulli", values=values)
        assert_close(np.asarray(lifted.probs), np.asarray(layers.probs), rtol=TOL, atol=1e-15)
        assert abs(lifted.expected_nfe - layers.expected_nfe) <= TOL and lifted.steps_run == layers.steps_run
        assert_close(one.probs, ref.probs, rtol=TOL, atol=1e-15)
        assert abs(one.expected_nfe - ref.expected_nfe) <= TOL and one.steps_run == ref.steps_run == 6
    need = exact_layers.layered_bytes(2, 5, [0.5, 1.0], "random", reveal="bernoulli")
    assert need == 8 * 3**5 + exact_layers.lifted_bytes(2, 5)  # the lifted state's estimate
    assert not exact_layers.use_lifted(2, 5, "random", "bernoulli", max_bytes=need - 1)  # a tight budget: layers
