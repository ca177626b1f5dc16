"""First-order Markov chains with sparse transition rows, exact at real vocabulary sizes (V = 4096, L = 1024).

A :class:`SparseMarkovChain` has transitions

    T = (1 - eps) P + eps 1 nu^T

with P stored as K entries per row (ELL / "top-K" layout: ``idx`` (V, K) int, ``prob`` (V, K), each row
summing to 1; padding entries carry probability 0) and the optional exact rank-1 "teleport" mixture
(eps, nu) as in Tang et al. 2026 (whose ground-truth chains use top-K rows of a BPE vocabulary of 4096 and
eps = 1e-4). T is never densified: a product is ``x T = (1 - eps) x P + eps (x . 1) nu`` and
``T y = (1 - eps) P y + eps (nu . y) 1``, each O(V K) through the row layout (P y) or the column layout
(x P; built once, K_c = the largest column count).

Exact conditionals (:class:`SparseChainDenoiser`). For a masked position i with nearest visible tokens
x_a (a < i) and x_b (b > i),

    q(x_i = v | z) ∝ f_i[v] g_i[v],   f_i = e_{x_a} T^{i-a}  (init T^i if there is no a),
                                      g_i = T^{b-i} e_{x_b}  (1 if there is no b).

f and g are computed by a forward and a backward sweep (``lax.scan`` over the L positions, the batch
inside each step), not by dense powers:

* the message one step after a visible token is a row (column) of T: K scattered entries plus the
  rank-1 term, O(K + V);
* deeper in a masked run, one sparse product per position, O(V K) — done only for the rows of the
  batch that need it at that step, gathered into the smallest of a few static widths (``lax.switch``),
  so a step costs what its active rows need, not the whole batch;
* before the first visible token, f_i = init T^i is a table built once (L, V); after the last one g = 1.

Forward messages are exact probability vectors (no rescaling needed); backward messages are rescaled to
sum 1 after each product (the conditional is invariant to that). The forward sweep also accumulates
log q(visible part) = sum over visible j of log f_j[x_j]; a partial state with q(visible) = 0 gets the
uniform distribution 1/V at its masked positions, the convention of :mod:`theory.denoiser`.

Cost of ``marginals_at(states, positions)`` ((B, K) positions): L scan steps per sweep, each
O(B (V + K)) bookkeeping, plus one O(V K_c) (forward) / O(V K) (backward) product per masked position
that lies between a run's visible end and an asked position of that run — the runs without an asked
position cost no product. ``marginals(states)`` is ``marginals_at`` at every position; memory
O(B K V) for the output plus O(L V) for the init table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from theory.joint import Joint, joint_bytes
from theory.pytree import register_dataclass
from theory.states import check_sequences, check_states
from theory.validation import as_f64, check_distribution, check_size, check_vocab_length, require_x64

from .chain_oracle import safe_log
from .languages import MarkovChain, numpy_rng


# ---- sparse layouts -----------------------------------------------------------------------------------------
def canonical_rows(idx: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge duplicate column indices within each row and drop zero entries: -> (idx, prob) (V, K), the input
    width, sorted by token and padded with (0, 0.0)."""
    V = idx.shape[0]
    rows = []
    for u in range(V):
        cols, inv = np.unique(idx[u], return_inverse=True)
        w = np.bincount(inv, weights=prob[u], minlength=cols.size)
        keep = w > 0
        rows.append((cols[keep], w[keep]))
    out_i = np.zeros(idx.shape, np.int32)
    out_p = np.zeros(idx.shape)
    for u, (c, w) in enumerate(rows):
        out_i[u, : c.size] = c
        out_p[u, : c.size] = w
    return out_i, out_p


def transpose_rows(idx: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column layout of P: (cidx, cw) (V, K_c) with P[cidx[v, c], v] = cw[v, c] (padding (0, 0.0)); K_c = the
    largest column count, at least the row width K (so equal shapes give equal layouts)."""
    V, K = idx.shape
    u = np.repeat(np.arange(V), K)
    v = idx.reshape(-1)
    w = prob.reshape(-1)
    keep = w > 0
    u, v, w = u[keep], v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    u, v, w = u[order], v[order], w[order]
    counts = np.bincount(v, minlength=V)
    Kc = max(K, int(counts.max(initial=0)))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(v.size) - start[v]
    cidx = np.zeros((V, Kc), np.int32)
    cw = np.zeros((V, Kc))
    cidx[v, slot] = u
    cw[v, slot] = w
    return cidx, cw


def _row_times(x: np.ndarray, cidx, cw, eps, nu) -> np.ndarray:
    """x T for a vector x (V,) (numpy)."""
    return (1 - eps) * np.sum(cw * x[cidx], axis=1) + eps * x.sum() * nu


# ---- the language -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SparseMarkovChain:
    """First-order chain with T = (1 - eps) P + eps 1 nu^T, P given by K entries per row (see module docstring).

    Shapes: ``init`` (V,), ``idx`` (V, K) int in 0..V-1, ``prob`` (V, K) >= 0 with rows summing to 1
    (duplicate indices in a row add up; zero entries are padding), ``eps`` in [0, 1], ``nu`` (V,) (default:
    uniform). q(x) = init[x_0] prod_i T[x_{i-1}, x_i].
    """

    init: np.ndarray
    idx: np.ndarray
    prob: np.ndarray
    length: int
    eps: float = 0.0
    nu: np.ndarray | None = None

    def __post_init__(self):
        init = check_distribution(self.init, "init")
        if init.ndim != 1:
            raise ValueError(f"init must have shape (V,), got {init.shape}.")
        V = int(init.shape[0])
        idx = np.asarray(self.idx)
        if idx.ndim != 2 or idx.shape[0] != V or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be an integer array (V, K) = ({V}, K), got {idx.dtype} {idx.shape}.")
        if idx.size and (idx.min() < 0 or idx.max() >= V):
            raise ValueError(f"idx entries must be token ids in 0..{V - 1}, got range {idx.min()}..{idx.max()}.")
        prob = check_distribution(np.asarray(self.prob, np.float64), "prob (rows)", axis=-1)
        if prob.shape != idx.shape:
            raise ValueError(f"prob must have the shape of idx {idx.shape}, got {prob.shape}.")
        eps = float(self.eps)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps (the teleport weight) must be in [0, 1], got {self.eps!r}.")
        nu = np.full(V, 1.0 / V) if self.nu is None else check_distribution(self.nu, "nu")
        if nu.shape != (V,):
            raise ValueError(f"nu must have shape ({V},), got {nu.shape}.")
        check_vocab_length(V, self.length)
        ci, cp = canonical_rows(idx, prob)
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "idx", ci)
        object.__setattr__(self, "prob", cp)
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "nu", nu)
        object.__setattr__(self, "length", int(self.length))

    @classmethod
    def from_dense(cls, init, trans, length: int, eps: float = 0.0, nu=None, row_nnz: int | None = None):
        """The chain of a dense row-stochastic ``trans`` (V, V), stored by its nonzero entries (``row_nnz``
        entries per row: default the largest row count; pass V for a layout that does not depend on the zeros)."""
        trans = check_distribution(trans, "trans (rows)", axis=-1)
        nnz = int((trans > 0).sum(axis=1).max())
        K = nnz if row_nnz is None else int(row_nnz)
        if not nnz <= K <= trans.shape[0]:
            raise ValueError(
                f"row_nnz must be in {nnz}..{trans.shape[0]} (the largest row count .. V), got {row_nnz!r}."
            )
        idx = np.argsort(-(trans > 0).astype(np.int8), axis=1, kind="stable")[:, :K].astype(np.int32)
        return cls(init, idx, np.take_along_axis(trans, idx, axis=1), length, eps, nu)

    @property
    def vocab_size(self) -> int:
        return int(self.init.shape[0])

    @property
    def teleport(self) -> np.ndarray:
        """nu (V,), the teleport distribution (uniform when none was given)."""
        assert self.nu is not None  # set in __post_init__
        return self.nu

    @property
    def row_nnz(self) -> int:
        """K: stored entries per row (after merging duplicates and dropping zeros)."""
        return int(self.idx.shape[1])

    def with_length(self, length: int) -> SparseMarkovChain:
        return SparseMarkovChain(self.init, self.idx, self.prob, length, self.eps, self.nu)

    def dense_trans(self, max_bytes: float | None = None) -> np.ndarray:
        """T as a dense (V, V) array (small V only: raises ValueError past the memory budget)."""
        V = self.vocab_size
        check_size(8 * V * V, f"The dense transition matrix for V = {V}", max_bytes, "Use the sparse members")
        P = np.zeros((V, V))
        np.add.at(P, (np.repeat(np.arange(V), self.row_nnz), self.idx.reshape(-1)), self.prob.reshape(-1))
        return (1 - self.eps) * P + self.eps * self.teleport[None, :]

    def dense(self, max_bytes: float | None = None) -> MarkovChain:
        """The same law as a dense :class:`synthetic.languages.MarkovChain` (small V)."""
        return MarkovChain(self.init, self.dense_trans(max_bytes), self.length)

    def joint(self, max_bytes: float | None = None) -> Joint:
        """The enumerated law over V**L (small V, L)."""
        check_size(joint_bytes(self.vocab_size, self.length), "Enumerating this chain", max_bytes, "Use a smaller L")
        return self.dense(max_bytes).joint(max_bytes)

    def denoiser(self) -> SparseChainDenoiser:
        """The exact conditionals at this length (built once per language object)."""
        require_x64("SparseMarkovChain.denoiser")
        d = self.__dict__.get("_denoiser")
        if d is None:
            d = sparse_chain_denoiser(self)
            object.__setattr__(self, "_denoiser", d)
        return d

    def conditionals(self, states) -> jax.Array:
        """Validated exact conditionals: partial states (B, L) -> (B, L, V)."""
        return self.denoiser().marginals(jnp.asarray(check_states(states, self.vocab_size, self.length)))

    def log_marginal(self, states) -> jax.Array:
        """log q(visible part of z) for partial states (B, L) -> (B,) (-inf if impossible; 0 for all-mask)."""
        return self.denoiser().log_marginal(jnp.asarray(check_states(states, self.vocab_size, self.length)))

    def log_prob(self, tokens) -> jax.Array:
        """Exact log q(x) for clean sequences (B, L) (or (L,)) -> (B,); -inf outside the support."""
        require_x64("SparseMarkovChain.log_prob")
        x = jnp.asarray(check_sequences(tokens, self.vocab_size, self.length))
        return _sparse_log_prob(
            jnp.asarray(self.init), jnp.asarray(self.idx), jnp.asarray(self.prob), self.eps, jnp.asarray(self.nu), x
        )

    def entropy(self) -> float:
        """Exact H(q) = H(init) + sum_{i < L-1} (init T^i) . h, h_a = H(T[a, :]) (nats), O(L V K)."""
        phi = _xlogx
        nu = self.teleport
        tele = phi(self.eps * nu)  # (V,)
        rowp = (1 - self.eps) * self.prob + self.eps * nu[self.idx] * (self.prob > 0)
        h = tele.sum() + np.sum((phi(rowp) - tele[self.idx]) * (self.prob > 0), axis=1)  # (V,)
        m = self.denoiser_tables()[0]  # (L, V): init T^i
        return float(phi(self.init).sum() + np.sum(m[:-1] @ h))

    def denoiser_tables(self):
        """(init T^i for i < L (L, V), column layout (cidx, cw)) in numpy."""
        cached = self.__dict__.get("_tables")
        if cached is None:
            check_size(
                8 * self.length * self.vocab_size,
                f"The table init T^i (i < L) for V = {self.vocab_size}, L = {self.length}",
                None,
                "Use a shorter length",
            )
            cidx, cw = transpose_rows(self.idx, self.prob)
            m = np.empty((self.length, self.vocab_size))
            m[0] = self.init
            for i in range(1, self.length):
                m[i] = _row_times(m[i - 1], cidx, cw, self.eps, self.nu)
            cached = (m, cidx, cw)
            object.__setattr__(self, "_tables", cached)
        return cached

    def sample(self, key, num: int) -> jax.Array:
        """``num`` exact samples (num, L) int32 (ancestral, float64 inverse CDF; teleport drawn as a mixture)."""
        require_x64("SparseMarkovChain.sample")
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}.")
        return _sparse_sample(
            key,
            jnp.asarray(self.init),
            jnp.asarray(self.idx),
            jnp.asarray(self.prob),
            self.eps,
            jnp.asarray(self.nu),
            int(num),
            self.length,
        )


def _xlogx(p):
    p = np.asarray(p, np.float64)
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


@jax.jit
def _sparse_log_prob(init, idx, prob, eps, nu, x):
    a, b = x[:, :-1], x[:, 1:]  # (B, L-1)
    p = jnp.sum(jnp.where(idx[a] == b[..., None], prob[a], 0.0), axis=-1)  # (B, L-1): P[a, b]
    t = (1 - eps) * p + eps * nu[b]
    return safe_log(init[x[:, 0]]) + jnp.sum(safe_log(t), axis=1)


def _inverse_cdf(w, u):
    cdf = jnp.cumsum(w, axis=-1)
    return jnp.minimum(jnp.sum(cdf <= u[..., None] * cdf[..., -1:], axis=-1), w.shape[-1] - 1)


@partial(jax.jit, static_argnums=(6, 7))
def _sparse_sample(key, init, idx, prob, eps, nu, num, L):
    k0, k1 = jax.random.split(key)
    x0 = _inverse_cdf(init[None, :], jax.random.uniform(k0, (num,), jnp.float64))

    def step(x, i):
        kt, kr, kn = jax.random.split(jax.random.fold_in(k1, i), 3)
        tele = jax.random.uniform(kt, (num,), jnp.float64) < eps
        row = idx[x, _inverse_cdf(prob[x], jax.random.uniform(kr, (num,), jnp.float64))]
        jump = _inverse_cdf(nu[None, :], jax.random.uniform(kn, (num,), jnp.float64))
        nxt = jnp.where(tele, jump, row).astype(jnp.int32)
        return nxt, nxt

    _, rest = jax.lax.scan(step, x0.astype(jnp.int32), jnp.arange(1, L))
    return jnp.concatenate([x0[:, None].astype(jnp.int32), rest.T], axis=1)


def random_sparse_chain(
    key, vocab_size: int, row_nnz: int, length: int, eps: float = 0.0, concentration: float = 0.5
) -> SparseMarkovChain:
    """Random top-K chain: each row puts Dirichlet(concentration) mass on ``row_nnz`` distinct random tokens;
    init and nu are Dirichlet(1) over V (as in Tang et al.'s synthetic checks: random sparse rows + teleport)."""
    require_x64("random_sparse_chain")
    V, K = int(vocab_size), int(row_nnz)
    if not 1 <= K <= V:
        raise ValueError(f"row_nnz must be in 1..V = {V}, got {row_nnz!r}.")
    rng = numpy_rng(key)
    idx = np.argsort(rng.random((V, V)), axis=1)[:, :K] if V <= 1024 else _distinct(rng, V, K)
    prob = rng.dirichlet(np.full(K, float(concentration)), size=V)
    init = rng.dirichlet(np.ones(V))
    nu = rng.dirichlet(np.ones(V))
    return SparseMarkovChain(init, idx.astype(np.int32), prob, length, eps, nu)


def _distinct(rng, V, K):
    out = np.empty((V, K), np.int64)
    for u in range(V):
        out[u] = rng.choice(V, K, replace=False)
    return out


# ---- the denoiser -------------------------------------------------------------------------------------------
@register_dataclass(data_fields=("idx", "prob", "cidx", "cw", "head", "nu", "eps", "check"))
@dataclass(frozen=True, eq=False)
class SparseChainDenoiser:
    """Exact conditionals of a :class:`SparseMarkovChain` by sparse forward–backward sweeps (module docstring).

    ``idx``/``prob`` (V, K) row layout of P; ``cidx``/``cw`` (V, K_c) column layout; ``head`` (L, V) init T^i;
    ``nu`` (V,), ``eps`` () the teleport; ``check`` () bool: False when every partial state has q > 0 (eps > 0,
    nu > 0 and init > 0), so the runs ending in a visible token need no products for log q(visible).
    Chains of equal shapes share one compilation.
    """

    vocab_size: int
    length: int
    idx: jax.Array
    prob: jax.Array
    cidx: jax.Array
    cw: jax.Array
    head: jax.Array
    nu: jax.Array
    eps: jax.Array
    check: jax.Array

    def marginals(self, states) -> jax.Array:
        """(B, L) partial states -> (B, L, V) exact conditionals (one-hot at visible positions)."""
        states = jnp.asarray(states, jnp.int32)
        B, L = states.shape
        pos = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        return _sparse_at_jit(self, states, pos, self.check)[0]

    def marginals_at(self, states, positions) -> jax.Array:
        """Conditionals at ``positions`` (B, K) only -> (B, K, V); cost: see the module docstring."""
        states, positions = jnp.asarray(states, jnp.int32), jnp.asarray(positions, jnp.int32)
        return _sparse_at_jit(self, states, positions, self.check)[0]

    def log_marginal(self, states) -> jax.Array:
        """log q(visible part of z) for partial states (B, L) -> (B,); -inf if impossible."""
        return _sparse_logq_jit(self, jnp.asarray(states, jnp.int32))


def sparse_chain_denoiser(lang: SparseMarkovChain) -> SparseChainDenoiser:
    m, cidx, cw = lang.denoiser_tables()
    positive = bool(lang.eps > 0 and np.all(lang.teleport > 0) and np.all(lang.init > 0))
    return SparseChainDenoiser(
        lang.vocab_size,
        lang.length,
        jnp.asarray(lang.idx, jnp.int32),
        as_f64(lang.prob),
        jnp.asarray(cidx, jnp.int32),
        as_f64(cw),
        as_f64(m),
        as_f64(lang.nu),
        as_f64(lang.eps),
        jnp.asarray(not positive),
    )


#: Row counts of the compacted products (one ``lax.switch`` branch each, those below B, then B): a step's
#: product costs at most ~1.5x (at most 4 rows more than) what its active rows need.
WIDTHS = (0, 1, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def _widths(B: int) -> tuple:
    """Static row counts for the compacted products: :data:`WIDTHS` below B, and B."""
    return tuple(w for w in WIDTHS if w < B) + (B,)


def _ahead(vis, target):
    """For each step t (scan order, axis 0 of (T, B) arrays): is there a target at or after t before the next
    visible token (a masked target), or is the next visible token itself a target?"""
    T, B = vis.shape
    t = jnp.arange(T, dtype=jnp.int32)[:, None]
    big = jnp.int32(T)
    nv = jax.lax.associative_scan(jnp.minimum, jnp.where(vis, t, big), axis=0, reverse=True)  # next visible >= t
    nt = jax.lax.associative_scan(jnp.minimum, jnp.where(target, t, big), axis=0, reverse=True)  # next target >= t
    nvt = jax.lax.associative_scan(jnp.minimum, jnp.where(vis & target, t, big), axis=0, reverse=True)
    return (nt < nv) | ((nv < big) & (nvt == nv))


def _write_rows(out, s, M, ok, combine: bool):
    """For every row b with s[b] != scratch (the last slot): out[b, s[b]] = M[b] (``combine`` False), or the
    normalised out[b, s[b]] * M[b] (``combine`` True; 1/V where ``ok[b]`` is False or the product is 0).

    One dynamic_update_slice per written row, in a loop over the rows that write only: in place (XLA's scatter
    copies the whole buffer inside a loop on CPU) and no work for the rows that write nothing.
    """
    B, S, V = out.shape
    write = s < S - 1
    rows = jnp.nonzero(write, size=B, fill_value=0)[0].astype(jnp.int32)

    def body(k, o):
        b = rows[k]
        at = (b, s[b].astype(jnp.int32), jnp.int32(0))
        val = M[b][None, None, :]
        if combine:
            num = jax.lax.dynamic_slice(o, at, (1, 1, V)) * val
            den = jnp.sum(num)
            good = ok[b] & (den > 0)
            val = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0 / V)
        return jax.lax.dynamic_update_slice(o, val, at)

    return jax.lax.fori_loop(0, jnp.sum(write).astype(jnp.int32), body, out)


def _sweep(tok, vis, target, slot, out, ok, tables, eps, V, forward, check):
    """One sweep in scan order over axis 0 of (T, B) arrays; see the module docstring.

    ``tables`` = (sidx, sw, pidx, pw, head, w, u): start layout (the row of T after a visible token is
    sidx/sw plus eps w[a] u), product layout (M -> sum_c pw[v, c] M[pidx[v, c]] plus eps (w . M) u) and the
    message before any visible token (head[min(t, H-1)]). Forward: writes f into ``out`` at ``slot`` and
    accumulates log q(visible) at target visible steps; backward: combines ``out`` with g.
    """
    sidx, sw, pidx, pw, head, w, u = tables
    T, B = tok.shape
    H = head.shape[0]
    rows = jnp.arange(B)
    widths = _widths(B)
    Kp = out.shape[1]

    def product(M, act):
        def branch(W, M):
            if W == 0:
                return M
            sel = jnp.nonzero(act, size=W, fill_value=B)[0]  # (W,)
            Xc = M[jnp.minimum(sel, B - 1)]  # (W, V)
            Xt = Xc.T  # (V, W)
            # one gathered column of the layout at a time: XLA fuses gather and multiply-add (materialising
            # the (V, C, W) gather first is ~8x slower on CPU)
            acc = jax.lax.fori_loop(
                0, pidx.shape[1], lambda c, acc: acc + pw[:, c, None] * Xt[pidx[:, c]], jnp.zeros_like(Xt), unroll=4
            )  # (V, W)
            res = (1 - eps) * acc.T + eps * (Xc @ w)[:, None] * u[None, :]  # (W, V)
            if not forward:
                s = jnp.sum(res, axis=1, keepdims=True)
                res = res / jnp.where(s > 0, s, 1.0)
            return M.at[sel].set(res, mode="drop")

        n = jnp.sum(act)
        k = jnp.searchsorted(jnp.asarray(widths, jnp.int32), n.astype(jnp.int32))
        return jax.lax.switch(k, [partial(branch, W) for W in widths], M)

    def step(carry, xs):
        M, pvis, ptok, seen, logq, out = carry
        t, v_t, x_t, tgt, s_t = xs
        ahead_t = tgt  # precomputed "needed" flag at this step
        # message at t: after a visible token, before any, or one product deeper in a run
        start = jnp.zeros((B, V)).at[rows[:, None], sidx[ptok]].add((1 - eps) * sw[ptok])
        start = start + eps * w[ptok][:, None] * u[None, :]
        act = ~pvis & seen & ahead_t
        Mp = product(M, act)
        hd = head[jnp.minimum(t, H - 1)]
        M = jnp.where(pvis[:, None], start, jnp.where(seen[:, None], Mp, hd[None, :]))
        logq = logq + jnp.where(v_t & check, safe_log(M[rows, x_t]), 0.0)
        s = jnp.where(v_t, Kp - 1, s_t)  # only masked asked positions are written (slot Kp - 1: scratch)
        out = _write_rows(out, s, M, ok, not forward)
        return (M, v_t, x_t, seen | v_t, logq, out), None

    M0 = jnp.zeros((B, V))
    f = jnp.zeros((B,), bool)
    carry0 = (M0, f, jnp.zeros((B,), jnp.int32), f, jnp.zeros((B,)), out)
    xs = (jnp.arange(T, dtype=jnp.int32), vis, tok, target, slot)
    (M, _, _, _, logq, out), _ = jax.lax.scan(step, carry0, xs)
    return out, logq


def _sparse_at(d: SparseChainDenoiser, states, positions, check):
    """(marginals at positions (B, K, V), log q(visible) (B,) — zeros when ``check`` (traced bool) is False)."""
    V, L = d.vocab_size, d.length
    states = states.astype(jnp.int32)
    B = states.shape[0]
    p = positions.astype(jnp.int32)
    Kp = p.shape[1]
    vis = states != V
    tok = jnp.where(vis, states, 0)
    rows = jnp.arange(B)[:, None]
    ks = jnp.broadcast_to(jnp.arange(Kp, dtype=jnp.int32), p.shape)
    slot_of = jnp.full((B, L), Kp, jnp.int32).at[rows, p].min(ks)  # (B, L): first slot asking for each position
    # out has Kp + 1 slots: the last one is scratch for the steps that write nothing
    asked = (slot_of < Kp) & ~vis
    target_f = asked | (vis & check)
    visT, tokT, slotT = vis.T, tok.T, slot_of.T  # (L, B)
    ones = jnp.ones((V,))
    f_tables = (d.idx, d.prob, d.cidx, d.cw, d.head, ones, d.nu)
    b_tables = (d.cidx, d.cw, d.idx, d.prob, ones[None, :], d.nu, ones)
    need_f = _ahead(visT, target_f.T)
    out = jnp.zeros((B, Kp + 1, V))
    okf = jnp.ones((B,), bool)
    out, logq = _sweep(tokT, visT, need_f, slotT, out, okf, f_tables, d.eps, V, True, check)
    ok = logq > -jnp.inf
    need_b = _ahead(visT[::-1], asked.T[::-1])
    out, _ = _sweep(tokT[::-1], visT[::-1], need_b, slotT[::-1], out, ok, b_tables, d.eps, V, False, jnp.bool_(False))
    res = out[rows, slot_of[rows, p]]  # (B, K, V): duplicates read their first slot
    onehot = jax.nn.one_hot(jnp.take_along_axis(tok, p, axis=1), V, dtype=jnp.float64)
    res = jnp.where(jnp.take_along_axis(vis, p, axis=1)[..., None], onehot, res)
    return res, logq


def _sparse_logq(d: SparseChainDenoiser, states):
    """log q(visible part) (B,): the forward sweep alone, through every run that ends in a visible token."""
    V = d.vocab_size
    B, L = states.shape
    vis = states != V
    tok = jnp.where(vis, states, 0)
    f_tables = (d.idx, d.prob, d.cidx, d.cw, d.head, jnp.ones((V,)), d.nu)
    need = _ahead(vis.T, vis.T)
    scratch = jnp.zeros((L, B), jnp.int32)  # every step writes to the one scratch slot
    out = jnp.zeros((B, 1, V))
    _, logq = _sweep(tok.T, vis.T, need, scratch, out, jnp.ones((B,), bool), f_tables, d.eps, V, True, jnp.bool_(True))
    return logq


_sparse_at_jit = jax.jit(_sparse_at)
_sparse_logq_jit = jax.jit(_sparse_logq)

__all__ = [
    "SparseMarkovChain",
    "SparseChainDenoiser",
    "random_sparse_chain",
    "sparse_chain_denoiser",
    "canonical_rows",
    "transpose_rows",
]
