"""Impossible partial states (C[z] = q(visible part of z) = 0) under the exact denoiser.

The exact denoiser answers a state with C[z] = 0 by the uniform convention, 1/V at every masked
position (theory/denoiser.py). Facts proved here and property-tested below:

1. **One token per step never reaches an impossible state** (any policy, value-blind or adaptive,
   exact denoiser). Induction: the all-mask state has C = 1. If C[z] > 0 and one masked position i is
   revealed, its value v is drawn from q(x_i = v | z) = C[z_i:=v] / C[z], so a value with positive
   probability gives a child with C > 0. Steps that reveal nothing keep the state. The same holds for
   any counts when the revealed values are drawn *jointly* from q(x_S | z) (``values="joint"``), and
   for q with full support (every C > 0). So impossible states need a parallel reveal of independently
   drawn values on a q with zeros.
2. **Impossible states are absorbing**: every child z' of z has C[z'] <= C[z], so once C = 0 the
   sampler never comes back, and its output x (the last state, C[x] = q(x)) is off the support.
   Conversely an off-support output is an impossible (final) state. Hence
   P(the sampler ever visits an impossible state) = SER(p) = mass of p off supp(q), and
   SER = sum_n P(step n takes a possible state to an impossible one), each term created only by
   steps revealing >= 2 tokens whose independently drawn values are jointly inconsistent with z.
3. **What the convention does to each metric: nothing, for the four metrics.** Every path through an
   impossible state ends off the support, so the convention (any law at masked positions of impossible
   states, and any reveal rule there) only moves mass *among off-support sequences*: p on supp(q) and
   SER are unchanged, hence KL(q || p) = sum_{supp q} q log q/p, TV = (1/2) sum_{supp q} |q - p| + SER/2
   and log TER (= +inf as soon as SER > 0, since p then puts mass where q = 0) are unchanged. What does
   depend on it: which off-support sequences get the mass — so a correctness predicate accepting some
   off-support sequences (``sequence_error_rate(correct=...)``) and the reverse KL(p || q) (+inf anyway).
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from theory import metrics, policies
from theory.denoiser import FunctionDenoiser, exact_denoiser
from theory.joint import Joint
from theory.reference import reference_law
from theory.sampling import exact_law
from theory.states import strides

from conftest import assert_close
from strategies import any_proxy, joints, schedules_st, seeds, value_blind_policies

WITH_ZEROS = ("sparse_uniform", "structured", "dirichlet_holes")  # tables with impossible states


def trace(q, policy=None, *, denoiser=None, **kw):
    """Run exact_law and return (law, per-step records). A record has the impossible mass of the
    frontier before the step ("impossible") and the mass the step moves from possible states to
    impossible ones ("created", split by the size of the revealed set), from the callback's rows."""
    ex = exact_denoiser(q)
    cyl = np.asarray(ex.cyl)  # C over (V+1)**L
    V, L = q.vocab_size, q.length
    st_ = strides(V + 1, L)
    recs = []

    def cb(n, states, probs, marg, parent, subsets, weights):
        C = cyl[states @ st_]
        w = probs[parent] * weights  # (R,)
        size = subsets.sum(1)
        created = {1: 0.0, 2: 0.0}  # from single-token reveals / parallel reveals
        for s in np.unique(size[(w > 0) & (C[parent] > 0)]):
            if s == 0:
                continue
            rows = np.nonzero((size == s) & (w > 0) & (C[parent] > 0))[0]
            pos = np.nonzero(subsets[rows])[1].reshape(len(rows), s)  # (R, s)
            combos = np.stack(np.meshgrid(*[np.arange(V)] * s, indexing="ij"), -1).reshape(-1, s)  # (V**s, s)
            kids = np.repeat(states[parent[rows]][:, None, :], len(combos), axis=1)  # (R, V**s, L)
            for j in range(s):
                kids[np.arange(len(rows))[:, None], :, pos[:, j : j + 1]] = combos[None, :, j]
            m = marg[parent[rows]]  # (R, L, V)
            pv = np.ones((len(rows), len(combos)))
            for j in range(s):
                pv *= m[np.arange(len(rows))[:, None], pos[:, j : j + 1], combos[None, :, j]]
            bad = cyl[kids @ st_] == 0  # (R, V**s)
            created[min(int(s), 2)] += float(np.sum(w[rows, None] * pv * bad))
        recs.append(
            {
                "step": n,
                "C": C,
                "probs": probs.copy(),
                "impossible": float(probs[C == 0].sum()),
                "created_single": created[1],
                "created_parallel": created[2],
            }
        )

    law = exact_law(q, policy, denoiser=denoiser, callback=cb, **kw)
    return law, recs


def other_convention(q, seed: int):
    """The exact denoiser except at impossible states, where every masked position gets a fixed random
    law r (L, V) instead of 1/V: a different convention for C[z] = 0."""
    ex = exact_denoiser(q)
    r = jnp.asarray(np.random.default_rng(seed).dirichlet(np.ones(q.vocab_size), size=q.length))

    def fn(z):
        ok = ex.state_prob(z) > 0
        return jnp.where(ok[:, None, None], ex.marginals(z), r[None])

    return FunctionDenoiser(fn, q.vocab_size, q.length)


# ---- pinned --------------------------------------------------------------------------------------------
def test_copy_triple_two_then_one():
    """q uniform on {000, 111}, random order, counts [2, 1], exact denoiser. By hand:

    Step 1 reveals a uniformly random pair {i, j} (3 choices), each value drawn from its marginal
    (1/2, 1/2) independently: 00, 11, 01, 10 each w.p. 1/4. If the pair agrees (aa), C = 1/2 > 0 and
    step 2 draws the third token from q(. | aa) = delta_a: output aaa. If it disagrees (prob 1/2), the
    state is impossible (C = 0): the convention draws the third token uniformly.
    Law: p(000) = p(111) = 3 * (1/3)(1/4) = 1/4. An off-support x (two a's, one b) needs a disagreeing
    first pair, i.e. one containing the odd position: 2 of the 3 pairs, each (1/3)(1/4)(1/2) = 1/24,
    so p(x) = 1/12 for each of the 6 off-support sequences (total 1/2).
    Metrics: SER = 1/2 = P(impossible state after step 1); KL(q || p) = 2 * (1/2) log((1/2)/(1/4)) =
    log 2; TV = (1/2)(2 * 1/4 + 1/2) = 1/2; log TER = +inf; E[NFE] = 2.
    Another convention, "token 0 at impossible states": the third token is 0, so x = 001 comes from the
    pairs {0,2} = (0,1) and {1,2} = (0,1): 2 * (1/3)(1/4) = 1/6, likewise 010 and 100; 011, 101, 110
    get 0. Same KL, TV, SER, log TER.
    """
    q = Joint.from_support([[0, 0, 0], [1, 1, 1]], 2, 3)
    want = np.array([1 / 4, 1 / 12, 1 / 12, 1 / 12, 1 / 12, 1 / 12, 1 / 12, 1 / 4])  # 000 .. 111
    law, recs = trace(q, None, counts=[2, 1])
    p = np.asarray(law.probs)
    assert_close(p, want, rtol=1e-12)
    assert_close(reference_law(q.probs, 2, 3, counts=[2, 1]), want, rtol=1e-12)
    assert recs[0]["impossible"] == 0.0
    assert_close(recs[1]["impossible"], 0.5, rtol=1e-12)
    assert_close(recs[0]["created_parallel"], 0.5, rtol=1e-12)
    assert_close(metrics.sequence_error_rate(p, q), 0.5, rtol=1e-12)
    assert_close(metrics.kl(q.probs, p), np.log(2.0), rtol=1e-12)
    assert_close(metrics.tv(q.probs, p), 0.5, rtol=1e-12)
    assert metrics.log_ter(p, q) == np.inf
    assert law.expected_nfe == 2.0

    ex = exact_denoiser(q)
    zero = FunctionDenoiser(
        lambda z: jnp.where(
            (ex.state_prob(z) > 0)[:, None, None],
            ex.marginals(z),
            jnp.eye(2)[0][None, None, :] * jnp.ones(z.shape + (1,)),
        ),
        2,
        3,
    )
    p0 = np.asarray(exact_law(q, None, counts=[2, 1], denoiser=zero).probs)
    assert_close(p0, [1 / 4, 1 / 6, 1 / 6, 0, 1 / 6, 0, 0, 1 / 4], rtol=1e-12, atol=1e-15)
    assert_close(metrics.kl(q.probs, p0), np.log(2.0), rtol=1e-12)
    assert_close(metrics.tv(q.probs, p0), 0.5, rtol=1e-12)
    assert_close(metrics.sequence_error_rate(p0, q), 0.5, rtol=1e-12)
    assert metrics.log_ter(p0, q) == np.inf

    # ... but a predicate that accepts "at most one 1" sees the convention
    def one(x):
        return x.sum(1) <= 1

    assert metrics.sequence_error_rate(p, q, correct=one) != metrics.sequence_error_rate(p0, q, correct=one)


# ---- properties ----------------------------------------------------------------------------------------
@given(joints(max_states=3**4, min_length=2), st.data())
def test_one_token_per_step_never_reaches_impossible_states(q, data):
    """Fact 1: one token per step (value-blind or TopK policies), or any counts with jointly drawn values."""
    L = q.length
    mode = data.draw(st.sampled_from(["one", "topk", "joint"]))
    if mode == "one":
        _, recs = trace(q, data.draw(value_blind_policies(L)), counts=[1] * L)
    elif mode == "topk":
        _, recs = trace(q, policies.TopK(data.draw(any_proxy)), counts=[1] * L)
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, L - 1), max_size=L - 1))) if L > 1 else []
        _, recs = trace(q, data.draw(value_blind_policies(L)), counts=np.diff([0, *cuts, L]).tolist(), values="joint")
    for r in recs:
        assert np.all(r["C"][r["probs"] > 0] > 0)
        assert r["created_single"] == 0.0
    if mode != "joint":
        assert all(r["created_parallel"] == 0.0 for r in recs)  # no parallel step at all


@given(
    joints(max_states=3**4, min_length=3, kinds=WITH_ZEROS),
    st.data(),
    st.sampled_from(["fixed", "bernoulli"]),
    schedules_st,
    st.integers(1, 3),
)
def test_reaching_an_impossible_state_is_exactly_ser(q, data, reveal, sch, N):
    """Fact 2: impossible mass never decreases, grows only by parallel reveals, and ends at SER."""
    pol = (
        policies.RandomOrder()
        if reveal == "bernoulli"
        else data.draw(st.one_of(value_blind_policies(q.length), any_proxy.map(policies.TopK)))
    )
    law, recs = trace(q, pol, steps=N, reveal=reveal, schedule=sch)
    ser = metrics.sequence_error_rate(law.probs, q)
    for a, b in itertools.pairwise(recs):
        assert_close(b["impossible"], a["impossible"] + a["created_parallel"], rtol=1e-10, atol=1e-15)
    assert_close(ser, recs[-1]["impossible"] + recs[-1]["created_parallel"], rtol=1e-10, atol=1e-15)
    assert all(r["created_single"] == 0.0 for r in recs)
    assert (metrics.log_ter(law.probs, q) == np.inf) == (ser > 0)


@given(
    joints(max_states=3**4, min_length=3, kinds=WITH_ZEROS),
    st.data(),
    st.sampled_from(["fixed", "bernoulli"]),
    schedules_st,
    st.integers(1, 3),
    seeds,
)
def test_convention_changes_no_metric(q, data, reveal, sch, N, seed):
    """Fact 3: another law at impossible states changes p only off the support: KL, TV, SER, log TER equal."""
    pol = (
        policies.RandomOrder()
        if reveal == "bernoulli"
        else data.draw(st.one_of(value_blind_policies(q.length), any_proxy.map(policies.TopK)))
    )
    p = np.asarray(exact_law(q, pol, N, reveal=reveal, schedule=sch).probs)
    p2 = np.asarray(exact_law(q, pol, N, reveal=reveal, schedule=sch, denoiser=other_convention(q, seed)).probs)
    on = np.asarray(q.probs) > 0
    assert_close(p2[on], p[on], rtol=1e-10, atol=1e-15)
    assert_close(metrics.sequence_error_rate(p2, q), metrics.sequence_error_rate(p, q), rtol=1e-10, atol=1e-15)
    assert_close(metrics.kl(q.probs, p2), metrics.kl(q.probs, p), rtol=1e-10, atol=1e-14)
    assert_close(metrics.tv(q.probs, p2), metrics.tv(q.probs, p), rtol=1e-10, atol=1e-15)
    assert metrics.log_ter(p2, q) == metrics.log_ter(p, q) or np.isclose(
        metrics.log_ter(p2, q), metrics.log_ter(p, q), rtol=1e-10
    )
