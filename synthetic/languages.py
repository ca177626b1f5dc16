"""Synthetic languages: random tables, Markov chains, n-grams, HMMs.

Structured languages are small frozen dataclasses holding their parameters and length. Each follows
the Language protocol (:mod:`theory.language`) at any L, without enumerating V**L:
``denoiser()`` (exact conditionals: :mod:`synthetic.chain_oracle` for Markov chains, scaled
forward–backward, :mod:`synthetic.forward_backward`, for n-grams and HMMs), ``log_prob``, ``entropy``,
``sample`` (:mod:`synthetic.chain_exact`), plus ``with_length``, ``entropy_rate``, ``log_marginal``,
``conditionals`` (validated) and ``joint()`` (enumeration into a :class:`theory.joint.Joint`, small L only).

Conventions
-----------
* ``MarkovChain(init (V,), trans (V, V), length)``: q(x) = init[x_0] prod_i trans[x_{i-1}, x_i].
* ``NGram(init (V**(n-1),), cond (V,)*n, length)``: the first n-1 tokens are drawn jointly from
  ``init`` (row-major flat index), then q(x_i = b | x_{i-n+1..i-1}) = cond[x_{i-n+1}, ..., x_{i-1}, b].
  Requires length >= n.
* ``HMM(init (H,), trans (H, H), emit (H, V), length)``: hidden chain h with q(h_0) = init,
  q(h_i | h_{i-1}) = trans, tokens x_i ~ emit[h_i].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from theory.joint import Joint, joint_bytes
from theory.states import check_sequences, check_states
from theory.validation import SCALABLE_HINT, check_distribution, check_size, check_vocab_length, require_x64

from . import chain_exact, chain_oracle, forward_backward


def _stochastic(mat, name, axis_len=None) -> np.ndarray:
    arr = check_distribution(mat, name, axis=-1)
    return arr


def _check_joint_size(V, L, max_bytes):
    check_size(joint_bytes(V, L), f"Enumerating this language over V**L = {V}**{L}", max_bytes, SCALABLE_HINT)


class _ChainLanguage:
    """Shared Language-protocol members of the chain languages (denoiser cache, validation, sampling)."""

    if TYPE_CHECKING:  # provided by the dataclasses below

        @property
        def vocab_size(self) -> int: ...

        @property
        def length(self) -> int: ...

    def _build_denoiser(self):
        raise NotImplementedError

    def _log_marginal(self, states):
        raise NotImplementedError

    def _sample(self, key, num: int):
        raise NotImplementedError

    def denoiser(self):
        """The exact conditionals at this length (built once per language object)."""
        require_x64(f"{type(self).__name__}.denoiser")
        d = self.__dict__.get("_denoiser")
        if d is None:
            d = self._build_denoiser()
            object.__setattr__(self, "_denoiser", d)
        return d

    def conditionals(self, states) -> jax.Array:
        """Validated exact conditionals q(x_i = v | visible part of z): partial states (B, L) -> (B, L, V)."""
        return self.denoiser().marginals(jnp.asarray(check_states(states, self.vocab_size, self.length)))

    def log_marginal(self, states) -> jax.Array:
        """log q(visible part of z) for partial states (B, L) -> (B,) (-inf if impossible; 0 for all-mask)."""
        return self._log_marginal(jnp.asarray(check_states(states, self.vocab_size, self.length)))

    def sample(self, key, num: int) -> jax.Array:
        """``num`` exact samples (num, L) int32 from q (ancestral sampling, float64 inverse CDF)."""
        require_x64(f"{type(self).__name__}.sample")
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}.")
        return self._sample(key, int(num))

    def _tokens(self, tokens) -> jax.Array:
        require_x64(f"{type(self).__name__}.log_prob")
        return jnp.asarray(check_sequences(tokens, self.vocab_size, self.length))


@dataclass(frozen=True, eq=False)
class MarkovChain(_ChainLanguage):
    """First-order Markov chain over V tokens. Shapes: init (V,), trans (V, V) row-stochastic."""

    init: np.ndarray
    trans: np.ndarray
    length: int

    def __post_init__(self):
        init = _stochastic(self.init, "init")
        trans = _stochastic(self.trans, "trans (rows)")
        if init.ndim != 1 or trans.shape != (init.shape[0], init.shape[0]):
            raise ValueError(f"MarkovChain needs init (V,) and trans (V, V); got {init.shape} and {trans.shape}.")
        check_vocab_length(int(init.shape[0]), self.length)
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "trans", trans)
        object.__setattr__(self, "length", int(self.length))

    @property
    def vocab_size(self) -> int:
        return int(self.init.shape[0])

    def with_length(self, length: int) -> MarkovChain:
        return MarkovChain(self.init, self.trans, length)

    def _build_denoiser(self):
        return chain_oracle.markov_denoiser(self)

    def _log_marginal(self, states):
        return chain_oracle.log_marginal(self.denoiser(), states)

    def _sample(self, key, num):
        return chain_exact.sample_markov(self, key, num)

    def log_prob(self, tokens) -> jax.Array:
        """Exact log q(x) for clean sequences (B, L) (or (L,)) -> (B,); -inf outside the support."""
        return chain_exact.markov_log_prob(jnp.asarray(self.init), jnp.asarray(self.trans), self._tokens(tokens))

    def entropy(self) -> float:
        """Exact H(q) in nats (closed form, any L)."""
        return chain_exact.markov_entropy(self)

    def entropy_rate(self) -> float:
        """lim H(q_L) / L in nats per token (Cesàro-stationary law reached from init)."""
        return chain_exact.markov_entropy_rate(self)

    def joint(self, max_bytes: float | None = None) -> Joint:
        V, L = self.vocab_size, self.length
        _check_joint_size(V, L, max_bytes)
        t = self.init.reshape(1, V)
        for _ in range(1, L):
            t = (t[:, :, None] * self.trans[None]).reshape(-1, V)  # (V**i, V) -> (V**(i+1), V)
        return Joint(t.reshape(-1), V, L, max_bytes=max_bytes)


@dataclass(frozen=True, eq=False)
class NGram(_ChainLanguage):
    """n-gram language (order n >= 2). Shapes: init (V**(n-1),), cond (V,)*n stochastic in the last axis."""

    init: np.ndarray
    cond: np.ndarray
    length: int

    def __post_init__(self):
        cond = _stochastic(self.cond, "cond (last axis)")
        n = cond.ndim
        if n < 2 or len(set(cond.shape)) != 1:
            raise ValueError(f"NGram cond must have shape (V,)*n with n >= 2, got {cond.shape}.")
        V = cond.shape[0]
        init = _stochastic(np.asarray(self.init).reshape(-1), "init")
        if init.shape != (V ** (n - 1),):
            raise ValueError(f"NGram init must have V**(n-1) = {V ** (n - 1)} entries, got {init.shape}.")
        check_vocab_length(V, self.length)
        if self.length < n:
            raise ValueError(f"An order-{n} NGram needs length >= {n}, got {self.length}.")
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "cond", cond)
        object.__setattr__(self, "length", int(self.length))

    @property
    def vocab_size(self) -> int:
        return int(self.cond.shape[0])

    @property
    def order(self) -> int:
        return int(self.cond.ndim)

    def with_length(self, length: int) -> NGram:
        return NGram(self.init, self.cond, length)

    def _build_denoiser(self):
        return forward_backward.ngram_denoiser(self)

    def _log_marginal(self, states):
        return self.denoiser().log_marginal(states)

    def _sample(self, key, num):
        return chain_exact.sample_ngram(self, key, num)

    def log_prob(self, tokens) -> jax.Array:
        """Exact log q(x) for clean sequences (B, L) (or (L,)) -> (B,); -inf outside the support."""
        return chain_exact.ngram_log_prob(jnp.asarray(self.init), jnp.asarray(self.cond), self._tokens(tokens))

    def entropy(self) -> float:
        """Exact H(q) in nats (closed form on (n-1)-tuples, any L)."""
        return chain_exact.ngram_entropy(self)

    def entropy_rate(self) -> float:
        """lim H(q_L) / L in nats per token (the tuple chain's Cesàro-stationary law)."""
        return chain_exact.ngram_entropy_rate(self)

    def joint(self, max_bytes: float | None = None) -> Joint:
        V, L, n = self.vocab_size, self.length, self.order
        _check_joint_size(V, L, max_bytes)
        ctx = V ** (n - 1)
        cond = self.cond.reshape(ctx, V)
        t = self.init.reshape(1, ctx)  # (prefix, last n-1 tokens)
        for _ in range(n - 1, L):
            t = t[:, :, None] * cond[None]  # (M, ctx, V)
            t = t.reshape(-1, ctx)  # the new last n-1 tokens are the trailing digits
        return Joint(t.reshape(-1), V, L, max_bytes=max_bytes)


@dataclass(frozen=True, eq=False)
class HMM(_ChainLanguage):
    """Hidden Markov model. Shapes: init (H,), trans (H, H), emit (H, V), all row-stochastic."""

    init: np.ndarray
    trans: np.ndarray
    emit: np.ndarray
    length: int

    def __post_init__(self):
        init = _stochastic(self.init, "init")
        trans = _stochastic(self.trans, "trans (rows)")
        emit = _stochastic(self.emit, "emit (rows)")
        H = init.shape[0]
        if init.ndim != 1 or trans.shape != (H, H) or emit.ndim != 2 or emit.shape[0] != H:
            raise ValueError(
                f"HMM needs init (H,), trans (H, H), emit (H, V); got {init.shape}, {trans.shape}, {emit.shape}."
            )
        check_vocab_length(int(emit.shape[1]), self.length)
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "trans", trans)
        object.__setattr__(self, "emit", emit)
        object.__setattr__(self, "length", int(self.length))

    @property
    def vocab_size(self) -> int:
        return int(self.emit.shape[1])

    @property
    def num_hidden(self) -> int:
        return int(self.init.shape[0])

    def with_length(self, length: int) -> HMM:
        return HMM(self.init, self.trans, self.emit, length)

    def _build_denoiser(self):
        return forward_backward.hmm_denoiser(self)

    def _log_marginal(self, states):
        return self.denoiser().log_marginal(states)

    def _sample(self, key, num):
        return chain_exact.sample_hmm(self, key, num)

    def log_prob(self, tokens) -> jax.Array:
        """Exact log q(x) by the forward pass, (B, L) -> (B,); -inf outside the support."""
        return self.denoiser().log_marginal(self._tokens(tokens))

    def entropy(self) -> float:
        """Exact H(q) in nats by enumeration (V**L <= chain_exact.HMM_ENUM_MAX); no closed form exists."""
        return chain_exact.hmm_entropy(self)

    def entropy_rate(self) -> float:
        """No closed form for an HMM (Blackwell 1957): raises ValueError with the Monte-Carlo alternative."""
        raise ValueError(
            "The entropy rate of an HMM has no closed form (Blackwell 1957). Estimate it with "
            "theory.language.entropy_mc(lang.with_length(L_large), key, num) divided by L_large."
        )

    def joint(self, max_bytes: float | None = None) -> Joint:
        V, L, H = self.vocab_size, self.length, self.num_hidden
        _check_joint_size(V * H, L, max_bytes)
        a = self.init[None, :] * self.emit.T  # (V, H): q(x_0, h_0)
        for _ in range(1, L):
            a = a @ self.trans  # (M, H): q(x_<=i-1, h_i)
            a = (a[:, None, :] * self.emit.T[None]).reshape(-1, H)  # (M*V, H)
        return Joint(a.sum(axis=1), V, L, max_bytes=max_bytes)


# ---- random constructors ------------------------------------------------------------------------
def numpy_rng(key) -> np.random.Generator:
    """A numpy Generator seeded from a JAX PRNG key (raw uint32 key or typed key).

    Random languages draw their tables with numpy: ``jax.random.dirichlet`` compiles for 1-3 s per new
    shape, which dominated the property tests. Same key, same table.
    """
    data = jax.random.key_data(key) if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, dtype=np.uint32).reshape(-1).tolist())


def _dirichlet(key, conc: float, shape) -> np.ndarray:
    """Rows of shape ``shape`` (last axis = categories) ~ Dirichlet(conc * 1), float64 numpy."""
    require_x64("random language construction")
    if not conc > 0:
        raise ValueError(f"concentration must be > 0, got {conc}.")
    shape = tuple(int(s) for s in shape)
    out = numpy_rng(key).dirichlet(np.full(shape[-1], float(conc)), size=shape[:-1])
    return np.asarray(out, dtype=np.float64).reshape(shape)


def dirichlet(key, vocab_size: int, length: int, concentration: float = 1.0, max_bytes=None) -> Joint:
    """A random joint table q ~ Dirichlet(concentration * 1) over V**L.

    Small concentration gives peaked tables (strong dependence), large gives near-uniform ones.
    """
    V, L = check_vocab_length(vocab_size, length)
    _check_joint_size(V, L, max_bytes)
    p = _dirichlet(key, concentration, (V**L,))
    p = np.maximum(p, 0.0)
    return Joint(p / p.sum(), V, L, max_bytes=max_bytes)


def random_markov(key, vocab_size: int, length: int, concentration: float = 1.0) -> MarkovChain:
    """Markov chain with init and transition rows drawn from Dirichlet(concentration)."""
    V, L = check_vocab_length(vocab_size, length)
    k1, k2 = jax.random.split(key)
    return MarkovChain(_dirichlet(k1, concentration, (V,)), _dirichlet(k2, concentration, (V, V)), L)


def random_ngram(key, vocab_size: int, order: int, length: int, concentration: float = 1.0) -> NGram:
    """n-gram with init over the first n-1 tokens and every context's next-token law ~ Dirichlet(concentration)."""
    V, L = check_vocab_length(vocab_size, length)
    if order < 2:
        raise ValueError(f"order must be >= 2, got {order}.")
    k1, k2 = jax.random.split(key)
    return NGram(_dirichlet(k1, concentration, (V ** (order - 1),)), _dirichlet(k2, concentration, (V,) * order), L)


def random_hmm(key, num_hidden: int, vocab_size: int, length: int, concentration: float = 1.0) -> HMM:
    """HMM with every distribution ~ Dirichlet(concentration)."""
    V, L = check_vocab_length(vocab_size, length)
    if num_hidden < 1:
        raise ValueError(f"num_hidden must be >= 1, got {num_hidden}.")
    k1, k2, k3 = jax.random.split(key, 3)
    return HMM(
        _dirichlet(k1, concentration, (num_hidden,)),
        _dirichlet(k2, concentration, (num_hidden, num_hidden)),
        _dirichlet(k3, concentration, (num_hidden, vocab_size)),
        L,
    )


# --- issue 4: Feng2025 worst cases ----------------------------------------------------------------
# (the worst-case languages themselves live in synthetic/worst_case.py; this is the full-support n-gram
#  family with a controlled entropy rate used for Feng2025's TER experiments)
def _row_with_entropy(logits: np.ndarray, target: float, tol: float = 1e-13) -> np.ndarray:
    """softmax(beta * logits) with beta >= 0 chosen by bisection so that its entropy (nats) is ``target``.

    H(softmax(beta g)) decreases monotonically from log V (beta = 0) since dH/dbeta = -beta Var_p(g) <= 0.
    """

    def row(beta):
        z = beta * (logits - logits.max())
        p = np.exp(z)
        return p / p.sum()

    def ent(p):
        return float(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)))

    lo, hi = 0.0, 1.0
    while ent(row(hi)) > target:
        hi *= 2.0
        if hi > 1e6:
            raise ValueError(f"cannot reach entropy {target} with these logits (ties at the maximum?).")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if ent(row(mid)) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol * max(1.0, hi):
            break
    return row(0.5 * (lo + hi))


def stationary_init(cond: np.ndarray) -> np.ndarray:
    """Stationary law of the (n-1)-token context chain of an n-gram ``cond`` (V,)*n, flat (V**(n-1),).

    Needs an irreducible chain (true for full-support tables); solves pi T = pi, sum pi = 1 in float64.
    """
    cond = np.asarray(cond, dtype=np.float64)
    n, V = cond.ndim, cond.shape[0]
    C = V ** (n - 1)
    T = np.zeros((C, C))
    c2 = cond.reshape(C, V)
    for ctx in range(C):
        for b in range(V):
            T[ctx, (ctx * V) % C + b] += c2[ctx, b]  # drop the oldest token, append b
    A = np.vstack([T.T - np.eye(C), np.ones((1, C))])
    rhs = np.zeros(C + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(A, rhs, rcond=None)[0]
    if np.any(pi < -1e-10) or np.max(np.abs(pi @ T - pi)) > 1e-10:
        raise ValueError("the context chain has no unique stationary law (is the table irreducible?).")
    pi = np.maximum(pi, 0.0)
    return pi / pi.sum()


def entropy_ngram(
    key, vocab_size: int, order: int, length: int, entropy_rate: float, init: str = "stationary"
) -> NGram:
    """Random full-support n-gram whose every next-token law has entropy exactly ``entropy_rate`` nats.

    Each context's law is softmax(beta * g) with g ~ N(0, I_V) (from ``key``) and beta tuned per row by
    bisection (:func:`_row_with_entropy`), so every entry is > 0 (log q finite) and the entropy rate is
    ``entropy_rate`` exactly: H(q) = H(init) + (L - n + 1) * entropy_rate. ``init`` = "stationary" (the
    context chain's stationary law: q is shift-invariant, the natural choice for L-scaling) or "uniform".
    Requires 0 < entropy_rate < log V.
    """
    require_x64("random language construction")
    V, L = check_vocab_length(vocab_size, length)
    if order < 2:
        raise ValueError(f"order must be >= 2, got {order}.")
    if not 0 < entropy_rate < np.log(V):
        raise ValueError(f"entropy_rate must be in (0, log V) = (0, {np.log(V):.4f}) nats, got {entropy_rate}.")
    if init not in ("stationary", "uniform"):
        raise ValueError(f"init must be 'stationary' or 'uniform', got {init!r}.")
    g = numpy_rng(key).standard_normal((V ** (order - 1), V))
    cond = np.stack([_row_with_entropy(row, float(entropy_rate)) for row in g]).reshape((V,) * order)
    ini = stationary_init(cond) if init == "stationary" else np.full(V ** (order - 1), 1.0 / V ** (order - 1))
    return NGram(ini, cond, L)
