"""Jia2025: the exact variance of the MDM training loss and of its gradient, split into A + B + C.

The loss (Jia2025's form; the authors' code, LLaDA-style)
---------------------------------------------------------
For a clean sequence x ~ q (L tokens), a time t ~ U[0, 1], the masking rate s = eps + (1 - eps) t (the
authors' code clips the rate: ``p_mask = (1 - eps) t + eps``; eps = 0 is the plain linear schedule) and a
mask m ~ Bernoulli(s)^L,

    loss(x, t, m) = S(x, m) / s,        S(x, m) = (1/L) sum_{i in m} -log p_theta(x_i | x with m masked).

At eps = 0 this is theory.elbo's loss with the linear schedule (weight -alpha'/(1 - alpha) = 1/t); its mean
is ELBO / L. At eps > 0 the mean is (1/(1 - eps)) int_eps^1 E[S/s | s] ds: the ELBO without the rates
below eps, rescaled (what the authors train).

The decomposition (law of total variance; Jia2025, Sec. 3, as recalled in papers.md)
---------------------------------------------------------------------------------------
    Var loss = E_{x,t} Var_m(loss | x, t)      (A, masking pattern)
             + E_x Var_t(E_m[loss | x, t])       (B, masking rate)
             + Var_x(E_{t,m}[loss | x])          (C, data).
An autoregressive loss has no t and no mask: A = B = 0 (:func:`ar_decomposition`). The same split holds for
each coordinate of the gradient with respect to the denoiser's parameters; we report the trace of the
covariance (sum over coordinates).

How it is computed exactly
--------------------------
Index the 2^L masks m (position 0 most significant). Every estimator we study (theory/estimators.py) is,
given (x, t), a random linear combination of the vectors G_x = (G(x, m))_m, where G(x, m) = S(x, m) (the
loss) or its gradient, plus at most a data-independent shift; the mask laws never look at x. So all
moments need only two M x M matrices (M = 2^L):

    gram      = E_x[G_x G_x^T]              (inner products of gradients for the gradient case),
    mean_gram = (E_x G_x)(E_x G_x)^T.

With a(t) = E[coefficients | t] (the same for every conditionally unbiased estimator) and
m2(t) = E[est^2 | t] = tr(Pi(t) gram) (Pi: second moment of the coefficients):

    beta = int a dt,  T = int m2 / p dt,  Bp = int a^T gram a / p dt,  Cp = beta^T gram beta,
    A = T - Bp,  B = Bp - Cp,  C = Cp - beta^T mean_gram beta,  total = T - beta^T mean_gram beta,

where p(t) is the estimator's t-density (1 for U[0, 1]; P-POTS draws t ~ p and weights by 1/p). The
t-integrals use composite Gauss-Legendre quadrature in u = sqrt(t), with panels graded geometrically
toward u = 0 at the scale sqrt(eps) and breaking at every kink (s = 1/2 for MIRROR, proposal bins, strata);
:func:`standard_closed_form` gives the standard estimator by incomplete beta functions instead, and the
tests match the two to 1e-12.

The unclipped 1/t weight has infinite variance
----------------------------------------------
E[loss^2 | x, s] = sum_k s^(k-2) (1-s)^(L-k) sum_{|m|=k} S(x,m)^2: the k = 1 term is c_1(x) / s with
c_1(x) = sum_i S(x, {i})^2 = sum_i (log p(x_i | x_-i) / L)^2. So with t ~ U[0, 1] and eps = 0 the second
moment is infinite whenever c_1 = E_x c_1(x) > 0 (any denoiser short of a deterministic one on the
support), while the mean and the B and C terms stay finite (E_m[loss | x, s] is a polynomial in s). With the
clip, A and the total grow like c_1 log(1/eps) (:func:`divergence_coefficient`). Which estimators stay
finite at eps = 0 is decided by lim_{s -> 0} s E[est^2 | s] (``mask_law.singular``) and the t-law near 0:
U[0, 1], stratified t and per-bin control variates diverge (the coefficient is c_1, c_1 / 2 for MIRROR);
P-POTS with a density ~ t^(-1/2) at 0 and token-level importance sampling with a rate bounded away from 0
stay finite (theory/estimators.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy import special

from .denoiser import check_denoiser
from .joint import Joint
from .states import all_sequences
from .validation import check_size, require_x64

#: Gauss-Legendre nodes per quadrature panel (panels are short: polynomial pieces are integrated exactly).
NODES_PER_PANEL = 20
#: The rate at which lim_{s -> 0} s * E[est^2 | s] is evaluated (s^2 = 1e-200 is still a normal float64).
S_TINY = 1e-100


# ================================ input checks ========================================================
def check_eps(eps) -> float:
    """The rate clip eps must be a float in [0, 1)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps must be a float in [0, 1), got {type(eps).__name__}.")
    eps = float(eps)
    if not (0.0 <= eps < 1.0) or not math.isfinite(eps):
        raise ValueError(
            f"eps must lie in [0, 1) (the masking rate is s = eps + (1 - eps) t, t ~ U[0, 1]); got {eps}. "
            "eps = 0 is the plain linear schedule (infinite variance under uniform t); the authors' code uses 1e-3."
        )
    return eps


def all_masks(length: int) -> np.ndarray:
    """All 2^L masks as a bool array (M, L), row-major (position 0 most significant); mask 0 is empty."""
    return all_sequences(2, length).astype(bool)


def rate(eps: float, t):
    """The clipped masking rate s = eps + (1 - eps) t."""
    return eps + (1.0 - eps) * t


# ================================ the sufficient statistics ===========================================
@dataclass(frozen=True, eq=False)
class MomentTables:
    """E_x[G_x G_x^T] and (E_x G_x)(E_x G_x)^T over the 2^L masks: all an estimator's variance needs.

    ``kind``: "loss" (G(x, m) = S(x, m), a scalar; ``mean_vector`` = E_x G_x) or "gradient" (G(x, m) =
    grad_theta S(x, m); ``num_params`` coordinates). ``masks`` (M, L) bool.
    """

    gram: np.ndarray  # (M, M)
    mean_gram: np.ndarray  # (M, M)
    masks: np.ndarray  # (M, L)
    vocab_size: int
    kind: str
    mean_vector: np.ndarray | None = None  # (M,) for the loss
    num_params: int = 1

    @property
    def length(self) -> int:
        return int(self.masks.shape[1])

    @property
    def num_masked(self) -> np.ndarray:
        return self.masks.sum(1)

    def class_sums(self) -> np.ndarray:
        """D_k = sum_{|m| = k} gram[m, m] for k = 0..L, (L+1,)."""
        return np.bincount(self.num_masked, weights=np.diag(self.gram), minlength=self.length + 1)


def _flat_pairs(V: int, L: int):
    """All (x, m) pairs: tokens (N*M, L), masks (N*M, L), states (N*M, L) with the mask id V."""
    X = all_sequences(V, L)  # (N, L)
    Ms = all_masks(L)  # (M, L)
    N, M = X.shape[0], Ms.shape[0]
    tok = np.repeat(X, M, axis=0)
    msk = np.tile(Ms, (N, 1))
    return tok, msk, np.where(msk, V, tok)


def loss_table(joint: Joint, denoiser, chunk: int = 1 << 14) -> np.ndarray:
    """S(x, m) = (1/L) sum_{i in m} -log p(x_i | x with m masked) for every x (V^L) and mask (2^L): (N, M).

    Rows with q(x) = 0 are set to 0 (they carry no probability). A denoiser that gives probability 0 to a
    token of a sequence with q(x) > 0 makes the loss infinite: ValueError.
    """
    require_x64("loss_table")
    if not isinstance(joint, Joint):
        raise TypeError(f"loss_table needs a theory.joint.Joint, got {type(joint).__name__}.")
    V, L = joint.vocab_size, joint.length
    check_denoiser(denoiser, V, L)
    N, M = V**L, 2**L
    check_size(
        8 * N * M * L * (V + 2),
        f"The loss table over V^L x 2^L = {N} x {M} (sequence, mask) pairs",
        None,
        "Use a smaller L: the exact variance enumerates every sequence and mask",
    )
    tok, msk, states = _flat_pairs(V, L)
    out = np.empty(N * M)
    for i in range(0, N * M, chunk):
        p = np.asarray(denoiser.marginals(jnp.asarray(states[i : i + chunk])))  # (c, L, V)
        if p.dtype != np.float64:
            raise TypeError(f"denoiser.marginals returned {p.dtype}; the exact variance needs float64 marginals.")
        px = np.take_along_axis(p, tok[i : i + chunk, :, None], axis=-1)[..., 0]  # (c, L)
        with np.errstate(divide="ignore"):
            nll = np.where(msk[i : i + chunk], -np.log(np.where(msk[i : i + chunk], px, 1.0)), 0.0)
        out[i : i + chunk] = nll.sum(-1) / L
    S = out.reshape(N, M)
    q = np.asarray(joint.probs, dtype=np.float64)
    S = np.where(q[:, None] > 0, S, 0.0)
    if not np.all(np.isfinite(S)):
        bad = int(np.argmax(~np.isfinite(S).all(1)))
        raise ValueError(
            f"the denoiser gives probability 0 to a token of sequence #{bad} (q = {q[bad]:.3g} > 0): the loss is "
            "infinite there. Smooth the denoiser (theory.denoiser.smoothed) first."
        )
    return S


def loss_moments(joint: Joint, denoiser) -> MomentTables:
    """The sufficient statistics of the loss S(x, m) (:class:`MomentTables`, kind "loss")."""
    S = loss_table(joint, denoiser)
    q = np.asarray(joint.probs, dtype=np.float64)
    mu = q @ S  # (M,)
    return MomentTables(S.T @ (q[:, None] * S), np.outer(mu, mu), all_masks(joint.length), joint.vocab_size, "loss", mu)


def _as_model(model, V: int, L: int):
    """(log_probs(params, states (B, L)) -> (B, L, V), float64 params) from a LearnedDenoiser or a pair."""
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        fn, params = model
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        return fn, params
    net = getattr(model, "net", None)
    if net is None:
        raise TypeError(
            "the gradient needs parameters: pass a synthetic.models.LearnedDenoiser or a pair "
            "(log_probs(params, states (B, L)) -> (B, L, V), params)."
        )
    import equinox as eqx

    if (model.vocab_size, model.length) != (V, L):
        raise ValueError(f"the model is for (V, L) = ({model.vocab_size}, {model.length}), the joint for ({V}, {L}).")
    net64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, net)
    params, static = eqx.partition(net64, eqx.is_inexact_array)

    def log_probs(p, states):  # the network maps one state (L,) to logits (L, V), as in synthetic.models
        logits = jax.vmap(eqx.combine(p, static))(states.astype(jnp.int32))
        return jax.nn.log_softmax(logits.astype(jnp.float64), axis=-1)

    return log_probs, params


def gradient_moments(joint: Joint, model, chunk: int = 64, max_bytes: float | None = None) -> MomentTables:
    """The sufficient statistics of the per-example gradient grad_theta S(x, m) (kind "gradient").

    ``model``: a :class:`synthetic.models.LearnedDenoiser` (its float32 parameters are cast to float64) or a
    pair ``(log_probs(params, states (B, L)) -> (B, L, V), params)``. Per-example gradients by
    ``jax.vmap(jax.grad(...))`` over the 2^L masks of ``chunk`` sequences at a time.
    """
    require_x64("gradient_moments")
    if not isinstance(joint, Joint):
        raise TypeError(f"gradient_moments needs a theory.joint.Joint, got {type(joint).__name__}.")
    V, L = joint.vocab_size, joint.length
    fn, params = _as_model(model, V, L)
    flat, unravel = ravel_pytree(params)
    P = int(flat.size)
    M = 2**L
    check_size(
        8 * chunk * M * P,
        f"Per-example gradients of {chunk} sequences x {M} masks x {P} parameters",
        max_bytes,
        "Lower chunk or use a smaller model",
    )
    masks = jnp.asarray(all_masks(L))
    X = all_sequences(V, L)
    q = np.asarray(joint.probs, dtype=np.float64)

    def S(flat_params, tokens, mask):
        lp = fn(unravel(flat_params), jnp.where(mask, V, tokens)[None])[0]  # (L, V)
        nll = -jnp.take_along_axis(lp, tokens[:, None], axis=-1)[:, 0]
        return jnp.sum(jnp.where(mask, nll, 0.0)) / L

    @jax.jit
    def grads(flat_params, tokens):  # tokens (c, L) -> (c, M, P)
        per_mask = jax.vmap(jax.grad(S), in_axes=(None, None, 0))
        return jax.vmap(per_mask, in_axes=(None, 0, None))(flat_params, tokens, masks)

    gram = np.zeros((M, M))
    mu = np.zeros((M, P))
    support = np.nonzero(q > 0)[0]
    chunk = min(chunk, support.size)
    for i in range(0, support.size, chunk):
        idx = support[i : i + chunk]
        pad = np.concatenate([idx, np.full(chunk - idx.size, idx[0])])  # one shape: one compilation
        g = np.asarray(grads(flat, jnp.asarray(X[pad])))[: idx.size]  # (c, M, P)
        if not np.all(np.isfinite(g)):
            raise ValueError("the per-example gradient is not finite (a zero probability on the support?).")
        w = q[idx]
        gram += np.einsum("c,cmp,cnp->mn", w, g, g)
        mu += np.einsum("c,cmp->mp", w, g)
    return MomentTables(gram, mu @ mu.T, all_masks(L), V, "gradient", None, P)


# ================================ quadrature in u = sqrt(t) ===========================================
@dataclass(frozen=True)
class Quadrature:
    """Nodes t (n,) in (0, 1) and weights w (n,) with sum w f(t) ~ int_0^1 f(t) dt."""

    t: np.ndarray
    w: np.ndarray


def quadrature(eps: float, breakpoints=(), nodes: int = NODES_PER_PANEL) -> Quadrature:
    """Composite Gauss-Legendre in u = sqrt(t) (dt = 2u du): panels graded geometrically toward u = 0 down
    to the scale sqrt(eps)/4 (where the rate s = eps + (1-eps) u^2 has its near-pole), broken at every
    ``breakpoints`` (t values where an integrand has a kink: s = 1/2, proposal bins, strata)."""
    eps = check_eps(eps)
    floor = max(math.sqrt(eps) / 4.0, 1e-8) if eps > 0 else 1.0 / 64
    J = max(1, math.ceil(math.log2(1.0 / floor)))
    pts = [0.0, 1.0] + [2.0**-j for j in range(1, J + 1)]
    pts += [math.sqrt(b) for b in np.asarray(breakpoints, dtype=np.float64).ravel() if 0.0 < b < 1.0]
    u_bp = np.unique(np.asarray(pts))
    if u_bp.size > 48:  # many short panels (proposal bins, strata): fewer nodes each
        nodes = max(8, nodes // 2)
    x, wx = np.polynomial.legendre.leggauss(nodes)
    lo, hi = u_bp[:-1, None], u_bp[1:, None]
    u = (lo + (hi - lo) * (x[None] + 1.0) / 2.0).ravel()
    wu = ((hi - lo) / 2.0 * wx[None]).ravel()
    return Quadrature(u * u, 2.0 * u * wu)


# ================================ the standard mask law and t-law =====================================
def bernoulli_probs(s, masks: np.ndarray) -> np.ndarray:
    """P_s(m) = s^|m| (1-s)^(L-|m|) for rates s (n,) (or (n, L) per position): (n, M)."""
    s = np.asarray(s, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s  # (n, 1) or (n, L)
    s = np.broadcast_to(s, (s.shape[0], masks.shape[1]))
    logp = np.where(masks[None], np.log(s)[:, None, :], np.log1p(-s)[:, None, :])  # (n, M, L)
    return np.exp(logp.sum(-1))


def _coefficients(s, masks):
    """P_s(m) / s for the non-empty masks (0 for the empty mask, whose loss is 0), stably: s^(k-1) (1-s)^(L-k)."""
    s = np.asarray(s, dtype=np.float64)[:, None]
    k = masks.sum(1)[None]
    L = masks.shape[1]
    return np.where(k > 0, s ** np.maximum(k - 1, 0) * (1.0 - s) ** (L - k), 0.0)


class BernoulliMask:
    """The standard mask law: each token masked independently with the rate s; one denoiser call."""

    name = "bernoulli"
    evaluations = 1

    def breakpoints_s(self) -> tuple:
        return ()

    def first(self, s, masks):
        """E[coefficient of G_x[m] | s] = P_s(m) / s, (n, M)."""
        return _coefficients(s, masks)

    def second(self, s, tables: MomentTables):
        """E[est^2 | s] averaged over x: sum_m P_s(m) gram[m, m] / s^2, (n,)."""
        s = np.asarray(s, dtype=np.float64)
        return (_coefficients(s, tables.masks) / s[:, None]) @ np.diag(tables.gram)  # P_s(m)/s^2 = (P/s)/s

    def singular(self, tables: MomentTables) -> float:
        """lim_{s -> 0} s E[est^2 | s] (= c_1 for this law)."""
        return float(S_TINY * self.second(np.array([S_TINY]), tables)[0])


class UniformT:
    """t ~ U[0, 1] (weight 1)."""

    name = "uniform"
    finite_at_zero = False  # density bounded at t = 0: the 1/s singularity of E[est^2 | s] is not integrable

    def pdf(self, t):
        return np.ones_like(np.asarray(t, dtype=np.float64))

    def breakpoints_t(self) -> tuple:
        return ()


@dataclass(frozen=True)
class Decomposition:
    """Exact mean and variance terms of one estimator (per example; x ``evaluations`` for the cost).

    ``mean`` (the loss) or ``mean_norm`` |E grad| (the gradient); ``A`` (masking pattern), ``B`` (masking
    rate), ``C`` (data), ``total`` = A + B + C; ``second_moment`` = E|est|^2. Infinite entries are +inf.
    """

    estimator: str
    kind: str
    eps: float
    mean: float
    A: float
    B: float
    C: float
    total: float
    second_moment: float
    evaluations: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def per_evaluation(self) -> float:
        """total x evaluations: the variance at an equal number of denoiser calls (lower is better)."""
        return self.total * self.evaluations

    def shares(self) -> dict:
        """A, B, C as fractions of the total (NaN if the total is 0 or infinite)."""
        if not math.isfinite(self.total) or self.total <= 0:
            return {"A": float("nan"), "B": float("nan"), "C": float("nan")}
        return {k: getattr(self, k) / self.total for k in ("A", "B", "C")}


def decompose(tables: MomentTables, estimator=None, eps: float = 0.0, quad: Quadrature | None = None) -> Decomposition:
    """Exact mean, A, B, C and total variance of ``estimator`` (default the standard one) at the clip ``eps``.

    ``estimator``: an object with ``mask_law`` (``first``, ``second``, ``singular``, ``breakpoints_s``,
    ``evaluations``), ``t_law`` (``pdf``, ``breakpoints_t``, ``finite_at_zero``; optional ``strata``: a
    stratified batch or a per-bin control variate with those t-bins) and ``name``; see theory/estimators.py.
    ``quad``: a custom t-rule (nodes and weights summing to 1 act as a discrete t-law; used by the tests).
    """
    require_x64("decompose")
    eps = check_eps(eps)
    if not isinstance(tables, MomentTables):
        raise TypeError(f"decompose needs MomentTables (loss_moments / gradient_moments), got {type(tables).__name__}.")
    mask_law = getattr(estimator, "mask_law", None) or BernoulliMask()
    t_law = getattr(estimator, "t_law", None) or UniformT()
    name = getattr(estimator, "name", "standard")
    strata = getattr(t_law, "strata", None)
    custom = quad is not None
    if quad is None:
        bps = list(t_law.breakpoints_t())
        bps += [(b - eps) / (1.0 - eps) for b in mask_law.breakpoints_s() if eps < b < 1.0]
        quad = quadrature(eps, bps)
    t, w = quad.t, quad.w
    s = rate(eps, t)
    masks, G, Gm = tables.masks, tables.gram, tables.mean_gram
    a = mask_law.first(s, masks)  # (n, M)
    m2 = mask_law.second(s, tables)  # (n,)
    p = np.asarray(t_law.pdf(t), dtype=np.float64)
    if np.any(~(p > 0) & (m2 > 0)) or not np.all(np.isfinite(p)):
        raise ValueError(
            "the t-proposal vanishes (or is not finite) where the loss does not (E[loss^2 | t] > 0): the "
            "importance-weighted estimator would be biased. Give every t in (0, 1] positive density."
        )
    rho = np.where(p > 0, 1.0 / np.where(p > 0, p, 1.0), 0.0)
    beta = w @ a  # (M,): E_{t ~ p}[a / p] = int a dt
    T = float(np.sum(w * rho * m2))
    Bp = float(np.sum(w * rho * np.einsum("nm,mk,nk->n", a, G, a)))
    Cp = float(beta @ G @ beta)
    mean2 = float(beta @ Gm @ beta)
    reduction = 0.0
    if strata is not None:  # stratified t / per-bin control variate: between-bin variance of E[est | bin] removed
        edges = np.asarray(strata, dtype=np.float64)
        idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
        K = len(edges) - 1
        betas = np.stack([(w[idx == k] @ a[idx == k]) / (edges[k + 1] - edges[k]) for k in range(K)])  # (K, M)
        widths = np.diff(edges)
        reduction = float(np.sum(widths * np.einsum("km,mn,kn->k", betas, Gm, betas)) - mean2)
    singular = float(mask_law.singular(tables))
    scale = max(float(np.trace(G)), np.finfo(float).tiny)
    if eps == 0.0 and not custom and not t_law.finite_at_zero and singular > 1e-30 * scale:  # ~S_TINY: limit 0
        T = float("inf")
    A = T - Bp
    B = Bp - Cp - reduction
    C = Cp - mean2
    total = T - mean2 - reduction
    mean = float(tables.mean_vector @ beta) if tables.mean_vector is not None else math.sqrt(max(mean2, 0.0))
    return Decomposition(
        name,
        tables.kind,
        eps,
        mean,
        A,
        B,
        C,
        total,
        T,
        int(mask_law.evaluations),
        {"singular": singular, "beta": beta},
    )


def second_moment_curve(tables: MomentTables, t, eps: float = 0.0, mask_law=None) -> np.ndarray:
    """m2(t) = E|est|^2 given t (over x and masks), for t ~ U weight 1: the quantity whose square root is
    P-POTS's optimal density (Jia2025). (n,)."""
    mask_law = mask_law or BernoulliMask()
    return mask_law.second(rate(check_eps(eps), np.asarray(t, dtype=np.float64)), tables)


def divergence_coefficient(tables: MomentTables) -> float:
    """c_1 = E_x sum_i S(x, {i})^2 (or the gradient's squared norms): Var(eps) = c_1 log(1/eps) + O(1) for the
    standard estimator as eps -> 0 (module docstring)."""
    one = tables.num_masked == 1
    return float(np.sum(np.diag(tables.gram)[one]))


# ================================ closed forms for the standard estimator ============================
def _tail_integral(a: int, b: int, eps: float) -> float:
    """int_eps^1 s^a (1-s)^b ds for integers a >= -1, b >= 0 (a = -1: -log eps - sum_{j<b} (1-eps)^(j+1)/(j+1))."""
    if a == -1:
        if eps == 0.0:
            return float("inf")
        return -math.log(eps) - sum((1.0 - eps) ** (j + 1) / (j + 1) for j in range(b))
    return float(special.beta(a + 1, b + 1) * special.betainc(b + 1, a + 1, 1.0 - eps))


def standard_closed_form(tables: MomentTables, eps: float = 0.0) -> Decomposition:
    """The standard estimator's mean, A, B, C by incomplete beta functions (no quadrature):

    beta_m = (1/(1-eps)) int_eps^1 s^(k-1) (1-s)^(L-k) ds (k = |m| >= 1),
    E loss^2 = (1/(1-eps)) sum_k D_k int_eps^1 s^(k-2) (1-s)^(L-k) ds   (D_k = sum_{|m|=k} gram[m, m]),
    E_x E_t |E[loss | x, t]|^2 = (1/(1-eps)) sum_{m, m'} gram[m, m'] int_eps^1 s^(k+k'-2) (1-s)^(2L-k-k') ds.
    """
    require_x64("standard_closed_form")
    eps = check_eps(eps)
    L = tables.length
    k = tables.num_masked
    c = 1.0 / (1.0 - eps)
    beta = np.array([c * _tail_integral(kk - 1, L - kk, eps) if kk > 0 else 0.0 for kk in k])
    D = tables.class_sums()
    T = c * sum(D[kk] * _tail_integral(kk - 2, L - kk, eps) for kk in range(1, L + 1) if D[kk] != 0)
    I = np.zeros((L + 1, L + 1))
    for k1 in range(1, L + 1):
        for k2 in range(1, L + 1):
            I[k1, k2] = c * _tail_integral(k1 + k2 - 2, 2 * L - k1 - k2, eps)
    Bp = float(np.sum(tables.gram * I[k[:, None], k[None, :]]))
    Cp = float(beta @ tables.gram @ beta)
    mean2 = float(beta @ tables.mean_gram @ beta)
    mean = float(tables.mean_vector @ beta) if tables.mean_vector is not None else math.sqrt(max(mean2, 0.0))
    return Decomposition("standard (closed form)", tables.kind, eps, mean, T - Bp, Bp - Cp, Cp - mean2, T - mean2, T)


# ================================ brute force and the AR loss ========================================
def law_of_total_variance(values, p_x, p_t, p_m) -> dict:
    """A, B, C and the total of a finite random quantity values[x, t, m] (..., optionally a trailing
    coordinate axis: the trace is reported) with P(x, t, m) = p_x[x] p_t[t] p_m[x or None, t, m].

    A plain reference for tests: it shares nothing with :func:`decompose` but the definitions."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 3:
        v = v[..., None]
    px = np.asarray(p_x, dtype=np.float64)
    pt = np.asarray(p_t, dtype=np.float64)
    pm = np.asarray(p_m, dtype=np.float64)
    pm = np.broadcast_to(pm, v.shape[:3])
    e_m = np.einsum("xtm,xtmp->xtp", pm, v)  # E[v | x, t]
    e_m2 = np.einsum("xtm,xtmp->xt", pm, v * v)  # E[|v|^2 | x, t]
    e_t = np.einsum("t,xtp->xp", pt, e_m)  # E[v | x]
    mean = px @ e_t
    A = float(np.einsum("x,t,xt->", px, pt, e_m2 - (e_m * e_m).sum(-1)))
    B = float(np.einsum("x,t,xt->", px, pt, (e_m * e_m).sum(-1)) - px @ (e_t * e_t).sum(-1))
    C = float(px @ (e_t * e_t).sum(-1) - mean @ mean)
    total = float(np.einsum("x,t,xt->", px, pt, e_m2) - mean @ mean)
    return {"mean": mean if mean.size > 1 else float(mean[0]), "A": A, "B": B, "C": C, "total": total}


def ar_loss_table(joint: Joint, denoiser) -> np.ndarray:
    """The autoregressive loss (1/L) sum_i -log p(x_i | x_<i, rest masked) for every x: (N,)."""
    require_x64("ar_loss_table")
    V, L = joint.vocab_size, joint.length
    check_denoiser(denoiser, V, L)
    X = all_sequences(V, L)
    out = np.zeros(X.shape[0])
    for i in range(L):
        z = X.copy()
        z[:, i:] = V
        p = np.asarray(denoiser.marginals(jnp.asarray(z)))[:, i, :]
        out += -np.log(np.take_along_axis(p, X[:, i : i + 1], axis=-1)[:, 0])
    q = np.asarray(joint.probs)
    return np.where(q > 0, out / L, 0.0)


def ar_decomposition(joint: Joint, denoiser) -> dict:
    """Jia2025's remark: an AR loss has only the data term. The left-to-right loss through
    :func:`law_of_total_variance` with one t and one mask: A = B = 0, C = Var_x."""
    v = ar_loss_table(joint, denoiser)
    return law_of_total_variance(v[:, None, None], joint.probs, [1.0], [[1.0]])


def tables_from_values(values, p_x, masks: np.ndarray, vocab_size: int, kind: str = "loss") -> MomentTables:
    """MomentTables from an explicit table values[x, m] (N, M) or (N, M, P) and p_x (tests, custom losses)."""
    v = np.asarray(values, dtype=np.float64)
    px = np.asarray(p_x, dtype=np.float64)
    if v.ndim == 2:
        mu = px @ v
        return MomentTables(v.T @ (px[:, None] * v), np.outer(mu, mu), masks, vocab_size, kind, mu)
    mu = np.einsum("x,xmp->mp", px, v)
    gram = np.einsum("x,xmp,xnp->mn", px, v, v)
    return MomentTables(gram, mu @ mu.T, masks, vocab_size, kind, None, v.shape[2])
