"""Yang2025 (issue 13): the AP-MDM transition rule, its exact law and Monte-Carlo sampler, the plain-MDM
equivalence, and the controllers of synthetic/controllers.py (self-correction, parity, Dyck, parallel time)."""

import itertools
import json
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from synthetic import controllers as C
from synthetic import languages as la
from synthetic import worst_case as wc
from theory import anyprocess as ap
from theory import bounds as B
from theory import policies
from theory import schedules as S
from theory.sampling import exact_law, sample
from theory.states import all_states

from conftest import assert_close, load_script, run_quick
from strategies import joints

ALPHA = 1e-3  # level of every chi-square test in this file (derandomized keys: each test is one fixed draw)


# ---- the transition rule -----------------------------------------------------------------------------------
def reference_transition(tokens, predictions, bits, V):
    """A plain-Python reading of the rule, position by position (shares no code with the library)."""
    out = []
    for z, y, (r, s, d) in zip(tokens, predictions, bits):
        if z == V and d:
            continue  # a deleted mask takes its insert bit with it
        if r:
            out.append(V)
        elif z == V:
            out.append(y)
        else:
            out.append(z)
        if s:
            out.append(V)
    return out


@partial(jax.jit, static_argnames="V")
def _padded(tokens, length, preds, bits, V):
    return ap.transition_padded(tokens, length, preds, bits, V)


LMAX = 16  # padded width of the JAX twin (2 x the longest drawn sequence: every insert fits)


def _both(tokens, preds, bits, V):
    """(numpy rule, JAX rule) for one sequence."""
    L = len(tokens)
    bits = np.array(bits, dtype=bool).reshape(L, 3)
    a = ap.apply_transition(np.array(tokens, dtype=np.int64), np.array(preds, dtype=np.int64), bits, V)
    t = np.full(LMAX, ap.PAD, np.int32)
    y = np.zeros(LMAX, np.int32)
    b = np.zeros((LMAX, 3), bool)
    t[:L], y[:L], b[:L] = tokens, preds, bits
    new, n, over = _padded(jnp.asarray(t), jnp.int32(L), jnp.asarray(y), jnp.asarray(b), V)
    assert not bool(over)
    new = np.asarray(new)
    assert (new[int(n) :] == ap.PAD).all()
    return a.tolist(), new[: int(n)].tolist()


def test_transition_hand_made():
    V, M = 2, 2
    # keep / unmask / stay masked
    assert _both([0, M, M], [1, 1, M], [(0, 0, 0)] * 3, V) == ([0, 1, M],) * 2
    # delete only a mask: a clean token with delete is kept; a mask with delete disappears (with its insert)
    assert _both([1, M, 0], [0, 1, 0], [(0, 0, 1), (0, 1, 1), (0, 0, 0)], V) == ([1, 0],) * 2
    # remask overrides unmask: a mask with remask stays M whatever its prediction
    assert _both([M], [1], [(1, 0, 0)], V) == ([M],) * 2
    # a clean token with delete and remask becomes M (delete refers to the input state) and stays
    assert _both([1, 0], [0, 0], [(1, 0, 1), (0, 0, 0)], V) == ([M, 0],) * 2
    # insert appends one mask after the position's output, also after a remasked token
    assert _both([0, 1], [0, 0], [(1, 1, 0), (0, 1, 0)], V) == ([M, M, 1, M],) * 2
    assert _both([], [], np.zeros((0, 3), bool), V) == ([],) * 2


@settings(max_examples=60)
@given(data=st.data(), V=st.integers(2, 4), L=st.integers(0, 8))
def test_transition_matches_reference(data, V, L):
    tokens = data.draw(st.lists(st.integers(0, V), min_size=L, max_size=L))
    preds = data.draw(st.lists(st.integers(0, V), min_size=L, max_size=L))
    bits = data.draw(st.lists(st.tuples(*[st.integers(0, 1)] * 3), min_size=L, max_size=L))
    ref = reference_transition(tokens, preds, bits, V)
    a, j = _both(tokens, preds, bits, V)
    assert a == ref and j == ref
    z = np.array(tokens)
    b = np.array(bits).reshape(L, 3).astype(bool)
    deleted = (z == V) & b[:, 2]
    assert len(ref) == L - deleted.sum() + (b[:, 1] & ~deleted).sum()  # lengths add up
    # the visible tokens of the output are, in order, the kept inputs and the unmasked predictions
    kept = [t if t != V else y for t, y, (r, _, d) in zip(tokens, preds, bits) if not r and not (t == V and d)]
    assert [t for t in ref if t != V] == [t for t in kept if t != V]
    # delete of a non-mask is ignored: switching it off changes nothing
    bits_off = [(r, s_, d if t == V else 0) for t, (r, s_, d) in zip(tokens, bits)]
    assert reference_transition(tokens, preds, bits_off, V) == ref


def test_transition_bad_input():
    with pytest.raises(ValueError, match=r"bits must have shape \(L, 3\)"):
        ap.apply_transition([0, 1], [0, 0], np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="predictions must have shape"):
        ap.apply_transition([0, 1], [0], np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="tokens must lie in"):
        ap.apply_transition([0, 3], [0, 0], np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="must be 0/1"):
        ap.apply_transition([0, 1], [0, 0], np.full((2, 3), 0.5), 2)


# ---- exact law vs Monte Carlo ---------------------------------------------------------------------------
def chi_square_pvalue(law_probs: dict, seqs: list) -> float:
    """Pearson chi-square of sampled sequences against an exact law; cells with expected count < 5 are pooled
    (with every sequence outside the law's support) into one cell."""
    n = len(seqs)
    counts: dict = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    big = [s for s, p in law_probs.items() if p * n >= 5]
    obs = [counts.get(s, 0) for s in big]
    exp = [law_probs[s] * n for s in big]
    rest_obs, rest_exp = n - sum(obs), n - sum(exp)
    if rest_exp > 1e-9:
        obs.append(rest_obs)
        exp.append(rest_exp)
    else:
        assert rest_obs == 0, "samples outside the exact law's support"
    return float(chisquare(obs, exp).pvalue)


@pytest.mark.parametrize("seed", [0, 1])
def test_mc_matches_exact_law_random_controller(seed):
    c = ap.random_table_controller(seed, 2)
    law = ap.exact_law(c, [2, 0], max_steps=2, max_length=8)
    assert abs(sum(law.probs.values()) - 1) < 1e-12 and law.unfinished > 0
    num = 4000
    s = ap.sample(jax.random.PRNGKey(seed), c, [2, 0], num=num, max_steps=2, max_length=8)
    assert chi_square_pvalue(law.probs, s.sequences()) > ALPHA
    se = s.nfe.std(ddof=1) / math.sqrt(num)
    assert abs(s.nfe.mean() - law.expected_nfe) <= 4 * se
    assert abs((~s.finished).mean() - law.unfinished) <= 4 * math.sqrt(law.unfinished * (1 - law.unfinished) / num)


def test_stopping_rules_and_budget():
    """Hand-made: a controller that unmasks position 0 to token 1 and inserts after it."""
    V = 2
    tt = np.zeros((V + 2, V + 1, V + 1))
    tt[..., V] = 1.0  # stay masked ...
    tt[:, V, :] = 0.0
    tt[:, V, 1] = 1.0  # ... except that every mask is unmasked to 1
    bt = np.zeros((V + 2, V + 1, 3))
    bt[V + 1, :, ap.INSERT] = 1.0  # position 0 (no left neighbour) inserts a mask after itself
    c = ap.TableController(jnp.asarray(tt), jnp.asarray(bt), V)
    # (M) -> (1, M) -> (1, M, 1) -> (1, M, 1, 1): never clean, so only the budget stops it
    law = ap.exact_law(c, [V], max_steps=3, max_length=4)
    assert law.probs == {(1, V, 1, 1): 1.0} and law.unfinished == 1.0 and law.expected_nfe == 3.0
    # eos = 1 stops after the first step; stop_when_clean stops a clean init before any call
    law = ap.exact_law(c, [V], max_steps=3, max_length=4, eos=1)
    assert law.probs == {(1, V): 1.0} and law.expected_calls == 1.0 and law.unfinished == 0.0
    law = ap.exact_law(c, [0], max_steps=3, max_length=4, stop_when_clean=True)
    assert law.probs == {(0,): 1.0} and law.expected_calls == 0.0
    with pytest.raises(ValueError, match="max_length"):
        ap.exact_law(c, [V], max_steps=5, max_length=4)
    with pytest.raises(ValueError, match="grew beyond max_length"):  # same shapes as the chi-square test: no compile
        ap.sample(jax.random.PRNGKey(0), c, [V], num=4000, max_steps=8, max_length=8)
    # a step that changes nothing on a sequence with masks does not stop the run (only a clean fixed point does)
    still = np.zeros((V + 2, V + 1, V + 1))
    still[..., V] = 1.0  # every mask predicts M (stays masked); no bits
    idle = ap.TableController(jnp.asarray(still), jnp.zeros((V + 2, V + 1, 3)), V)
    law = ap.exact_law(idle, [0, V], max_steps=4, max_length=4)
    assert law.probs == {(0, V): 1.0} and law.unfinished == 1.0 and law.expected_nfe == 0.0 and law.steps_run == 4
    law = ap.exact_law(idle, [0, 1], max_steps=4, max_length=4)
    assert law.unfinished == 0.0 and law.expected_calls == 1.0  # clean fixed point: one call, no NFE


def test_bad_budget_and_init():
    c = ap.random_table_controller(0, 2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="step budget"):
            ap.exact_law(c, [2], max_steps=bad, max_length=4)
        with pytest.raises(ValueError, match="step budget"):
            ap.sample(jax.random.PRNGKey(0), c, [2], num=2, max_steps=bad, max_length=4)
    with pytest.raises(ValueError, match="max_length"):
        ap.exact_law(c, [2] * 5, max_steps=1, max_length=4)
    with pytest.raises(ValueError, match="tokens must lie"):
        ap.exact_law(c, [3], max_steps=1, max_length=4)

    class Wrong:
        vocab_size = 2

        def branches(self, states, n):
            K, L = states.shape
            return np.arange(K), np.ones(K), np.ones((K, L, 2)) / 2, np.zeros((K, L, 3))

        def step(self, keys, tokens, lengths, n):
            return jnp.ones(tokens.shape + (2,)) / 2, jnp.zeros(tokens.shape + (3,))

    with pytest.raises(ValueError, match=r"token_probs must have shape \(R, L, V\+1\)"):
        ap.exact_law(Wrong(), [2], max_steps=1, max_length=4)
    with pytest.raises(ValueError, match=r"step must return token_probs \(B, Lmax, V\+1\)"):
        ap.sample(jax.random.PRNGKey(0), Wrong(), [2], num=2, max_steps=1, max_length=4)


# ---- remasking off: AP-MDM is the plain MDM sampler -------------------------------------------------------
POLICIES = [policies.RandomOrder(), policies.LeftToRight(), policies.TopK("confidence"), policies.TopK("margin", k=2),
            policies.EntropyBounded(0.2)]  # fmt: skip


@settings(max_examples=5)
@given(q=joints(max_states=3**4, max_length=4), pi=st.integers(0, len(POLICIES) - 1), N=st.integers(1, 4),
       reveal=st.sampled_from(["fixed", "bernoulli"]))  # fmt: skip
def test_remasking_off_equals_plain_mdm(q, pi, N, reveal):
    pol = POLICIES[pi]
    kw = {} if not pol.uses_count else dict(steps=N, reveal=reveal, schedule=S.cosine())
    m = ap.mdm_controller(q.denoiser(), pol, **kw)
    a = ap.exact_law(m, [q.vocab_size] * q.length, max_steps=m.num_steps, max_length=q.length, stop_when_clean=True)
    b = exact_law(q, pol, **kw)
    assert a.unfinished == 0.0
    assert_close(a.table(q.length), np.asarray(b.probs), rtol=0, atol=1e-12)
    assert_close(a.expected_nfe, b.expected_nfe, rtol=1e-10)


@pytest.mark.slow  # the random-controller test covers the sampler's agreement by default
def test_remasking_off_mc_matches_core_law():
    q = la.random_ngram(jax.random.PRNGKey(3), 2, 3, 5).joint()
    m = ap.mdm_controller(q.denoiser(), policies.RandomOrder(), 3, reveal="bernoulli")
    b = exact_law(q, policies.RandomOrder(), 3, reveal="bernoulli")
    s = ap.sample(jax.random.PRNGKey(0), m, [2] * 5, num=4000, max_steps=3, max_length=5, stop_when_clean=True)
    probs = {tuple(int(t) for t in x): float(p) for x, p in zip(q.sequences(), np.asarray(b.probs)) if p > 0}
    assert chi_square_pvalue(probs, s.sequences()) > ALPHA
    assert abs(s.nfe.mean() - b.expected_nfe) <= 4 * s.nfe.std(ddof=1) / math.sqrt(4000)


# ---- (b) parity by deletion-based elimination ---------------------------------------------------------------
def test_parity_pinned_traces():
    pe = C.ParityElimination("sequential")
    # hand trace of 1 1 0 1: (1,1)->(M,M)->(0) ; (0,0)->(M,0)->(0) ; (0,1)->(M,1)->(1)
    law = ap.exact_law(pe, [1, 1, 0, 1], max_steps=20, max_length=4)
    assert law.probs == {(1,): 1.0} and law.expected_nfe == 6 and law.expected_calls == 7
    tree = C.ParityElimination("tree")
    # 1 1 0 1 1: pairs (1,1),(0,1) + 1 -> (M,M,M,1,1) -> (0,1,1) -> (M,1,1) -> (1,1) -> (M,M) -> (0)
    law = ap.exact_law(tree, [1, 1, 0, 1, 1], max_steps=20, max_length=5)
    assert law.probs == {(0,): 1.0} and law.expected_nfe == 6 == tree.expected_nfe(5)


@pytest.mark.parametrize("mode", C.PARITY_MODES)
def test_parity_all_inputs_up_to_12(mode):
    pe = C.ParityElimination(mode)
    xs = [x for n in range(1, 13) for x in itertools.product([0, 1], repeat=n)]
    s = ap.sample(jax.random.PRNGKey(0), pe, xs, num=len(xs), max_steps=30, max_length=12)
    assert s.finished.all() and (s.lengths == 1).all()
    assert all(t[0] == sum(x) % 2 for t, x in zip(s.tokens, xs))
    assert all(f == pe.expected_nfe(len(x)) for f, x in zip(s.nfe, xs))
    for x in xs[:126]:  # the exact (numpy) face on every input up to length 6
        law = ap.exact_law(pe, x, max_steps=30, max_length=6)
        assert law.probs == {(sum(x) % 2,): 1.0} and law.expected_nfe == pe.expected_nfe(len(x))


@pytest.mark.parametrize("mode,n", [("sequential", 1000), ("tree", 1000), ("tree", 4097)])
def test_parity_long_random_inputs(mode, n):
    pe = C.ParityElimination(mode)
    x = np.random.default_rng(n).integers(0, 2, n)
    law = ap.exact_law(pe, x, max_steps=2 * n + 2, max_length=n)
    assert law.probs == {(int(x.sum() % 2),): 1.0}
    assert (
        law.expected_nfe == pe.expected_nfe(n) == (2 * (n - 1) if mode == "sequential" else 2 * math.ceil(math.log2(n)))
    )


def test_parity_length2_training_data_by_hand():
    """The supervised tuples of length-2 parity, written out by hand (M = 2; bits: remask, insert, delete)."""
    M = 2
    want = {  # head (a, b or None) -> (tokens at positions 0, 1; bits of position 0; bits of position 1)
        (0, 0): ((M, M), (1, 0, 0), (0, 0, 0)), (0, 1): ((M, M), (1, 0, 0), (0, 0, 0)),
        (1, 0): ((M, M), (0, 0, 0), (1, 0, 0)), (1, 1): ((M, M), (1, 0, 0), (1, 0, 0)),
        (M, 0): ((M, M), (0, 0, 1), (0, 0, 0)), (M, 1): ((M, M), (0, 0, 1), (0, 0, 0)),
        (1, M): ((M, M), (0, 0, 0), (0, 0, 1)), (M, M): ((M, 0), (0, 0, 1), (0, 0, 0)),
        (0, None): ((M, M), (0, 0, 0), (0, 0, 0)), (1, None): ((M, M), (0, 0, 0), (0, 0, 0)),
    }  # fmt: skip
    feats, toks, bits = C.parity_length2_transitions()
    got = {}
    for f, t, b in zip(feats, toks, bits):
        a, bb = divmod(int(f), 4)
        got[(a, None if bb == 3 else bb)] = (tuple(t), tuple(b[:3]), tuple(b[3:]))
    assert got == want
    # a hand-set model that puts +-20 on the right logits is the rule at every length (greedy: exactly)
    w = np.full((12, 12), -20.0)
    for f, t, b in zip(feats, toks, bits):
        w[f, [t[0], 3 + t[1]]] = 20.0
        w[f, 6:] = np.where(b > 0, 20.0, -20.0)
    for n, x in ((1, [1]), (5, [1, 0, 1, 1, 0]), (9, [1] * 9)):
        law = ap.exact_law(C.ParityHeadModel(jnp.asarray(w)), x, max_steps=2 * n + 2, max_length=n)
        assert law.probs == {(sum(x) % 2,): 1.0} and law.expected_nfe == 2 * (n - 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", C.PARITY_MODES)
def test_parity_long_random_inputs_mc(mode):
    pe = C.ParityElimination(mode)
    n = 1000
    X = np.random.default_rng(1).integers(0, 2, (64, n))
    s = ap.sample(jax.random.PRNGKey(0), pe, X, num=64, max_steps=2 * n + 2, max_length=n)
    assert (s.lengths == 1).all() and (s.tokens[:, 0] == X.sum(1) % 2).all() and (s.nfe == pe.expected_nfe(n)).all()


# ---- (c) two-sided Dyck-k -----------------------------------------------------------------------------------
def tree_walk_counts(k: int, max_half: int) -> list:
    """Closed walks of length 2j at the root of the 2k-regular tree (= two-sided Dyck-k words of length 2j),
    from the first-return equations G = 1 / (1 - (2k-1) x^2 G), R = 1 / (1 - 2k x^2 G) as power series."""
    d = 2 * k
    n = max_half + 1
    G = np.zeros(n)
    G[0] = 1.0
    for _ in range(n):  # fixed point in y = x^2: G = 1 + (d-1) y G^2
        G2 = np.convolve(G, G)[:n]
        G = np.concatenate([[1.0], (d - 1) * G2[:-1]])
    R = np.zeros(n)
    R[0] = 1.0
    for _ in range(n):  # R = 1 + d y G R
        GR = np.convolve(G, R)[:n]
        R = np.concatenate([[1.0], d * GR[:-1]])
    return [int(round(r)) for r in R]


def test_dyck_pinned_counts():
    assert tree_walk_counts(1, 3) == [1, 2, 6, 20]  # central binomials: #a = #a^-1
    assert tree_walk_counts(2, 3) == [1, 4, 28, 232]
    for k, m in ((1, 4), (2, 3), (3, 2)):
        d = C.two_sided_dyck(k, 2 * m)
        by_len = [sum(1 for w in d if len(w) == 2 * j) for j in range(m + 1)]
        assert by_len == tree_walk_counts(k, m)


@pytest.mark.parametrize("k,m", [(1, 4), (2, 3), (3, 2)])
def test_dyck_generator_support_is_two_sided_dyck(k, m):
    g = C.DyckGenerator(k, m)
    law = ap.exact_law(g, [g.bos], max_steps=g.budget(), max_length=g.max_length)
    assert law.unfinished == 0.0 and abs(sum(law.probs.values()) - 1) < 1e-12
    assert all(s[0] == g.bos for s in law.probs)
    assert {s[1:] for s in law.support()} == C.two_sided_dyck(k, 2 * m)
    assert all(law.probs[(g.bos,) + w] > 0 for w in C.two_sided_dyck(k, 2 * m))


@pytest.mark.slow
def test_dyck_mc_matches_exact():
    g = C.DyckGenerator(1, 2, stop_prob=0.3)
    law = ap.exact_law(g, [g.bos], max_steps=g.budget(), max_length=g.max_length)
    s = ap.sample(jax.random.PRNGKey(1), g, [g.bos], num=4000, max_steps=g.budget(), max_length=g.max_length)
    assert s.finished.all()
    assert chi_square_pvalue(law.probs, s.sequences()) > ALPHA
    assert all(C.reduces_to_empty(x[1:]) for x in s.sequences())


# ---- (d) parallel time -----------------------------------------------------------------------------------
def _run_circuit(circ, x, mode):
    cc = C.circuit_controller(circ, mode)
    law = ap.exact_law(cc, C.circuit_prompt(circ, x), max_steps=circ.length + 1, max_length=circ.length,
                       stop_when_clean=True)  # fmt: skip
    ((seq, p),) = law.probs.items()
    return np.array(seq), law.expected_nfe


@pytest.mark.parametrize("n", list(range(1, 18)) + [100, 1000])
def test_parallel_time_is_log2_n(n):
    x = np.random.default_rng(n).integers(0, 2, n)
    logn = math.ceil(math.log2(n)) if n > 1 else 0
    tree, scan = C.parity_tree(n), C.prefix_sums(n)
    out, nfe = _run_circuit(tree, x, "parallel")
    assert out[tree.outputs[0]] == x.sum() % 2 and nfe == logn  # c = 0 with the input as a prompt
    out, nfe = _run_circuit(scan, x, "parallel")
    assert (out[list(scan.outputs)] == np.cumsum(x) % 2).all() and nfe == logn
    if n <= 100:  # left to right: one token per step, n - 1 steps
        chain = C.running_sum(n)
        out, nfe = _run_circuit(chain, x, "sequential")
        assert (out[list(chain.outputs)] == np.cumsum(x) % 2).all() and nfe == n - 1
        assert _run_circuit(tree, x, "sequential")[1] == n - 1 and _run_circuit(chain, x, "parallel")[1] == n - 1


def test_parallel_time_generated_inputs_exact_law():
    """With the inputs generated too (all-mask start): law = x uniform, scratchpad determined; steps = depth + 1."""
    for circ in (C.parity_tree(5), C.prefix_sums(3, vocab_size=3)):
        cc = C.circuit_controller(circ, "parallel")
        V = circ.vocab_size
        law = ap.exact_law(cc, [V] * circ.length, max_steps=circ.length, max_length=circ.length, stop_when_clean=True)
        want = {tuple(int(v) for v in circ.evaluate(np.array(x))): V**-circ.num_inputs
                for x in itertools.product(range(V), repeat=circ.num_inputs)}  # fmt: skip
        assert law.probs.keys() == want.keys()
        assert_close(np.array([law.probs[s] for s in want]), np.array(list(want.values())), rtol=1e-12)
        assert abs(law.expected_nfe - (circ.depth() + 1)) < 1e-12 and circ.depth() == math.ceil(
            math.log2(circ.num_inputs)
        )


@pytest.mark.slow
def test_circuit_mc_face_matches():
    n = 37
    X = np.random.default_rng(0).integers(0, 2, (16, n))
    for circ in (C.parity_tree(n), C.prefix_sums(n)):
        cc = C.circuit_controller(circ, "parallel")
        init = np.stack([C.circuit_prompt(circ, x) for x in X])
        s = ap.sample(jax.random.PRNGKey(0), cc, init, num=16, max_steps=circ.length, max_length=circ.length,
                      stop_when_clean=True)  # fmt: skip
        assert (s.nfe == math.ceil(math.log2(n))).all()
        assert all((t == circ.evaluate(x)).all() for t, x in zip(s.tokens, X))


# ---- (a) self-correction ------------------------------------------------------------------------------------
def _sc_law(lang, N, filt, budget):
    sc = C.self_correcting(lang, N, filter=filt)
    return ap.exact_law(sc, [lang.vocab_size] * lang.length, max_steps=budget, max_length=lang.length)


def test_self_correction_pinned():
    # copy pairs L = 4, N = 1: one parallel draft (bad w.p. 1 - (1/2)^2 = 3/4), then remask + refill:
    # E[NFE] = 1 + 2 * 3/4 = 2.5, and the final law is q exactly
    law = _sc_law(wc.copy_pairs(4), 1, "prefix", 6)
    assert_close(law.expected_nfe, 2.5, rtol=1e-12)
    assert_close(law.table(4), np.asarray(wc.copy_pairs(4).joint().probs), rtol=0, atol=1e-15)
    # L = 2, N = 1, factor: bad w.p. 1/2, each refill fails w.p. 1/2: E[rounds] = 1, E[NFE] = 1 + 2 = 3
    law = _sc_law(wc.copy_pairs(2), 1, "factor", 100)
    assert abs(law.expected_nfe - 3.0) < 1e-12 and law.unfinished < 1e-14


@pytest.mark.parametrize(
    "L,N", [(4, 2), pytest.param(6, 1, marks=pytest.mark.slow), pytest.param(6, 3, marks=pytest.mark.slow)]
)
def test_self_correction_exact_vs_closed_forms(L, N):
    lang = wc.copy_pairs(L)
    rp = S.reveal_probs(S.linear(), N)
    law = _sc_law(lang, N, "prefix", N + 4)
    assert law.unfinished == 0.0
    assert_close(law.table(L), np.asarray(lang.joint().probs), rtol=0, atol=1e-14)  # SER = 0, and the law is q
    assert_close(law.expected_nfe, C.copy_pairs_prefix_nfe(L, rp), rtol=1e-10)
    law = _sc_law(lang, N, "factor", 90)  # the tail beyond 90 steps is < 1e-12
    assert law.unfinished < 1e-11
    assert abs(law.expected_nfe - C.copy_pairs_factor_nfe(L, rp)) < 1e-9


@pytest.mark.slow  # compile-heavy (forward-backward on every frontier shape); the script test runs it by MC
def test_self_correction_additive_ngram_exact():
    lang = wc.additive_ngram(2, 5)
    law = _sc_law(lang, 2, "prefix", 6)
    assert law.unfinished == 0.0
    assert_close(law.table(5), np.asarray(lang.joint().probs), rtol=0, atol=1e-14)


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**16), tau=st.sampled_from([0.0, 0.1, 0.4]), kind=st.sampled_from(["copy", "noisy", "ngram"])
)
def test_structured_filters_equal_joint_reference(seed, tau, kind):
    if kind == "copy":
        lang = wc.copy_pairs(4)
    elif kind == "noisy":
        lang = wc.noisy_copy_pairs(4, 0.05 + 0.4 * (seed % 7) / 7)
    else:
        rng = np.random.default_rng(seed)
        cond = rng.dirichlet(np.full(2, 0.3), size=(2, 2))
        cond[rng.random((2, 2)) < 0.3] = np.eye(2)[rng.integers(0, 2)]  # some hard constraints
        lang = la.NGram(np.full(4, 0.25), cond, 5)
    sc = C.self_correcting(lang, 2, tau=tau)
    states = all_states(2, lang.length)
    assert (np.asarray(sc.flags(states)) == C.prefix_filter_joint(lang.joint(), states, tau)).all()


def test_self_correction_rejects_bad_input():
    with pytest.raises(ValueError, match="filter='factor' needs a block language"):
        C.self_correcting(wc.additive_ngram(2, 6), 2, filter="factor")
    with pytest.raises(ValueError, match="filter must be one of"):
        C.self_correcting(wc.copy_pairs(4), 2, filter="all")
    with pytest.raises(ValueError, match="tau"):
        C.self_correcting(wc.copy_pairs(4), 2, tau=1.0)


def test_copy_pairs_nfe_growth_closed_forms():
    """The cross-paper statement in numbers: plain MDM needs N ~ L for SER <= 1/2 (Feng2025); with remasking
    the prefix filter reaches SER = 0 at E[NFE] <= N + 2 at every L, the factor filter at E[NFE] growing
    by ~2 per doubling of L (2 log2 L)."""
    rp = S.reveal_probs(S.linear(), 1)
    prev = None
    for L in (2**j for j in range(4, 21, 2)):
        assert C.copy_pairs_prefix_nfe(L, rp) <= 3.0
        f = C.copy_pairs_factor_nfe(L, rp)
        if prev is not None and L >= 2**10:
            assert abs((f - prev) / 2 - 2.0) < 0.05  # + 4 NFE per factor 4 in L
        prev = f
    assert B.copy_pairs_min_steps_linear(1024, 0.5) > 0.3 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("L", [256, 1024])
def test_self_correction_mc_large_L(L):
    num, N = 400, 4
    rp = S.reveal_probs(S.linear(), N)
    lang = wc.copy_pairs(L)
    for filt, cf in (("prefix", C.copy_pairs_prefix_nfe(L, rp)), ("factor", C.copy_pairs_factor_nfe(L, rp))):
        s = ap.sample(jax.random.PRNGKey(L), C.self_correcting(lang, N, filter=filt), [2] * L, num=num,
                      max_steps=N + 80, max_length=L)  # fmt: skip
        assert s.finished.all() and np.isfinite(np.asarray(lang.log_prob(s.tokens))).all()  # SER = 0
        p = B.copy_pairs_ser_bernoulli(
            L, rp
        )  # SE floor: the correction term 2 x Bernoulli(SER_MDM) (sample SE can be 0)
        se = max(s.nfe.std(ddof=1) / math.sqrt(num), 2 * math.sqrt(p * (1 - p) / num))
        assert abs(s.nfe.mean() - cf) <= 4 * se + 1e-12
    # plain MDM (the core sampler): SER matches Feng2025's closed form within 4 binomial SE
    m = sample(jax.random.PRNGKey(1), lang.denoiser(), policies.RandomOrder(), N, num=num, reveal="bernoulli")
    ser = 1 - np.isfinite(np.asarray(lang.log_prob(m.tokens))).mean()
    closed = B.copy_pairs_ser_bernoulli(L, rp)
    assert abs(ser - closed) <= 4 * math.sqrt(closed * (1 - closed) / num) + 1e-12
    add = wc.additive_ngram(2, L)
    s = ap.sample(jax.random.PRNGKey(2), C.self_correcting(add, N), [2] * L, num=num, max_steps=N + 4, max_length=L)
    assert s.finished.all() and np.isfinite(np.asarray(add.log_prob(s.tokens))).all() and (s.nfe <= N + 2).all()


# ---- the script: one quick run per module, its numbers recomputed through the library ------------------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_quick(load_script("any_process"), tmp_path_factory)


def _csv(folder, what):
    return pd.read_csv(Path(folder) / f"any_process_{what}.csv")


def test_quick_writes_tidy_outputs(quick):
    out, res = quick
    for f in ("self_correction", "parity", "dyck", "parallel_time"):
        for ext in ("csv", "png"):
            assert (out / f"any_process_{f}.{ext}").stat().st_size > 0, (f, ext)
    meta = json.loads((out / "any_process.json").read_text())
    assert meta["quick"] is True and meta["seed"] == 0
    sc = _csv(out, "self_correction")
    assert not sc.duplicated(["language", "length", "steps", "method", "source"]).any()
    assert set(zip(sc.language, sc.method, sc.source)) == {
        ("copy pairs", m, s) for m in ("plain MDM", "remask (prefix)", "remask (factor)") for s in ("mc", "closed form")
    }  # the additive n-gram runs in the default only
    assert_close(sc.nfe.to_numpy(), res["self_correction"].nfe.to_numpy(), rtol=1e-11)  # the CSV is what was measured


def test_quick_self_correction_rows(quick):
    """Remasking: SER = 0 measured; copy-pairs MC NFE within 4 SE of the closed form, SE = the larger of the
    sample SE and the exact SE of the correction term 2 x Bernoulli(SER_MDM) (the sample SE is 0 when every draft
    failed); plain MDM's MC SER within 4 binomial SE of Feng2025's closed form; an MC row recomputed through the
    library with its key."""
    out, res = quick
    sc = _csv(out, "self_correction")
    mc = sc[sc.source == "mc"]
    assert (mc[mc.method != "plain MDM"].ser == 0).all() and (mc.unfinished == 0).all()
    for _, r in mc[mc.language == "copy pairs"].iterrows():
        cfs = C.copy_pairs_closed_forms(int(r.length), int(r.steps), 40)
        cf, p = cfs[r.method], cfs["plain MDM"][0]
        assert abs(r.ser - cf[0]) <= 4 * math.sqrt(cf[0] * (1 - cf[0]) / r.num) + 1e-12, r.to_dict()
        se = max(r.nfe_se, 2 * math.sqrt(p * (1 - p) / r.num)) if r.method != "plain MDM" else r.nfe_se
        assert abs(r.nfe - cf[1]) <= 4 * se + 1e-9, r.to_dict()
    rp = S.reveal_probs(S.linear(), 4)
    r = sc[(sc.source == "closed form") & (sc.method == "plain MDM") & (sc.steps == 4)].iloc[0]
    assert_close(r.ser, 1 - (1 - 0.5 * np.sum(B.unconditional_reveal_probs(rp) ** 2)) ** (r.length // 2), rtol=1e-12)
    assert_close(r.ser, 1 - (1 - 1 / 8) ** (r.length // 2), rtol=1e-12)  # linear schedule: 1 - (1 - 1/(2N))^{L/2}
    import _common  # on sys.path once the script is loaded

    r = mc[(mc.language == "copy pairs") & (mc.method == "remask (factor)") & (mc.steps == 4)].iloc[0]
    key = _common.point_key(0, 1, 2, 1, int(r.length), 4)  # (seed, FIG_SC, 1 + filter index, copy pairs, L, N)
    again = C.self_correction_point(wc.copy_pairs(int(r.length)), 4, filter="factor", key=key, num=int(r.num),
                                    max_rounds=40)  # fmt: skip
    assert again["nfe"] == r.nfe and again["nfe_se"] == pytest.approx(r.nfe_se, rel=1e-10)


def test_quick_growth_rows(quick):
    """The measured growth of the NFE needed for SER <= delta: plain MDM linear in L (log-log slope ~ 1, Feng2025),
    remasking with the prefix filter bounded (N = 1 draft: <= 3), with the factor filter + ~2 NFE per doubling."""
    _, res = quick
    g = res["settings"]["summary"]["nfe_growth"]
    for delta in (0.5, 0.1):
        assert abs(g[f"delta={delta:g} plain MDM"]["loglog_slope"] - 1) < 0.02
        assert g[f"delta={delta:g} remask (prefix)"]["nfe_at_max_length"] <= 3
        assert abs(g[f"delta={delta:g} remask (factor)"]["nfe_per_doubling"] - 2) < 0.05
    gr = res["growth"]
    r = gr[(gr.method == "plain MDM") & (gr.delta == 0.5)].iloc[-1]
    assert r.draft_steps == B.copy_pairs_min_steps_linear(int(r.length), 0.5)


def test_quick_parity_dyck_parallel_rows(quick):
    out, res = quick
    par = _csv(out, "parity")
    rules = par[par.model.str.startswith("rule")]
    assert (rules.accuracy == 1).all() and (rules.nfe == rules.expected_nfe).all()
    allin = rules[rules.inputs == "all"]
    assert (allin.groupby("length").num.first() == 2 ** allin.groupby("length").num.first().index).all()
    greedy = par[par.model == "trained on length 2 (greedy)"]
    assert (greedy.accuracy == 1).all() and (greedy.nfe == 2 * (greedy.length - 1)).all()
    assert res["settings"]["summary"]["parity_head"]["head_final_loss"] < 0.05
    dy = _csv(out, "dyck")
    assert dy.equal.all() and (dy.unfinished == 0).all()
    for k, g in dy.groupby("k"):
        assert g.sort_values("length").enumerated.tolist() == tree_walk_counts(int(k), int(g.max_pairs.iloc[0]))
    assert res["settings"]["summary"]["dyck_mc"]["fraction_in_dyck"] == 1.0
    pt = _csv(out, "parallel_time")
    assert pt.correct.all() and (pt.steps == pt.formula_steps).all()
    lg = np.ceil(np.log2(pt.n.clip(lower=1))).astype(int)
    mdm = pt[pt.method.str.startswith("MDM")]
    assert (mdm.steps == lg[mdm.index]).all()  # ceil(log2 n) + c with c = 0 (inputs in the prompt)
    ar = pt[pt.method.str.startswith("AR")]
    assert (ar.steps == ar.n - 1).all()


def test_committed_rows_recompute():
    """The committed default-run CSVs (figures/any_process_*.csv): closed-form and exact rows re-derived."""
    F = ROOT / "figures"
    sc = pd.read_csv(F / "any_process_self_correction.csv")
    cf = sc[(sc.source == "closed form") & (sc.length == 64)]
    for _, r in cf.iterrows():
        assert_close(np.array([r.ser, r.nfe]), np.array(C.copy_pairs_closed_forms(64, int(r.steps), 40)[r.method]),
                     rtol=1e-10)  # fmt: skip
    mc = sc[sc.source == "mc"]
    assert (mc[mc.method != "plain MDM"].ser == 0).all() and (mc.unfinished == 0).all()
    pm = mc[(mc.method == "plain MDM") & (mc.language == "copy pairs")]
    for _, r in pm.iterrows():  # Feng2025's closed form within 4 binomial SE (plus 1 count: SE = 0 at SER = 0 or 1)
        p = B.copy_pairs_ser_bernoulli(int(r.length), S.reveal_probs(S.linear(), int(r.steps)))
        assert abs(r.ser - p) <= 4 * math.sqrt(p * (1 - p) / r.num) + 1 / r.num, r.to_dict()
    par = pd.read_csv(F / "any_process_parity.csv")
    for _, r in par[(par.inputs == "random") & par.model.str.startswith("rule") & (par.length <= 64)].iterrows():
        x = np.random.default_rng([0, int(r.length)]).integers(0, 2, int(r.length))
        got = C.parity_run(x, r.model[6:-1])
        assert got["correct"] and got["nfe"] == r.nfe == r.expected_nfe
    assert par[par.model.str.startswith("rule")].accuracy.eq(1).all()
    dy = pd.read_csv(F / "any_process_dyck.csv")
    for k, g in dy.groupby("k"):
        assert g.sort_values("length").enumerated.tolist() == tree_walk_counts(int(k), int(g.max_pairs.iloc[0]))
    assert dy.equal.all()
    pt = pd.read_csv(F / "any_process_parallel_time.csv")
    assert pt.correct.all() and (pt.steps == pt.formula_steps).all() and pt.n.max() >= 1000
