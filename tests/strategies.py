"""Hypothesis strategies shared by every property test: small instances of the MDM world."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import strategies as st

from synthetic import languages
from theory import policies, schedules
from theory.joint import Joint
from theory.states import all_sequences

seeds = st.integers(0, 2**31 - 1)
concentrations = st.sampled_from([0.1, 0.3, 1.0, 3.0])


@st.composite
def vocab_length(draw, max_states: int = 4**5, min_length: int = 1, max_length: int = 6):
    """(V, L) with (V+1)**L <= max_states."""
    V = draw(st.integers(2, 4))
    Lmax = min_length
    while Lmax + 1 <= max_length and (V + 1) ** (Lmax + 1) <= max_states:
        Lmax += 1
    L = draw(st.integers(min_length, Lmax))
    return V, L


# ---- joints: smooth and adversarial tables, drawn equally often -----------------------------------
SMOOTH_KINDS = ("dirichlet", "dirichlet_holes", "uniform")
ADVERSARIAL_KINDS = ("sparse_uniform", "structured", "near_deterministic", "soft_structured")
FULL_SUPPORT_KINDS = ("dirichlet", "uniform", "near_deterministic", "soft_structured")
JOINT_KINDS = SMOOTH_KINDS + ADVERSARIAL_KINDS
near_det_masses = st.sampled_from([1e-6, 1e-4, 1e-3, 1e-2])  # mass left off the dominant sequence


def _constraint(rng, X, V, L):
    """A random hard constraint on sequences X (S, L): copy x_i = x_j, anti-copy x_i != x_j, sum
    x_k = x_i + x_j mod V (XOR at V = 2), fixed value x_i = v, or parity sum(x) = 0 mod V. (S,) bool."""
    kinds = ["fixed", "parity"] + (["copy", "anticopy"] if L >= 2 else []) + (["sum"] if L >= 3 else [])
    kind = kinds[rng.integers(len(kinds))]
    if kind == "fixed":
        return X[:, rng.integers(L)] == rng.integers(V)
    if kind == "parity":
        return X.sum(1) % V == 0
    if kind in ("copy", "anticopy"):
        i, j = rng.choice(L, 2, replace=False)
        return (X[:, i] == X[:, j]) if kind == "copy" else (X[:, i] != X[:, j])
    i, j, k = rng.choice(L, 3, replace=False)
    return X[:, k] == (X[:, i] + X[:, j]) % V


def joint_of_kind(
    kind: str,
    vocab_size: int,
    length: int,
    seed: int,
    *,
    concentration: float = 1.0,
    support: str = "few",
    near_mass: float = 1e-4,
    constraints: int = 1,
) -> Joint:
    """A Joint over V**L of the named kind, drawn with numpy from ``seed`` (cheap, no JAX compile).

    * ``dirichlet``: q ~ Dirichlet(concentration), floored at 1e-300 so that the support is full;
    * ``dirichlet_holes``: the same with ~40% of the sequences zeroed (>= 1 kept);
    * ``uniform``: the uniform table (a product law: every sampler is exact);
    * ``sparse_uniform``: uniform on a random subset of V**L of size 1, 2, "few" (3..8) or "half";
    * ``structured``: uniform or Dirichlet(2) weights on the sequences meeting ``constraints`` random
      hard constraints (copy, anti-copy, sum/XOR, fixed value, parity); constraints that would leave
      nothing are dropped;
    * ``soft_structured``: full-support version, q(x) proportional to exp(4 * #constraints met);
    * ``near_deterministic``: one sequence with mass 1 - near_mass, the rest spread by Dirichlet(1)
      over all other sequences (full support).
    """
    V, L = int(vocab_size), int(length)
    S = V**L
    rng = np.random.default_rng(seed)
    if kind in ("dirichlet", "dirichlet_holes"):
        p = np.array(languages.dirichlet(jax.random.PRNGKey(seed), V, L, concentration).probs)
        p = np.maximum(p, 1e-300)
        if kind == "dirichlet_holes":
            keep = rng.random(S) < 0.6
            keep[rng.integers(S)] = True
            p = p * keep
    elif kind == "uniform":
        p = np.ones(S)
    elif kind == "sparse_uniform":
        k = {"1": 1, "2": min(2, S), "few": int(rng.integers(3, 9)), "half": max(1, S // 2)}[support]
        p = np.zeros(S)
        p[rng.choice(S, min(k, S), replace=False)] = 1.0
    elif kind in ("structured", "soft_structured"):
        X = all_sequences(V, L)
        cons = [_constraint(rng, X, V, L) for _ in range(constraints)]
        if kind == "soft_structured":
            p = np.exp(4.0 * np.sum(cons, axis=0))
        else:
            ok = np.ones(S, dtype=bool)
            for c in cons:
                if (ok & c).any():
                    ok &= c
            p = ok * (rng.dirichlet(np.full(S, 2.0)) if rng.random() < 0.5 else 1.0)
    elif kind == "near_deterministic":
        top = rng.integers(S)
        p = rng.dirichlet(np.ones(S))
        p[top] = 0.0
        p = p * (near_mass / p.sum())
        p[top] = 1.0 - near_mass
    else:
        raise ValueError(f"unknown joint kind {kind!r}; one of {JOINT_KINDS}.")
    return Joint(p / p.sum(), V, L)


def kind_params(draw, kind: str, L: int, concentrations) -> dict:
    """The keyword arguments of :func:`joint_of_kind` that a table kind needs, drawn."""
    if kind in ("dirichlet", "dirichlet_holes"):
        return {"concentration": draw(st.sampled_from(list(concentrations)))}
    if kind == "sparse_uniform":
        return {"support": draw(st.sampled_from(["1", "2", "few", "half"]))}
    if kind in ("structured", "soft_structured"):
        return {"constraints": draw(st.integers(1, max(1, L - 1)))}
    if kind == "near_deterministic":
        return {"near_mass": draw(near_det_masses)}
    return {}


@st.composite
def joints(draw, max_states: int = 4**5, min_length: int = 1, max_length: int = 6, sparse: bool = True, kinds=None):
    """A random Joint with (V+1)**L <= max_states: smooth tables (Dirichlet at several concentrations,
    with or without support holes, uniform) and adversarial ones (sparse uniform supports of size 1, 2,
    a few or half of V**L; hard copy / anti-copy / XOR / fixed-value / parity constraints;
    near-deterministic tables) equally often. ``sparse=False`` draws full-support tables only
    (Dirichlet, uniform, near-deterministic, soft constraints). ``kinds`` restricts the kinds.

    Signature kept from the first version (max_states, min_length, max_length, sparse): every test
    that draws joints gets the adversarial kinds too."""
    V, L = draw(vocab_length(max_states, min_length, max_length))
    if kinds is None:
        if sparse:
            kinds = draw(st.sampled_from([SMOOTH_KINDS, ADVERSARIAL_KINDS]))
        else:
            kinds = FULL_SUPPORT_KINDS
    kind = draw(st.sampled_from(list(kinds)))
    seed = draw(seeds)
    return joint_of_kind(kind, V, L, seed, **kind_params(draw, kind, L, (0.05, 0.1, 0.3, 1.0, 3.0, 10.0)))


def sparse_supports(**kw):
    """Uniform laws on random subsets of V**L (sizes 1, 2, a few, half)."""
    return joints(kinds=("sparse_uniform",), **kw)


def structured_joints(**kw):
    """Hard constraints (copy, anti-copy, XOR, fixed value, parity): zero-probability partial states."""
    return joints(kinds=("structured",), **kw)


def near_deterministic_joints(**kw):
    """One sequence with mass 1 - delta (delta in 1e-6 .. 1e-2), full support."""
    return joints(kinds=("near_deterministic",), **kw)


def adversarial_joints(**kw):
    return joints(kinds=ADVERSARIAL_KINDS, **kw)


def schedule_list():
    return [
        schedules.linear(),
        schedules.cosine(),
        schedules.cosine_squared(),
        schedules.polynomial(2.0),
        schedules.polynomial(0.5),
        schedules.geometric(),
        schedules.beta_cdf(2.0, 0.5),
        schedules.sin2_beta(0.9, 0.3),
    ]


schedules_st = st.sampled_from(schedule_list())
steps_st = st.integers(1, 7)
reveals = st.sampled_from(["fixed", "bernoulli"])


@st.composite
def value_blind_policies(draw, length: int):
    """Policies whose choice of positions does not look at the values they reveal."""
    kind = draw(st.sampled_from(["random", "l2r", "fixed"]))
    if kind == "random":
        return policies.RandomOrder()
    if kind == "l2r":
        return policies.LeftToRight()
    return policies.FixedOrder(tuple(draw(st.permutations(range(length)))))


any_proxy = st.sampled_from(list(policies.PROXIES))


# ---- issue 3: structured languages (Markov / n-gram / HMM) for synthetic.markov -------------------
def _sparsify(rng, p, keep_prob=0.6):
    """Zero random entries of each row of a stochastic array (..., V), keeping >= 1 per row; renormalise."""
    keep = rng.random(p.shape) < keep_prob
    flat = keep.reshape(-1, p.shape[-1])
    flat[np.arange(flat.shape[0]), rng.integers(p.shape[-1], size=flat.shape[0])] = True
    q = p * flat.reshape(p.shape)
    return q / q.sum(-1, keepdims=True)


def fibonacci_ngram(vocab_size: int, length: int):
    """Deterministic trigram x_i = x_{i-1} + x_{i-2} mod V with uniform (x_0, x_1)."""
    V = vocab_size
    a, b, c = np.meshgrid(np.arange(V), np.arange(V), np.arange(V), indexing="ij")
    cond = (c == (a + b) % V).astype(np.float64)
    return languages.NGram(np.full(V * V, 1.0 / (V * V)), cond, length)


@st.composite
def structured_languages(draw, max_states: int = 3**7, max_length: int = 7):
    """A random MarkovChain, NGram (n = 2, 3) or HMM with (V+1)**L <= max_states (enumerable).

    Options: sparse (random zero transitions/emissions) or deterministic (Fibonacci mod V trigram,
    permutation Markov chain), so that some partial states have probability 0.
    """
    kind = draw(st.sampled_from(["markov", "ngram2", "ngram3", "hmm"]))
    min_length = {"ngram2": 2, "ngram3": 3}.get(kind, 1)  # an order-n n-gram needs L >= n
    V, L = draw(vocab_length(max_states, min_length, max_length))
    seed = draw(seeds)
    key = jax.random.PRNGKey(seed)
    conc = draw(concentrations)
    rng = np.random.default_rng(seed)
    special = draw(st.sampled_from(["dense", "sparse", "deterministic"]))
    if kind == "markov":
        lang = languages.random_markov(key, V, L, conc)
        if special == "sparse":
            lang = languages.MarkovChain(_sparsify(rng, lang.init), _sparsify(rng, lang.trans), L)
        elif special == "deterministic":
            lang = languages.MarkovChain(lang.init, np.eye(V)[rng.permutation(V)], L)
        return lang
    if kind in ("ngram2", "ngram3"):
        n = 2 if kind == "ngram2" else 3
        if special == "deterministic" and n == 3:
            return fibonacci_ngram(V, L)
        lang = languages.random_ngram(key, V, n, L, conc)
        if special != "dense":
            lang = languages.NGram(
                _sparsify(rng, lang.init), _sparsify(rng, lang.cond, 0.4 if special == "deterministic" else 0.6), L
            )
        return lang
    H = draw(st.integers(1, 3))
    lang = languages.random_hmm(key, H, V, L, conc)
    if special != "dense":
        lang = languages.HMM(lang.init, _sparsify(rng, lang.trans), _sparsify(rng, lang.emit), L)
    return lang


# ---- issue 6: learned denoisers ------------------------------------------------------------------
model_kinds = st.sampled_from(["transformer", "tabular", "lowrank"])


@st.composite
def partial_state_batches(draw, vocab_size: int, length: int, batch: int | None = None, max_batch: int = 8):
    """A batch (B, L) of partial states with entries in 0..V (V = mask), as int64 numpy (B = batch if given)."""
    B = batch if batch is not None else draw(st.integers(1, max_batch))
    flat = draw(st.lists(st.integers(0, vocab_size), min_size=B * length, max_size=B * length))
    return np.asarray(flat, dtype=np.int64).reshape(B, length)


# ---- issue 5 (BenHamu2025: EB sampler, error decomposition, tasks) --------------------------------
eb_gammas = st.sampled_from([0.0, 1e-3, 0.01, 0.1, 0.25, 0.5, 1.0, 1.5, float("inf")])


@st.composite
def masked_marginals(draw, max_batch: int = 6, max_length: int = 8):
    """(states (B, L) with entries in 0..V, marginals (B, L, V)) as a denoiser would give them:
    Dirichlet rows at masked positions (some one-hot: zero entropy), one-hot at visible ones."""
    V = draw(st.sampled_from([2, 3, 5]))  # few distinct shapes: JAX compiles once per shape
    L = draw(st.sampled_from([n for n in (1, 3, 5, 8) if n <= max_length]))
    B = draw(st.sampled_from([n for n in (1, 4, 6) if n <= max_batch]))
    rng = np.random.default_rng(draw(seeds))
    conc = draw(concentrations)
    m = rng.dirichlet(np.full(V, conc), size=(B, L))  # (B, L, V)
    onehot_rows = rng.random((B, L)) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    m[onehot_rows] = np.eye(V)[rng.integers(V, size=int(onehot_rows.sum()))]
    masked = rng.random((B, L)) < draw(st.sampled_from([0.5, 0.9, 1.0]))
    vals = rng.integers(V, size=(B, L))
    states = np.where(masked, V, vals)
    m = np.where(masked[..., None], m, np.eye(V)[vals])
    return states.astype(np.int64), m


def perturbed_table(joint, seed: int, eps: float):
    """Conditionals table ((V+1)**L, L, V) = (1 - eps) q + eps r, r a random positive law per row."""

    V, _L = joint.vocab_size, joint.length
    t = np.asarray(joint.denoiser().table())
    r = np.random.default_rng(seed).dirichlet(np.ones(V), size=t.shape[:2])
    return (1.0 - eps) * t + eps * r


# --- issue 4: Feng2025 -------------------------------------------------------------------------------
@st.composite
def entropy_ngrams(draw, max_states: int = 4**5):
    """A random full-support n-gram (order 2 or 3) with a controlled entropy rate, small enough to enumerate."""
    V = draw(st.sampled_from([2, 3]))
    order = draw(st.sampled_from([2, 3]))
    Lmax = order
    while (V + 1) ** (Lmax + 1) <= max_states:
        Lmax += 1
    L = draw(st.integers(order, max(order, Lmax)))
    frac = draw(st.sampled_from([0.2, 0.5, 0.8]))
    init = draw(st.sampled_from(["stationary", "uniform"]))
    return languages.entropy_ngram(jax.random.PRNGKey(draw(seeds)), V, order, L, frac * float(np.log(V)), init=init)


# ---- step plans: compositions of L and their refinements (tests/test_refinement.py) ----------------
@st.composite
def compositions(draw, length: int, min_parts: int = 1):
    """Fixed counts k_1..k_N >= 1 summing to ``length`` (a random composition), as a list."""
    cuts = (
        sorted(draw(st.sets(st.integers(1, length - 1), min_size=min(min_parts, length) - 1, max_size=length - 1)))
        if length > 1
        else []
    )
    return np.diff([0, *cuts, length]).tolist()


@st.composite
def single_splits(draw, counts):
    """A refinement of ``counts`` that splits one step of >= 2 tokens into two non-empty steps (or
    ``counts`` itself if no step can be split)."""
    can = [i for i, k in enumerate(counts) if k >= 2]
    if not can:
        return list(counts)
    i = draw(st.sampled_from(can))
    a = draw(st.integers(1, counts[i] - 1))
    return list(counts[:i]) + [a, counts[i] - a] + list(counts[i + 1 :])


# ---- issue 10: Chen2025 energies (V <= 3, L <= 4) ---------------------------------------------------------
beta_params = st.sampled_from([0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.5, 2.0])


@st.composite
def energy_joints(draw, full_support: bool = False, max_length: int = 4):
    """A Joint with V in {2, 3}, L in 1..max_length: smooth and adversarial kinds (full-support kinds only
    with ``full_support=True``)."""
    V = draw(st.sampled_from([2, 3]))
    L = draw(st.integers(1, max_length))
    kinds = FULL_SUPPORT_KINDS if full_support else draw(st.sampled_from([SMOOTH_KINDS, ADVERSARIAL_KINDS]))
    kind = draw(st.sampled_from(list(kinds)))
    kw = kind_params(draw, kind, L, (0.1, 1.0, 10.0))
    return joint_of_kind(kind, V, L, draw(seeds), **kw)


@st.composite
def beta_weights(draw):
    """Chen2025's Beta weights gamma = I_tau(a, b), a, b in 0.2..2."""
    return schedules.beta_weight(draw(beta_params), draw(beta_params))


def chen_schedule_list():
    """Toolkit schedules for the energy tests: the strategies' list plus Chen2025's sine baseline."""
    return [*schedule_list(), schedules.chen_sine()]


# ---- Garg2025: per-position schedules and the learned order (tests/test_orders.py) --------------------
#: log of Garg2025's polynomial weights w_l (log-uniform in [0.1, 10])
log_weights = st.floats(np.log(0.1), np.log(10.0))


@st.composite
def per_position_schedules(draw, length: int, kinds=("polynomial", "mixed", "shared", "function")):
    """A per-position schedule of ``length`` positions, alpha_{t,l} (Garg2025):

    * ``polynomial``: 1 - t**w_l, w_l log-uniform in [0.1, 10] (Plackett-Luce decoding order);
    * ``mixed``: each position its own schedule from schedule_list() (linear, cosine, ..., Beta-CDF, sin²∘Beta);
    * ``shared``: one schedule from schedule_list() for every position (uniform order law);
    * ``function``: a user family (1 - t**a_l)**b_l (Kumaraswamy survival), a_l in [0.3, 4], b_l in [0.5, 4]
      (densities singular at t = 0 when a_l < 1 and at t = 1 when b_l < 1), with autodiff derivatives.
      b_l >= 1/2: float64 cannot resolve t within 1.1e-16 of 1, where a density ~ (1 - t)**(b-1) holds mass
      ~ 1e-16**b (theory.orders: accuracy near t = 1).
    """
    from theory import orders

    kind = draw(st.sampled_from(list(kinds)))
    L = int(length)
    if kind == "polynomial":
        return orders.PolynomialFamily(np.exp([draw(log_weights) for _ in range(L)]))
    if kind == "mixed":
        return schedules.PerPosition(tuple(draw(schedules_st) for _ in range(L)))
    if kind == "shared":
        return orders.shared(draw(schedules_st), L)
    a = np.array([draw(st.floats(0.3, 4.0)) for _ in range(L)])
    b = np.array([draw(st.floats(0.5, 4.0)) for _ in range(L)])
    return orders.from_functions(lambda t: (1.0 - jax.numpy.asarray(t)[..., None] ** a) ** b, L, name="kumaraswamy")


# ---- issue 14, target 3: sparse-row chains (synthetic.sparse_chain) --------------------------------
SPARSE_CHAIN_KINDS = ("dirichlet", "sparse", "absorbing", "deterministic")


@st.composite
def sparse_chains(draw, vocab_size: int = 3, length: int = 5):
    """A SparseMarkovChain at fixed (V, L) (one layout shape: K = V): rows Dirichlet, sparse (random zeros),
    with absorbing states, or a permutation; init possibly with zeros; teleport eps in {0, 1e-3, 0.3, 1}
    (half the draws 0) with nu possibly sparse."""
    from synthetic.sparse_chain import SparseMarkovChain

    V, L = vocab_size, length
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(SPARSE_CHAIN_KINDS))
    conc = draw(concentrations)
    trans = rng.dirichlet(np.full(V, conc), size=V)
    if kind == "sparse":
        trans = _sparsify(rng, trans, 0.4)
    elif kind == "absorbing":
        trans = _sparsify(rng, trans, 0.5)
        for a in rng.choice(V, size=rng.integers(1, V), replace=False):
            trans[a] = np.eye(V)[a]
    elif kind == "deterministic":
        trans = np.eye(V)[rng.permutation(V)]
    init = rng.dirichlet(np.full(V, conc))
    if draw(st.booleans()):
        init = _sparsify(rng, init, 0.5)
    eps = draw(st.sampled_from([0.0, 0.0, 0.0, 1e-3, 0.3, 1.0]))
    nu = rng.dirichlet(np.ones(V))
    if draw(st.booleans()):
        nu = _sparsify(rng, nu, 0.5)
    lang = SparseMarkovChain.from_dense(init, trans, L, eps, nu, row_nnz=V)
    if draw(st.booleans()):  # split entries into duplicate (index, weight) pairs: the layout must add them up
        idx, prob = lang.idx.copy(), lang.prob.copy()
        for u in range(V):
            free = np.flatnonzero(prob[u] == 0)
            if free.size:
                idx[u, free[0]] = idx[u, 0]
                prob[u, free[0]] = prob[u, 0] / 2
                prob[u, 0] /= 2
        lang = SparseMarkovChain(init, idx, prob, L, eps, nu)
    return lang


@st.composite
def markov_chains(draw, V: int = 3, L: int = 37):
    """MarkovChain at (V, L): Dirichlet rows (concentration 0.1, 1 or 10), sparse rows (random zeros), an
    absorbing state or a permutation; init possibly sparse (adversarial as often as smooth)."""
    r = np.random.default_rng(draw(seeds))
    kind = draw(st.sampled_from(["dirichlet", "sparse", "absorbing", "deterministic"]))
    trans = r.dirichlet(np.full(V, draw(st.sampled_from([0.1, 1.0, 10.0]))), size=V)
    if kind == "sparse":
        trans = _sparsify(r, trans, 0.4)
    elif kind == "absorbing":
        trans = _sparsify(r, trans, 0.5)
        trans[r.integers(V)] = np.eye(V)[r.integers(V)]
        trans /= trans.sum(1, keepdims=True)
    elif kind == "deterministic":
        trans = np.eye(V)[r.permutation(V)]
    init = r.dirichlet(np.ones(V))
    if draw(st.booleans()):
        init = _sparsify(r, init, 0.5)
    return languages.MarkovChain(init, trans, L)


def chain_partial_states(lang, seed: int, batch: int, mask_prob: float = 0.5) -> np.ndarray:
    """(batch, L) partial states: the first half sampled from ``lang`` then masked at random (possible
    states), the rest uniform over 0..V (often impossible under a sparse chain)."""
    V, L = lang.vocab_size, lang.length
    rng = np.random.default_rng(seed)
    x = np.array(lang.sample(jax.random.PRNGKey(seed), batch))
    x[batch // 2 :] = rng.integers(0, V, size=(batch - batch // 2, L))
    x[rng.random(x.shape) < mask_prob] = V
    return x


@st.composite
def fb_languages(draw, vocab_size: int = 3, num_hidden: int = 3, length: int = 6, kinds=("hmm", "ngram3")):
    """An HMM (H hidden states) or a trigram at fixed (V, L), dense, sparse (random zeros) or deterministic
    (permutation hidden chain with one-hot emissions / the Fibonacci trigram), so that some partial states have
    probability 0. Fixed shapes per kind: one compilation each."""
    V, L = vocab_size, length
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    conc = draw(concentrations)
    kind = draw(st.sampled_from(list(kinds)))
    special = draw(st.sampled_from(["dense", "sparse", "deterministic"]))
    if kind == "ngram3":
        if special == "deterministic":
            return fibonacci_ngram(V, L)
        lang = languages.random_ngram(key, V, 3, L, conc)
        if special == "sparse":
            lang = languages.NGram(_sparsify(rng, lang.init), _sparsify(rng, lang.cond, 0.4), L)
        return lang
    H = num_hidden
    lang = languages.random_hmm(key, H, V, L, conc)
    if special == "sparse":
        return languages.HMM(_sparsify(rng, lang.init), _sparsify(rng, lang.trans), _sparsify(rng, lang.emit), L)
    if special == "deterministic":
        return languages.HMM(lang.init, np.eye(H)[rng.permutation(H)], np.eye(V)[rng.integers(0, V, H)], L)
    return lang
