"""Garg2025: the MDM ELBO is an expected any-order autoregressive loss; per-position schedules learn the order.

Conventions (MD4's, the toolkit's): t = 0 is data, t = 1 is all-mask; position l has its own schedule
alpha_{t,l} = P(token l still clean at t), alpha_{0,l} = 1, alpha_{1,l} = 0, non-increasing; positions
are masked independently.

Unmask times and the decoding order
-----------------------------------
Going forward from data, position l is masked at the random time T_l with CDF P(T_l <= t) = 1 - alpha_{t,l}
and density -alpha'_{t,l}; the T_l are independent. The sampler runs time backwards (1 -> 0), so position l
is *unmasked* (revealed) at time T_l, and the **decoding order** d (d(1) revealed first) sorts the T_l in
**decreasing** order: the position masked last is decoded first. Hence

    P(d) = P(T_{d(1)} > T_{d(2)} > ... > T_{d(L)}) = int_{t_1 > ... > t_L} prod_i (-alpha'_{t_i, d(i)}) dt.

* Shared schedule (alpha_{t,l} = alpha_t): the T_l are i.i.d., P(d) = 1/L! whatever alpha (Garg2025's
  invariance).
* Polynomial family alpha_{t,l} = 1 - t**w_l: T_l ~ Beta(w_l, 1), -log T_l ~ Exp(w_l), and the largest T is
  the winner of an exponential race, so the decoding order is **Plackett-Luce with weights w_l**:
  P(d) = prod_i w_{d(i)} / sum_{j >= i} w_{d(j)};  P(l decoded before l') = w_l / (w_l + w_l').
  A larger w_l means position l is masked later and decoded earlier. (The masking order, the reverse, is
  not Plackett-Luce.)

The ELBO as an expected AR loss (Garg2025, Prop. 3.1)
-----------------------------------------------------
For a time-independent denoiser p (any Denoiser) and a clean x, MD4's continuous-time ELBO with per-position
schedules (Garg2025, Eq. 8; positive, in nats) is

    L(x) = int_0^1 sum_l (-alpha'_{t,l}) / (1 - alpha_{t,l}) E_{z_t | x}[ 1{l masked in z_t} (-log p(x_l | z_t)) ] dt.

Write A for the visible set of z_t and G[A, l] = E_{x~q}[-log p(x_l | x_A)] (the *conditional loss table*,
l not in A). Summing exactly over the 2**L masks,

    E_q L(x) = int_0^1 sum_A sum_{l not in A} (-alpha'_{t,l}) prod_{j in A} alpha_{t,j}
                       prod_{j not in A, j != l} (1 - alpha_{t,j}) G[A, l] dt
             = sum_{A, l} W[A, l] G[A, l],

    W[A, l] = int_0^1 (-alpha'_{t,l}) prod_{j in A} alpha_{t,j} prod_{j not in A u {l}} (1 - alpha_{t,j}) dt
            = P(at time T_l every position of A is still clean and every other one masked)
            = P(the positions decoded before l are exactly A).

Splitting that event by the order in which A is decoded gives W[A, l] = sum over decoding orders d with
d(<i) = A (as a set), d(i) = l of P(d), hence

    E_q L(x) = sum_d P(d) AR(d),   AR(d) = E_{x~q} sum_i -log p(x_{d(i)} | x_{d(<i)})       (Prop. 3.1)

in the decreasing-time (decoding) order. With the exact denoiser every AR(d) equals H(q) (chain rule), so
the expected ELBO is H(q) for every schedule. With a shared schedule W[A, l] = 1 / (m binom(L, m)),
m = L - |A| masked, which is the RADD / any-order form sum_k E_{|M|=k}[(1/k) sum_{i in M} -log p(x_i | x_{M^c})].
For the polynomial family W has a closed form by a dynamic programme over subsets:
Q(A) = P(the first |A| decoded positions are A) = sum_{a in A} Q(A \\ a) w_a / (w_total - w(A \\ a)),
W[A, l] = Q(A) w_l / (w_total - w(A)), differentiable in w (:func:`plackett_luce_elbo`).

Accurate integration (general schedules)
----------------------------------------
Integrals over t in [0, 1] use the substitution t = exp(-exp(-s)), dt = t exp(-s) ds, for s in
[-log 690, -log(2**-53)] = [-6.54, 36.74] (t from 1e-300 to 1 - 1.1e-16), split into panels of width h
(default 1) with n-point Gauss-Legendre rules (default n = 16, 704 nodes). The map turns the power-law
endpoint behaviour of schedules near t = 0 (t**w) and near t = 1 ((1 - t)**b) into exponential decay in s,
so integrands analytic in t give integrands analytic in a strip |Im s| < pi/2 and the panel rule converges
geometrically (about (4h/pi)**(2n)). Nested order integrals (P(d) for every d) use the same nodes with
each panel's spectral integration matrix (Lagrange interpolation at the Gauss nodes, integrated from the
panel start), so P(d) is computed by a dynamic programme over ordered suffixes of d:
H_{(a, s)}(t) = int_0^t (-alpha'_{u,a}) H_s(u) du,  H_() = 1,  P(d) = H_d(1). The reported ``error`` is the
largest difference between panel widths h and h/2. Sources of error not seen by that estimate: mass
below t = 1e-300 (P(T_l < 1e-300) = 1 - alpha_l(1e-300), e.g. 1e-300**w for 1 - t**w: below 1e-18 for
w >= 0.06) and above 1 - 1.1e-16, where float64 cannot represent t: schedules whose density is singular
at t = 1 like (1 - t)**(b-1) lose up to about (1e-16)**b there (1e-8 for b = 1/2). Checked: sum_d P(d) = 1,
1/L! for shared schedules and Plackett-Luce for the polynomial family, to 1e-12.

Gradients with respect to w (polynomial family, learned order)
-------------------------------------------------------------
* exact: ``jax.grad`` of :func:`plackett_luce_elbo` (closed form, all sums exact);
* RLOO over orders (Prop. 3.1 form): K decoding orders d_k ~ PL(w) per x, g = (1/K) sum_k
  (AR_k - mean_{j != k} AR_j) grad_w log PL(d_k); bounded, so finite variance;
* RLOO over masks (the MDM form, MD4's GenMD4 estimator with a per-position w, our reading of the paper's
  estimator): t from a proposal p(t), K masks z_k ~ prod_l Bernoulli(t**w_l) at that t,
  ell_k = (1/p(t)) sum_{l masked} (w_l / t) (-log p(x_l | z_k)) (the weight -alpha'/(1 - alpha) = w_l / t),
  g = (1/K) sum_k [d ell_k / dw + (ell_k - mean_{j != k} ell_j) grad_w log P(z_k | t)]. With t ~ U[0, 1] its
  variance is infinite for min_l w_l <= 1 (ell ~ w/t on an event of probability ~ t**w:
  int t**(w-2) dt diverges; the plain MDM loss with the linear schedule is the case w = 1). With the
  proposal t ~ Beta(a, 1), a < min_l w_l, the second moment int t**(w-a-1) log(t)**2 dt is finite
  (:func:`rloo_mask_gradient`; E|ell|**k < inf iff a < min(w)/(k-1); default a = min(w)/4). The weight
  iw(t)/t = 1/(a t**a) = 1/(a u) for t = u**(1/a) is computed from u, so it stays finite where t underflows.

Joint learning (:func:`fit_order`): Adam on a network and theta = log w, with the exact bound (its gradient
through the closed-form W[A, l]) or the RLOO surrogates :func:`rloo_order_surrogate` /
:func:`rloo_mask_surrogate`, whose gradients are the estimators above in w and unbiased AR / MDM-loss
gradients in the network's parameters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from . import schedules as _schedules
from .denoiser import check_denoiser
from .joint import Joint
from .policies import register_policy, reveal_by_score
from .states import all_sequences, all_states, strides
from .validation import check_size, require_x64

#: Largest L for which functions enumerate all L! decoding orders (8! = 40320).
MAX_ORDER_LENGTH = 8
_STILL_WORKS = (
    "Still available at this L: sample_unmask_times / sample_orders (the order sampler), "
    "pairwise_order_probabilities (P(l before l')), elbo_weights / plackett_luce_elbo / elbo (2**L masks, "
    "no enumeration of orders) and the PlackettLuceOrder policy with the Monte-Carlo sampler."
)


# ================================ per-position schedules ===============================================
@jax.tree_util.register_pytree_node_class
class PolynomialFamily:
    """alpha_{t,l} = 1 - t**w_l (Garg2025's learned family; MD4's polynomial schedule per position).

    ``weights`` (L,) > 0 may be a traced array (gradients with respect to w flow through every function of
    this module that takes the family). The decoding order is Plackett-Luce with these weights.
    """

    def __init__(self, weights):
        w = weights if isinstance(weights, jax.core.Tracer) else jnp.asarray(weights, dtype=jnp.result_type(float))
        if w.ndim != 1 or w.shape[0] < 1:
            raise ValueError(f"PolynomialFamily needs a 1-D array of L >= 1 weights, got shape {w.shape}.")
        if not isinstance(w, jax.core.Tracer):
            wn = np.asarray(w)
            if not np.all(np.isfinite(wn)) or np.any(wn <= 0):
                raise ValueError(
                    f"PolynomialFamily weights must be finite and > 0 (alpha = 1 - t**w is a schedule only for "
                    f"w > 0), got {wn.tolist()}. Parametrise learned weights as w = exp(theta)."
                )
        self.weights = w

    def tree_flatten(self):
        return (self.weights,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.weights = children[0]
        return obj

    @property
    def length(self) -> int:
        return int(self.weights.shape[0])

    def alpha(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(float))[..., None]
        return 1.0 - t**self.weights

    def dalpha(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(float))[..., None]
        return -self.weights * t ** (self.weights - 1.0)

    def __repr__(self) -> str:
        return f"PolynomialFamily(weights={np.asarray(self.weights).round(4).tolist()})"


@dataclass(frozen=True, eq=False)
class FunctionFamily:
    """A user per-position schedule: ``alpha_fn(t) -> t.shape + (L,)`` (jax.numpy, vectorised) and its derivative.

    ``dalpha_fn`` defaults to forward-mode autodiff of ``alpha_fn`` (which must then accept a scalar t).
    Build with :func:`from_functions` (validated).
    """

    alpha_fn: Callable
    dalpha_fn: Callable
    length: int
    name: str = "custom"

    def alpha(self, t):
        return self.alpha_fn(jnp.asarray(t, dtype=jnp.result_type(float)))

    def dalpha(self, t):
        return self.dalpha_fn(jnp.asarray(t, dtype=jnp.result_type(float)))


def _autodiff(alpha_fn: Callable) -> Callable:
    jac = jax.jacfwd(alpha_fn)

    def dalpha(t):
        t = jnp.asarray(t)
        out = jax.vmap(jac)(t.reshape(-1))  # (n, L)
        return out.reshape(t.shape + out.shape[-1:])

    return dalpha


def from_functions(alpha_fn: Callable, length: int, dalpha_fn: Callable | None = None, name: str = "custom"):
    """Per-position schedule from user functions (validated: endpoints, monotonicity, derivative)."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}.")
    fam = FunctionFamily(alpha_fn, _autodiff(alpha_fn) if dalpha_fn is None else dalpha_fn, int(length), name)
    return validate(fam)


def shared(schedule, length: int) -> _schedules.PerPosition:
    """The shared schedule alpha_{t,l} = alpha_t for every position, as a PerPosition of length L."""
    if not isinstance(schedule, _schedules.Schedule):
        raise TypeError(f"shared needs a theory.schedules.Schedule, got {type(schedule).__name__}.")
    return _schedules.PerPosition((schedule,) * int(length))


def polynomial_family(weights) -> PolynomialFamily:
    """alpha_{t,l} = 1 - t**w_l (weights > 0)."""
    return PolynomialFamily(weights)


def is_per_position(schedule) -> bool:
    """True for objects with ``length``, ``alpha(t) -> t.shape + (L,)`` and ``dalpha``."""
    return hasattr(schedule, "length") and callable(getattr(schedule, "alpha", None)) and hasattr(schedule, "dalpha")


def as_per_position(schedule, length: int | None = None):
    """A shared Schedule becomes :func:`shared` (needs ``length``); per-position schedules pass (length checked)."""
    if isinstance(schedule, _schedules.Schedule):
        if length is None:
            raise ValueError("a shared schedule needs the length L to act per position: as_per_position(s, L).")
        return shared(schedule, length)
    if not is_per_position(schedule):
        raise TypeError(
            f"expected a theory.schedules.Schedule, PerPosition, PolynomialFamily or FunctionFamily, got "
            f"{type(schedule).__name__}."
        )
    if length is not None and schedule.length != length:
        raise ValueError(f"the per-position schedule has {schedule.length} positions, the data has L = {length}.")
    return schedule


_BUCKET = 4096  # schedules are evaluated on arrays padded to a multiple of this: one compiled shape per primitive


def _alphas(schedule, t) -> tuple[np.ndarray, np.ndarray]:
    """alpha_{t,l}, alpha'_{t,l} as float64 numpy, t.shape + (L,) (t padded to a fixed bucket for JAX's caches)."""
    t = np.asarray(t, dtype=np.float64)
    flat = t.reshape(-1)
    n = flat.size
    pad = np.full(-(-max(n, 1) // _BUCKET) * _BUCKET, 0.5)
    pad[:n] = flat
    tj = jnp.asarray(pad)
    a = np.asarray(schedule.alpha(tj), dtype=np.float64)[:n]
    d = np.asarray(schedule.dalpha(tj), dtype=np.float64)[:n]
    return a.reshape(t.shape + a.shape[1:]), d.reshape(t.shape + d.shape[1:])


def validate(schedule, tol: float = 1e-10):
    """Check a per-position schedule: finite, alpha_{0,l} = 1, alpha_{1,l} = 0, non-increasing in t, in [0, 1],
    and dalpha equal to the derivative of alpha (central differences at interior points). Raises ValueError."""
    require_x64("per-position schedule validation")
    schedule = as_per_position(schedule)
    L = schedule.length
    t = np.linspace(0.0, 1.0, 2049)
    a, _ = _alphas(schedule, t)
    if a.shape != (t.size, L):
        raise ValueError(f"alpha(t) must return t.shape + (L,) = {(t.size, L)}, got {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{schedule!r}: alpha gives non-finite values on [0, 1].")
    bad = np.nonzero((np.abs(a[0] - 1) > tol) | (np.abs(a[-1]) > tol))[0]
    if bad.size:
        l = int(bad[0])
        raise ValueError(
            f"position {l}: alpha_(0,l) must be 1 and alpha_(1,l) must be 0 (got {a[0, l]:.6g}, {a[-1, l]:.6g}); "
            f"rescale it as (alpha(t) - alpha(1)) / (alpha(0) - alpha(1))."
        )
    rise = np.diff(a, axis=0)
    if np.any(rise > tol):
        i, m = (int(v) for v in np.unravel_index(int(np.argmax(rise)), rise.shape))
        raise ValueError(
            f"position {m}: alpha_(t,l) is not non-increasing (it rises from {a[i, m]:.6g} at t={t[i]:.4f} to "
            f"{a[i + 1, m]:.6g} at t={t[i + 1]:.4f}); alpha is the probability that the token is still clean."
        )
    if np.any(a < -tol) or np.any(a > 1 + tol):
        raise ValueError(f"{schedule!r}: alpha leaves [0, 1].")
    tm = 0.01 + 0.98 * (np.arange(1, 98) * (math.sqrt(5) - 1) / 2 % 1.0)  # irrational offsets: no kink hit exactly
    h = 1e-6
    ap, _ = _alphas(schedule, tm + h)
    am, _ = _alphas(schedule, tm - h)
    _, d = _alphas(schedule, tm)
    fd = (ap - am) / (2 * h)
    if np.any(np.abs(d - fd) > 1e-5 * (1 + np.abs(fd))):
        i, m = (int(v) for v in np.unravel_index(int(np.argmax(np.abs(d - fd))), d.shape))
        raise ValueError(
            f"position {m}: dalpha({tm[i]:.4f}) = {d[i, m]:.6g} but alpha's central difference is {fd[i, m]:.6g}: "
            f"dalpha must be the derivative of alpha (or omit it to use autodiff)."
        )
    return schedule


# ================================ quadrature on [0, 1] ===================================================
S_LO = -math.log(690.0)  # t = exp(-690) ~ 1e-300
S_HI = -math.log(2.0**-53)  # 1 - t ~ 1.1e-16


@dataclass(frozen=True)
class Quadrature:
    """Panel Gauss-Legendre nodes in s, t = exp(-exp(-s)) (module docstring). Arrays in increasing t.

    ``t`` (N,), ``dt`` (N,) = GL weight * dt/ds (so int_0^1 g dt ~ sum g(t) dt), ``dtds`` (N,),
    ``panels`` P, ``order`` n (N = P n), ``width`` h, ``cum`` (n, n) the panel integration matrix on [-1, 1].
    """

    t: np.ndarray
    dt: np.ndarray
    dtds: np.ndarray
    gl: np.ndarray  # (n,) GL weights on [-1, 1]
    cum: np.ndarray  # (n, n)
    panels: int
    order: int
    width: float

    def integrate(self, g) -> np.ndarray:
        """int_0^1 g(t) dt for g sampled at ``t`` (..., N)."""
        return np.asarray(g) @ self.dt

    def cumulative(self, gs) -> tuple[np.ndarray, np.ndarray]:
        """For values gs (R, N) of an integrand in s (g(t) dt/ds): (running integrals at the nodes (R, N),
        totals (R,))."""
        R = gs.shape[0]
        g = gs.reshape(R, self.panels, self.order)
        h2 = self.width / 2
        within = np.einsum("rpn,jn->rpj", g, self.cum) * h2
        full = (g @ self.gl) * h2  # (R, P)
        offs = np.cumsum(full, axis=1) - full
        return (offs[..., None] + within).reshape(R, -1), full.sum(1)


@lru_cache(maxsize=8)
def quadrature(width: float = 1.0, order: int = 16) -> Quadrature:
    """The quadrature rule with panels of width at most ``width`` in s and ``order`` Gauss nodes per panel.

    The panels tile [S_LO, S_HI] exactly, so every node has t < 1 in float64.
    """
    x, w = np.polynomial.legendre.leggauss(order)
    P = int(math.ceil((S_HI - S_LO) / width - 1e-9))
    width = (S_HI - S_LO) / P
    starts = S_LO + width * np.arange(P)
    s = (starts[:, None] + (x[None, :] + 1) * width / 2).reshape(-1)
    e = np.exp(-s)
    t = np.exp(-e)
    dtds = t * e
    dt = np.tile(w, P) * width / 2 * dtds
    # spectral integration matrix: int_{-1}^{x_j} p = sum_k S[j, k] p(x_k) for polynomials of degree < n
    Pv = np.polynomial.legendre.legvander(x, order)  # (n, n + 1): P_0..P_n at the nodes
    I = np.empty((order, order))
    I[:, 0] = x + 1
    for k in range(1, order):
        I[:, k] = (Pv[:, k + 1] - Pv[:, k - 1]) / (2 * k + 1)
    cum = I @ np.linalg.inv(Pv[:, :order])
    return Quadrature(t, dt, dtds, w, cum, P, order, float(width))


#: Nodes this close to t = 0 or t = 1 may hold non-finite schedule values (float64 cannot resolve 1 - t there);
#: they are dropped and their mass is carried by the endpoint masses below.
_EDGE = 1e-12


@dataclass(frozen=True)
class Densities:
    """A per-position schedule on the quadrature nodes: ``alpha``, ``f`` = -alpha' (0 at dropped edge nodes) and
    ``om`` = 1 - alpha, each (N, L); endpoint masses ``top`` (L,) = P(T_l > t_N) = alpha_l(t(S_HI)) carried as a
    point mass at t = 1 (l decoded first) and ``bottom`` (L,) = 1 - top - sum_k f_l dt_k carried at t = 0 (l
    decoded last). Ties between two endpoint masses are ignored: an error of at most top_l top_l' (or bottom
    products), below 1e-16 for schedules with bounded density."""

    alpha: np.ndarray
    f: np.ndarray
    om: np.ndarray
    top: np.ndarray
    bottom: np.ndarray


def _densities(schedule, quad: Quadrature) -> Densities:
    a, d = _alphas(schedule, quad.t)
    f = -d
    bad = ~(np.isfinite(a) & np.isfinite(f))
    edge = (quad.t < _EDGE) | (quad.t > 1.0 - _EDGE)
    if np.any(bad & ~edge[:, None]):
        k, l = np.argwhere(bad & ~edge[:, None])[0]
        raise ValueError(
            f"{schedule!r}: alpha or its derivative is not finite at t = {quad.t[k]:.6g} (position {l}); "
            f"the quadrature needs finite values on (1e-12, 1 - 1e-12)."
        )
    a = np.where(bad, np.where(quad.t[:, None] < 0.5, 1.0, 0.0), a)
    f = np.where(bad, 0.0, f)
    t_end = float(np.exp(-np.exp(-S_HI)))
    top, _ = _alphas(schedule, np.array([t_end]))
    top = np.clip(np.nan_to_num(top[0], nan=0.0), 0.0, 1.0)
    bottom = 1.0 - top - quad.integrate(f.T)
    return Densities(a, f, 1.0 - a, top, bottom)


# ================================ unmask times and the order sampler ==================================
def unmask_time_cdf(schedule, t):
    """P(T_l <= t) = 1 - alpha_{t,l}: position l is masked at forward time T_l (revealed there in reverse),
    t.shape + (L,)."""
    return 1.0 - as_per_position(schedule).alpha(t)


def unmask_time_density(schedule, t):
    """Density of T_l: -alpha'_{t,l}, t.shape + (L,)."""
    return -as_per_position(schedule).dalpha(t)


def sample_log_unmask_times(key, schedule, num: int):
    """log T_l for ``num`` independent draws, (num, L) float64 (log scale: no underflow for small w).

    Polynomial family: log T_l = log(U_l) / w_l (T_l = U_l**(1/w_l) ~ Beta(w_l, 1)). Other schedules: T_l =
    alpha_l^{-1}(1 - U_l) by 64 bisection steps on [0, 1] (error 2**-64).
    """
    require_x64("sample_unmask_times")
    schedule = as_per_position(schedule)
    L = schedule.length
    u = jax.random.uniform(key, (int(num), L), dtype=jnp.float64, minval=jnp.finfo(jnp.float64).tiny)
    if isinstance(schedule, PolynomialFamily):
        return jnp.log(u) / schedule.weights
    if isinstance(schedule, _schedules.PerPosition):
        cols = [_bisect(s, u[:, l : l + 1])[:, 0] for l, s in enumerate(schedule.schedules)]
        return jnp.log(jnp.stack(cols, axis=-1))
    return jnp.log(_bisect(schedule, u))


@partial(jax.jit, static_argnums=0)
def _bisect(schedule, u):
    """Smallest t with 1 - alpha_l(t) >= u[:, l] (64 bisection steps; F_l = 1 - alpha_l is non-decreasing)."""
    L = u.shape[1]
    idx = jnp.arange(L)

    def cdf(t):  # (num, L): position l's CDF at its own time
        if isinstance(schedule, _schedules.Schedule):
            return 1.0 - schedule.alpha(t)
        return 1.0 - schedule.alpha(t)[..., idx, idx]

    def body(_, lohi):
        lo, hi = lohi
        mid = (lo + hi) / 2
        up = cdf(mid) >= u
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    return jax.lax.fori_loop(0, 64, body, (jnp.zeros_like(u), jnp.ones_like(u)))[1]


def sample_unmask_times(key, schedule, num: int):
    """Independent unmask times T_l (num, L) with P(T_l <= t) = 1 - alpha_{t,l}."""
    return jnp.exp(sample_log_unmask_times(key, schedule, num))


def sample_orders(key, schedule, num: int):
    """Decoding orders (num, L) int32: the positions sorted by decreasing unmask time (row[0] decoded first)."""
    return jnp.argsort(-sample_log_unmask_times(key, schedule, num), axis=-1, stable=True).astype(jnp.int32)


# ================================ order probabilities ==================================================
def _check_order_length(L: int, what: str) -> None:
    if L > MAX_ORDER_LENGTH:
        raise ValueError(
            f"{what} enumerates all L! = {math.factorial(L)} decoding orders; L = {L} is above the limit "
            f"MAX_ORDER_LENGTH = {MAX_ORDER_LENGTH}. {_STILL_WORKS}"
        )


@lru_cache(maxsize=16)
def permutations(length: int) -> np.ndarray:
    """Every decoding order of L positions in lexicographic order, (L!, L) int64."""
    _check_order_length(length, "permutations")
    return np.array(list(itertools.permutations(range(length))), dtype=np.int64).reshape(-1, length)


@jax.jit
def plackett_luce_log_probs(weights, orders):
    """log P(d) = sum_i [log w_{d(i)} - log sum_{j >= i} w_{d(j)}] for decoding orders (..., L) (JAX, differentiable).

    Garg2025's polynomial family alpha_{t,l} = 1 - t**w_l: the decoding order is Plackett-Luce(w) (module docstring).
    """
    w = jnp.asarray(weights)[jnp.asarray(orders)]  # (..., L)
    tail = jnp.cumsum(w[..., ::-1], axis=-1)[..., ::-1]  # sum_{j >= i}
    return jnp.sum(jnp.log(w) - jnp.log(tail), axis=-1)


@dataclass(frozen=True)
class OrderLaw:
    """P(d) for every decoding order: ``orders`` (L!, L) (lexicographic), ``probs`` (L!,), ``error`` (an estimate
    of the largest absolute error of a probability; 0 for closed forms up to roundoff), ``method``."""

    orders: np.ndarray
    probs: np.ndarray
    error: float
    method: str

    def prob(self, order) -> float:
        o = np.asarray(order, dtype=np.int64)
        L = o.size
        rank = 0
        rest = list(range(L))
        for i, v in enumerate(o.tolist()):  # lexicographic rank of the permutation
            j = rest.index(v)
            rank += j * math.factorial(L - 1 - i)
            rest.pop(j)
        return float(self.probs[rank])


def _order_probs_quadrature(schedule, L: int, quad: Quadrature, max_bytes) -> np.ndarray:
    """P(d) for every d by nested integrals over ordered suffixes (module docstring); lexicographic order."""
    den = _densities(schedule, quad)
    phi = (den.f * quad.dtds[:, None]).T  # (L, N): densities in s
    N = phi.shape[1]
    check_size(
        8 * 3 * math.factorial(L) * N,
        f"Nested order integrals for L = {L} ({math.factorial(L)} orders x {N} nodes)",
        max_bytes,
        "Use a coarser rule or the closed form of the polynomial family",
    )
    suffixes = np.arange(L)[:, None]  # (R, 1): the last-decoded position
    H, tot = quad.cumulative(phi)
    H = H + den.bottom[:, None]  # P(T_l <= t) including the mass at t = 0
    tot = tot + den.bottom
    for _ in range(2, L + 1):
        fronts = np.array([[a for a in range(L) if a not in s] for s in suffixes.tolist()])  # (R, L - k + 1)
        nf = fronts.shape[1]
        new = np.concatenate([fronts.reshape(-1, 1), np.repeat(suffixes, nf, axis=0)], axis=1)
        Hs = np.repeat(H, nf, axis=0)
        H, inner = quad.cumulative(phi[fronts.reshape(-1)] * Hs)  # (R', N)
        tot = inner + den.top[fronts.reshape(-1)] * np.repeat(tot, nf)  # + mass at t = 1: front decoded first
        suffixes = new
    if L == 1:
        return np.array([1.0])
    perms = permutations(L)
    lookup = {tuple(p): i for i, p in enumerate(suffixes.tolist())}
    return np.array([tot[lookup[tuple(p)]] for p in perms.tolist()])


def order_probabilities(
    schedule,
    length: int | None = None,
    *,
    method: str = "auto",
    width: float = 1.0,
    order: int = 16,
    error_estimate: bool = True,
    max_bytes: float | None = None,
) -> OrderLaw:
    """P(d) for every decoding order d of a per-position schedule (Garg2025; module docstring).

    ``method``: "plackett_luce" (closed form; polynomial family only), "quadrature" (nested integrals, any
    schedule; ``error`` from panel widths h and h/2) or "auto" (closed form where it exists).
    A shared Schedule needs ``length``.
    """
    require_x64("order_probabilities")
    schedule = as_per_position(schedule, length)
    L = schedule.length
    _check_order_length(L, "order_probabilities")
    if method == "auto":
        method = "plackett_luce" if isinstance(schedule, PolynomialFamily) else "quadrature"
    perms = permutations(L)
    if method == "plackett_luce":
        if not isinstance(schedule, PolynomialFamily):
            raise ValueError("method='plackett_luce' needs a PolynomialFamily (alpha = 1 - t**w); use 'quadrature'.")
        p = np.exp(np.asarray(plackett_luce_log_probs(schedule.weights, perms), dtype=np.float64))
        return OrderLaw(perms, p, float(64 * np.finfo(float).eps), method)
    if method != "quadrature":
        raise ValueError(f"method must be 'auto', 'plackett_luce' or 'quadrature', got {method!r}.")
    p = _order_probs_quadrature(schedule, L, quadrature(width, order), max_bytes)
    err = 0.0
    if error_estimate:
        p2 = _order_probs_quadrature(schedule, L, quadrature(width / 2, order), max_bytes)
        err = float(np.max(np.abs(p2 - p)))
        p = p2
    return OrderLaw(perms, p, err, method)


def pairwise_order_probabilities(schedule, length: int | None = None, *, width: float = 1.0, order: int = 16):
    """(L, L) matrix of P(l decoded before l') = P(T_l > T_l') = int (-alpha'_{t,l}) (1 - alpha_{t,l'}) dt.

    Works at any L. Polynomial family: w_l / (w_l + w_l') (closed form). Diagonal 0.
    """
    require_x64("pairwise_order_probabilities")
    schedule = as_per_position(schedule, length)
    if isinstance(schedule, PolynomialFamily):
        w = np.asarray(schedule.weights, dtype=np.float64)
        M = w[:, None] / (w[:, None] + w[None, :])
    else:
        quad = quadrature(width, order)
        den = _densities(schedule, quad)  # om = 1 - alpha = P(T <= t)
        M = np.einsum("nl,nm,n->lm", den.f, den.om, quad.dt) + den.top[:, None] + den.bottom[None, :]
        M = M - np.outer(den.top, den.top) - np.outer(den.bottom, den.bottom)  # no tie counted twice
    np.fill_diagonal(M, 0.0)
    return M


# ================================ exact sums over sequences and visible sets ===========================
def visible_sets(length: int) -> np.ndarray:
    """(2**L, L) bool: row A is the visible set with bit l of A set iff position l is visible (A = sum 2**l)."""
    A = np.arange(2**length)
    return ((A[:, None] >> np.arange(length)[None, :]) & 1).astype(bool)


@dataclass(frozen=True, eq=False)
class Enumeration:
    """Index arrays for exact sums over the support of q and the 2**L visible sets (built once per joint).

    ``tokens`` (X, L) the sequences with q(x) > 0, ``q`` (X,), ``states`` ((V+1)**L, L) every partial state,
    ``state_of`` (X, 2**L) the index of x with only A visible, ``visible`` (2**L, L).
    """

    joint: Joint
    tokens: jax.Array
    q: jax.Array
    states: jax.Array
    state_of: jax.Array
    visible: np.ndarray

    @property
    def length(self) -> int:
        return self.joint.length

    @property
    def vocab_size(self) -> int:
        return self.joint.vocab_size

    def log_probs(self, denoiser, chunk: int = 1 << 14) -> jax.Array:
        """log p(v | z) of ``denoiser`` at every partial state, ((V+1)**L, L, V) float64."""
        check_denoiser(denoiser, self.vocab_size, self.length)
        p = jnp.concatenate(
            [denoiser.marginals(self.states[i : i + chunk]) for i in range(0, self.states.shape[0], chunk)]
        )
        if p.dtype != jnp.float64:
            raise TypeError(f"denoiser.marginals returned {p.dtype}; exact losses need float64 marginals.")
        return jnp.log(p)


def enumeration(joint: Joint, max_bytes: float | None = None) -> Enumeration:
    """Prepare exact sums over the support of ``joint`` and all visible sets (cost X * 2**L * L, X = |support|)."""
    require_x64("enumeration")
    if not isinstance(joint, Joint):
        raise TypeError(f"enumeration needs a theory.joint.Joint, got {type(joint).__name__}.")
    V, L = joint.vocab_size, joint.length
    probs = np.asarray(joint.probs)
    support = np.nonzero(probs > 0)[0]
    X = support.size
    check_size(
        8 * max(X * 2**L * L, (V + 1) ** L * L * V),
        f"Exact loss tables for V = {V}, L = {L} ({X} sequences x 2**L visible sets x L positions)",
        max_bytes,
        "Use theory.elbo.mc_evaluation (Monte Carlo) for larger instances",
    )
    x = all_sequences(V, L)[support]  # (X, L)
    vis = visible_sets(L)
    states = np.where(vis[None, :, :], x[:, None, :], V)  # (X, 2**L, L)
    state_of = states @ strides(V + 1, L)
    return Enumeration(
        joint,
        jnp.asarray(x),
        jnp.asarray(probs[support]),
        jnp.asarray(all_states(V, L)),
        jnp.asarray(state_of),
        vis,
    )


def sequence_nll(enum: Enumeration, log_probs):
    """-log p(x_l | x_A) for every supported x, visible set A and position l not in A (0 for l in A), (X, 2**L, L).

    ``log_probs`` ((V+1)**L, L, V): the model's log-probabilities at every partial state (JAX; differentiable).
    """
    return _nll_from(log_probs, enum.tokens, enum.state_of, jnp.asarray(enum.visible))


def _nll_from(log_probs, tokens, state_of, visible):
    lp = log_probs[state_of]  # (X, 2**L, L, V)
    tok = jnp.broadcast_to(tokens[:, None, :, None], lp.shape[:-1] + (1,))
    nll = -jnp.take_along_axis(lp, tok, axis=-1)[..., 0]
    return jnp.where(visible[None], 0.0, nll)


def loss_table_from_log_probs(enum: Enumeration, log_probs):
    """G[A, l] = E_{x~q}[-log p(x_l | x_A)] (0 for l in A), (2**L, L) (JAX; differentiable in log_probs)."""
    return jnp.einsum("x,xal->al", enum.q, sequence_nll(enum, log_probs))


@dataclass(frozen=True, eq=False)
class LossTable:
    """The conditional loss table of a denoiser against a joint: ``table`` (2**L, L) G[A, l] (nats), ``nll``
    (X, 2**L, L) per supported sequence, ``enum`` the Enumeration."""

    table: np.ndarray
    nll: np.ndarray
    enum: Enumeration

    @property
    def length(self) -> int:
        return self.enum.length


def loss_table(joint: Joint, denoiser=None, enum: Enumeration | None = None) -> LossTable:
    """G[A, l] = E_q[-log p(x_l | x_A)] of ``denoiser`` (default: the exact one) against ``joint``, exactly."""
    enum = enumeration(joint) if enum is None else enum
    denoiser = joint.denoiser() if denoiser is None else denoiser
    nll = np.asarray(sequence_nll(enum, enum.log_probs(denoiser)), dtype=np.float64)
    q = np.asarray(enum.q)
    return LossTable(np.einsum("x,xal->al", q, nll), nll, enum)


def _table(obj) -> np.ndarray:
    G = obj.table if isinstance(obj, LossTable) else np.asarray(obj, dtype=np.float64)
    L = G.shape[-1]
    if G.shape != (2**L, L):
        raise ValueError(f"a conditional loss table has shape (2**L, L), got {G.shape}.")
    return G


# ================================ AR losses, the ELBO, the decomposition ==============================
def prefix_sets(orders) -> np.ndarray:
    """Visible set (bitmask) before each step of each decoding order, (..., L): sum_{j < i} 2**d(j)."""
    o = np.asarray(orders, dtype=np.int64)
    bits = np.left_shift(1, o)
    return np.cumsum(bits, axis=-1) - bits


def ar_terms(table, orders) -> np.ndarray:
    """Per-step AR losses G[d(<i), d(i)] of decoding orders (n, L) -> (n, L) (nats)."""
    G = _table(table)
    o = np.asarray(orders, dtype=np.int64)
    return G[prefix_sets(o), o]


@dataclass(frozen=True)
class ARLoss:
    """AR loss of one decoding order: ``total`` = sum of ``terms`` (L,),
    terms[i] = E_q[-log p(x_{d(i)} | x_{d(<i)})]."""

    total: float
    terms: np.ndarray


def ar_loss(joint: Joint, denoiser, order) -> ARLoss:
    """The autoregressive loss of ``denoiser`` under the decoding order ``order`` (d(0) decoded first), exactly."""
    o = np.asarray(order, dtype=np.int64)
    if sorted(o.tolist()) != list(range(joint.length)):
        raise ValueError(f"order must be a permutation of 0..{joint.length - 1}, got {o.tolist()}.")
    terms = ar_terms(loss_table(joint, denoiser), o[None])[0]
    return ARLoss(float(terms.sum()), terms)


def _exclusive_products(base):
    """prod_{j != l} base[..., j] for every l, (..., L), without division."""
    ones = np.ones(base.shape[:-1] + (1,))
    left = np.cumprod(np.concatenate([ones, base[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, base[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return left * right


def _time_weights(a, f, om, vis):
    """(N, 2**L, L): (-alpha'_l) prod_{j in A} alpha_j prod_{j not in A, j != l} (1 - alpha_j), 0 for l in A."""
    base = np.where(vis[None], a[:, None, :], om[:, None, :])  # (N, 2**L, L)
    return np.where(vis[None], 0.0, f[:, None, :] * _exclusive_products(base))


def _endpoint_weights(den: Densities, L: int) -> np.ndarray:
    """The endpoint masses' share of W: top_l at A = {} (decoded first), bottom_l at A = all but l (decoded last)."""
    W = np.zeros((2**L, L))
    W[0] += den.top
    full = 2**L - 1
    for l in range(L):
        W[full - (1 << l), l] += den.bottom[l]
    return W


def time_loss(table, schedule, t) -> np.ndarray:
    """The integrand of Garg2025's Eq. 8 at times t (n,), summed exactly over masks and sequences:
    E_{x, z_t}[ sum_{l masked} -alpha'_{t,l}/(1 - alpha_{t,l}) (-log p(x_l | z_t)) ] (nats per unit time)."""
    G = _table(table)
    L = G.shape[-1]
    schedule = as_per_position(schedule, L)
    a, d = _alphas(schedule, np.asarray(t, dtype=np.float64).reshape(-1))
    wts = _time_weights(a, -d, 1.0 - a, visible_sets(L))
    return np.einsum("nal,al->n", wts, G)


def elbo_weights(schedule, length: int | None = None, *, width: float = 1.0, order: int = 16) -> np.ndarray:
    """W[A, l] = P(the positions decoded before l are exactly A), (2**L, L) (module docstring).

    Closed form for the polynomial family (subset dynamic programme), quadrature otherwise.
    E_q ELBO = sum_{A, l} W[A, l] G[A, l].
    """
    schedule = as_per_position(schedule, length)
    if isinstance(schedule, PolynomialFamily):
        return np.asarray(plackett_luce_weights(schedule.weights), dtype=np.float64)
    quad = quadrature(width, order)
    den = _densities(schedule, quad)
    L = schedule.length
    return np.einsum(
        "n,nal->al", quad.dt, _time_weights(den.alpha, den.f, den.om, visible_sets(L))
    ) + _endpoint_weights(den, L)


@dataclass(frozen=True)
class ELBO:
    """E_q of Garg2025's Eq. 8 (nats per sequence) and the change between panel widths h and h/2 (``error``)."""

    value: float
    error: float


def elbo_quadrature(table, schedule, *, width: float = 1.0, order: int = 16) -> ELBO:
    """E_q ELBO = int_0^1 time_loss(t) dt by the panel rule on t = exp(-exp(-s)) (module docstring)."""
    G = _table(table)
    L = G.shape[-1]
    schedule = as_per_position(schedule, L)
    vals = []
    for h in (width, width / 2):
        quad = quadrature(h, order)
        den = _densities(schedule, quad)
        integral = quad.dt @ np.einsum("nal,al->n", _time_weights(den.alpha, den.f, den.om, visible_sets(L)), G)
        vals.append(float(integral + np.sum(_endpoint_weights(den, L) * G)))
    return ELBO(vals[1], abs(vals[1] - vals[0]))


def elbo(joint: Joint, denoiser, schedule, **kw) -> ELBO:
    """The continuous-time ELBO (nats per sequence) of a time-independent ``denoiser`` under a per-position (or
    shared) schedule, by quadrature over t with exact sums over masks and sequences."""
    return elbo_quadrature(loss_table(joint, denoiser), schedule, **kw)


def radd_loss(table) -> float:
    """RADD / any-order form: sum_{k=1}^L E_{|M| = k}[(1/k) sum_{i in M} -log p(x_i | x_{M^c})], M uniform of size k."""
    G = _table(table)
    L = G.shape[-1]
    full = 2**L - 1
    total = 0.0
    for k in range(1, L + 1):
        s = 0.0
        for M in itertools.combinations(range(L), k):
            A = full - sum(1 << i for i in M)
            s += sum(G[A, i] for i in M) / k
        total += s / math.comb(L, k)
    return float(total)


@dataclass(frozen=True)
class ARDecomposition:
    """Both sides of Garg2025's Prop. 3.1 and its per-order terms.

    ``elbo`` (quadrature, with ``elbo_error``) = ``expected_ar`` = sum_d ``order_probs``[d] ``ar_losses``[d];
    ``orders`` (L!, L) decoding orders, ``terms`` (L!, L) per-step losses, ``order_error`` the order law's error.
    """

    elbo: float
    elbo_error: float
    expected_ar: float
    orders: np.ndarray
    order_probs: np.ndarray
    order_error: float
    ar_losses: np.ndarray
    terms: np.ndarray
    method: str


def ar_decomposition(joint: Joint, denoiser, schedule, *, table: LossTable | None = None, **kw) -> ARDecomposition:
    """Garg2025, Prop. 3.1: E_q ELBO (quadrature over t, exact sums over masks) = sum_d P(d) AR(d), both sides."""
    lt = loss_table(joint, denoiser) if table is None else table
    schedule = as_per_position(schedule, joint.length)
    e = elbo_quadrature(lt, schedule, **kw)
    law = order_probabilities(schedule, **kw)
    terms = ar_terms(lt, law.orders)
    ar = terms.sum(1)
    return ARDecomposition(
        e.value, e.error, float(law.probs @ ar), law.orders, law.probs, law.error, ar, terms, law.method
    )


# ================================ polynomial family: closed forms and gradients ======================
@lru_cache(maxsize=16)
def _subset_levels(L: int):
    """For k = 1..L: (child, parent, added position) index arrays of A = parent + {a}, |A| = k."""
    vis = visible_sets(L)
    size = vis.sum(1)
    out = []
    for k in range(1, L + 1):
        ch, pa, ad = [], [], []
        for A in np.nonzero(size == k)[0]:
            for a in np.nonzero(vis[A])[0]:
                ch.append(A)
                pa.append(A - (1 << a))
                ad.append(a)
        out.append((np.array(ch), np.array(pa), np.array(ad)))
    return tuple(out)


@jax.jit
def plackett_luce_weights(weights):
    """W[A, l] for alpha_{t,l} = 1 - t**w_l in closed form (JAX, differentiable in w), (2**L, L).

    Q(A) = P(the first |A| decoded positions are A) by Q(A) = sum_{a in A} Q(A - a) w_a / (w_total - w(A - a)),
    then W[A, l] = Q(A) w_l / (w_total - w(A)) for l not in A (module docstring).
    """
    w = jnp.asarray(weights)
    L = w.shape[0]
    vis = jnp.asarray(visible_sets(L), dtype=w.dtype)
    wsum = vis @ w  # (2**L,) w(A)
    rest = jnp.sum(w) - wsum  # w_total - w(A)
    Q = jnp.zeros(2**L, dtype=w.dtype).at[0].set(1.0)
    for ch, pa, ad in _subset_levels(L):
        Q = Q.at[ch].add(Q[pa] * w[ad] / rest[pa])
    safe = jnp.where(rest > 0, rest, 1.0)
    return jnp.where(vis > 0, 0.0, Q[:, None] * w[None, :] / safe[:, None])


def plackett_luce_elbo(table, weights):
    """E_q ELBO for alpha_{t,l} = 1 - t**w_l: sum_{A, l} W_w[A, l] G[A, l] (JAX; ``jax.grad`` gives the exact
    gradient of the NLL bound with respect to w; ``table`` may be traced too)."""
    G = table.table if isinstance(table, LossTable) else table
    return _pl_elbo(jnp.asarray(G), jnp.asarray(weights))


@jax.jit
def _pl_elbo(G, w):
    return jnp.sum(plackett_luce_weights(w) * G)


_pl_elbo_grad = jax.jit(jax.grad(_pl_elbo, argnums=1))


def nll_bound_gradient(table, weights) -> np.ndarray:
    """Exact d ELBO / d w (L,) for the polynomial family."""
    return np.asarray(_pl_elbo_grad(jnp.asarray(_table(table)), jnp.asarray(weights, dtype=jnp.float64)))


def _sample_support(key, enum_q, num):
    return jax.random.choice(key, enum_q.shape[0], (num,), p=enum_q)


def rloo_order_gradient(key, table: LossTable, weights, *, num: int, samples: int = 4):
    """RLOO estimates of d ELBO / d w over decoding orders (Prop. 3.1 form), one per x: (num, L) and the losses.

    For each of ``num`` draws x ~ q: K = ``samples`` orders d_k ~ PL(w), AR_k = sum_i -log p(x_{d_k(i)} | x_{d_k(<i)}),
    g = (1/K) sum_k (AR_k - mean_{j != k} AR_j) grad_w log PL(d_k). Unbiased; bounded (finite variance).
    Returns (g (num, L), mean AR loss (num,)).
    """
    if samples < 2:
        raise ValueError(f"RLOO needs samples >= 2 (leave-one-out baseline), got {samples}.")
    return _rloo_order_impl(key, jnp.asarray(table.nll), table.enum.q, jnp.asarray(weights), int(num), int(samples))


def _loo(ell):
    K = ell.shape[-1]
    return ell - (jnp.sum(ell, axis=-1, keepdims=True) - ell) / (K - 1)


@partial(jax.jit, static_argnums=(4, 5))
def _rloo_order_impl(key, nll, q, w, num, K):
    kx, ko = jax.random.split(key)
    xi = _sample_support(kx, q, num)  # (num,)
    L = w.shape[0]
    u = jax.random.uniform(ko, (num, K, L), dtype=w.dtype, minval=jnp.finfo(w.dtype).tiny)
    orders = jnp.argsort(-jnp.log(u) / w, axis=-1)  # (num, K, L) decoding orders ~ PL(w)
    bits = jnp.left_shift(1, orders)
    pref = jnp.cumsum(bits, axis=-1) - bits
    ell = nll[xi[:, None, None], pref, orders].sum(-1)  # (num, K)
    score = jax.vmap(jax.vmap(jax.grad(plackett_luce_log_probs), in_axes=(None, 0)), in_axes=(None, 0))(w, orders)
    g = jnp.mean(_loo(ell)[..., None] * score, axis=1)  # (num, L)
    return g, ell.mean(1)


def rloo_mask_gradient(key, table: LossTable, weights, *, num: int, samples: int = 4, t_power: float | None = None):
    """RLOO estimates of d ELBO / d w in the MDM (mask) form, one per x: (num, L) and the per-x loss estimates.

    For each x ~ q: t ~ Beta(a, 1) (a = ``t_power``, default min(w)/4, so that moments up to the fourth are
    finite: E|ell|**k < inf iff a < min(w)/(k-1); importance weight 1 / (a t**(a-1))),
    K masks z_k with position l masked with probability t**w_l, ell_k = iw sum_{l masked} (w_l / t) nll_l(z_k),
    g = (1/K) sum_k [d ell_k/dw + (ell_k - mean_{j != k} ell_j) d log P(z_k | t)/dw]  (module docstring).
    Unbiased; finite variance iff a < min_l w_l.
    """
    if samples < 2:
        raise ValueError(f"RLOO needs samples >= 2 (leave-one-out baseline), got {samples}.")
    w = jnp.asarray(weights)
    a = float(np.min(np.asarray(w)) / 4) if t_power is None else float(t_power)
    if not a > 0:
        raise ValueError(f"t_power must be > 0, got {a}.")
    return _rloo_mask_impl(key, jnp.asarray(table.nll), table.enum.q, w, jnp.float64(a), int(num), int(samples))


@partial(jax.jit, static_argnums=(5, 6))
def _rloo_mask_impl(key, nll, q, w, a, num, K):
    kx, kt, km = jax.random.split(key, 3)
    xi = _sample_support(kx, q, num)
    L = w.shape[0]
    u = jax.random.uniform(kt, (num,), dtype=w.dtype, minval=jnp.finfo(w.dtype).tiny)
    logt = jnp.log(u) / a  # t ~ Beta(a, 1)
    iw_t = 1.0 / (a * u)  # iw / t = 1 / (a t**a) = 1 / (a u): finite even where t underflows (small a)
    pm = jnp.exp(w[None, :] * logt[:, None])  # (num, L) P(masked) = t**w
    masked = jax.random.uniform(km, (num, K, L), dtype=w.dtype) < pm[:, None, :]
    A = jnp.sum(jnp.where(masked, 0, jnp.left_shift(1, jnp.arange(L))), axis=-1)  # visible-set bitmask (num, K)
    nl = nll[xi[:, None], A]  # (num, K, L)
    dell = iw_t[:, None, None] * jnp.where(masked, nl, 0.0)  # d ell / d w_l
    ell = jnp.sum(w * dell, axis=-1)  # (num, K)
    om = -jnp.expm1(w[None, :] * logt[:, None])  # 1 - t**w
    unm_score = jnp.where(om > 0, -pm * logt[:, None] / jnp.where(om > 0, om, 1.0), 0.0)  # (num, L)
    score = jnp.where(masked, logt[:, None, None], unm_score[:, None, :])  # d log P(z | t) / d w
    g = jnp.mean(dell + _loo(ell)[..., None] * score, axis=1)
    return g, ell.mean(1)


# ================================ the learned order as a sampling policy ==============================
def _first_set_probs(w: np.ndarray, pos: np.ndarray, count: int):
    """Under PL(w) restricted to ``pos``: every subset of size ``count`` and P(it is the first ``count`` decoded)."""
    total = w[pos].sum()
    sets, probs = [], []
    for S in itertools.combinations(pos.tolist(), count):
        p = 0.0
        for perm in itertools.permutations(S):
            r, acc = total, 1.0
            for v in perm:
                acc *= w[v] / r
                r -= w[v]
            p += acc
        sets.append(S)
        probs.append(p)
    return sets, np.array(probs)


@register_policy
@dataclass(frozen=True)
class PlackettLuceOrder:
    """Reveal positions in a decoding order drawn once per sample from Plackett-Luce(``weights``): the order law
    of the schedule alpha_{t,l} = 1 - t**w_l (Garg2025's learned order used as a sampling policy).

    At each step the next ``count`` positions of the order are revealed. PL is Markov in the revealed set
    (given the first k positions, in any internal order, the rest is PL on the remaining ones), so the
    per-step ``select`` (fresh exponential-race times over the masked positions) and the exact
    ``reveal_distribution`` describe the same law as the one-shot ``order``.
    """

    weights: tuple

    uses_count = True
    deterministic = False

    def __post_init__(self):
        w = tuple(float(x) for x in self.weights)
        if not w or not all(np.isfinite(x) and x > 0 for x in w):
            raise ValueError(f"PlackettLuceOrder weights must be finite and > 0, got {self.weights}.")
        object.__setattr__(self, "weights", w)

    def _log_times(self, key, length: int):
        if length != len(self.weights):
            raise ValueError(f"PlackettLuceOrder was built for L = {len(self.weights)}, used with L = {length}.")
        u = jax.random.uniform(key, (length,), dtype=jnp.float64, minval=jnp.finfo(jnp.float64).tiny)
        return jnp.log(u) / jnp.asarray(self.weights)  # log T_l, T_l ~ Beta(w_l, 1)

    def select(self, key, state, marginals, count):
        return reveal_by_score(-self._log_times(key, state.shape[-1]), state == marginals.shape[-1], count)

    def order(self, key, length: int):
        return jnp.argsort(-self._log_times(key, length), stable=True).astype(jnp.int32)

    def reveal_distribution(self, states, marginals, counts):
        states = np.asarray(states)
        V = np.asarray(marginals).shape[-1]
        B, L = states.shape
        if L != len(self.weights):
            raise ValueError(f"PlackettLuceOrder was built for L = {len(self.weights)}, used with L = {L}.")
        w = np.asarray(self.weights)
        masked = states == V
        c = np.minimum(np.asarray(counts), masked.sum(1))
        code = masked @ (1 << np.arange(L)) * (L + 1) + c
        parents, subsets, weights = [], [], []
        for cd in np.unique(code):
            rows = np.nonzero(code == cd)[0]
            pos = np.nonzero(masked[rows[0]])[0]
            sets, probs = _first_set_probs(w, pos, int(c[rows[0]]))
            sub = np.zeros((len(sets), L), dtype=bool)
            for i, S in enumerate(sets):
                sub[i, list(S)] = True
            parents.append(np.repeat(rows, len(sets)))
            subsets.append(np.tile(sub, (len(rows), 1)))
            weights.append(np.tile(probs, len(rows)))
        return np.concatenate(parents), np.concatenate(subsets), np.concatenate(weights)


def order_mixture_law(joint_or_denoiser, law: OrderLaw, steps=None, **kw):
    """Exact law of the sampler that draws one decoding order d ~ ``law`` per sample and reveals it ``count`` tokens
    at a time: sum_d P(d) exact_law(FixedOrder(d)) (any order law, Markov or not). Returns a theory.sampling.Law."""
    from .policies import FixedOrder
    from .sampling import Law, exact_law

    probs, nfe, run = 0.0, 0.0, 0
    for d, p in zip(law.orders.tolist(), law.probs.tolist()):
        if p == 0.0:
            continue
        r = exact_law(joint_or_denoiser, FixedOrder(tuple(d)), steps, **kw)
        probs = probs + p * np.asarray(r.probs)
        nfe += p * r.expected_nfe
        run = max(run, r.steps_run)
    return Law(jnp.asarray(probs), nfe, run)


# ================================ joint learning of the order and the denoiser ========================
def rloo_order_surrogate(key, nll, q, weights, *, num: int, samples: int = 4):
    """A scalar whose gradient is the RLOO estimator over decoding orders (for ``weights``) and an unbiased
    estimate of the AR-loss gradient (for whatever ``nll`` depends on, e.g. a network's parameters).

    ``nll`` (X, 2**L, L) per-sequence conditional losses (:func:`sequence_nll`), ``q`` (X,) their
    probabilities. Draws the same x, orders as :func:`rloo_order_gradient` for the same key:
    surrogate = mean_k AR_k + mean_k stop_grad(AR_k - mean_{j != k} AR_j) log PL(d_k; w).
    Returns (surrogate, mean AR loss of the draws).
    """
    if samples < 2:
        raise ValueError(f"RLOO needs samples >= 2 (leave-one-out baseline), got {samples}.")
    return _rloo_order_surrogate(key, nll, q, weights, int(num), int(samples))


@partial(jax.jit, static_argnums=(4, 5))
def _rloo_order_surrogate(key, nll, q, w, num, K):
    kx, ko = jax.random.split(key)
    xi = _sample_support(kx, q, num)
    L = w.shape[0]
    wd = jax.lax.stop_gradient(w)
    u = jax.random.uniform(ko, (num, K, L), dtype=wd.dtype, minval=jnp.finfo(wd.dtype).tiny)
    orders = jnp.argsort(-jnp.log(u) / wd, axis=-1)  # (num, K, L) ~ PL(w)
    bits = jnp.left_shift(1, orders)
    ell = nll[xi[:, None, None], jnp.cumsum(bits, axis=-1) - bits, orders].sum(-1)  # (num, K)
    adv = jax.lax.stop_gradient(_loo(ell))
    return jnp.mean(ell) + jnp.mean(adv * plackett_luce_log_probs(w, orders)), jax.lax.stop_gradient(jnp.mean(ell))


def rloo_mask_surrogate(key, nll, q, weights, *, num: int, samples: int = 4, t_power: float | None = None):
    """The MDM-form counterpart of :func:`rloo_order_surrogate` (same draws as :func:`rloo_mask_gradient`):
    surrogate = mean_k ell_k + mean_k stop_grad(ell_k - mean_{j != k} ell_j) log P(z_k | t; w), with
    ell_k = iw(t) sum_{l masked} (w_l / t) nll_l(z_k) (module docstring). Returns (surrogate, mean ell)."""
    if samples < 2:
        raise ValueError(f"RLOO needs samples >= 2 (leave-one-out baseline), got {samples}.")
    w = jnp.asarray(weights)
    if t_power is None:
        a = jnp.min(jax.lax.stop_gradient(w)) / 4
    else:
        a = jnp.asarray(float(t_power))
    return _rloo_mask_surrogate(key, nll, q, w, a, int(num), int(samples))


@partial(jax.jit, static_argnums=(5, 6))
def _rloo_mask_surrogate(key, nll, q, w, a, num, K):
    kx, kt, km = jax.random.split(key, 3)
    xi = _sample_support(kx, q, num)
    L = w.shape[0]
    wd = jax.lax.stop_gradient(w)
    u = jax.random.uniform(kt, (num,), dtype=wd.dtype, minval=jnp.finfo(wd.dtype).tiny)
    logt = jnp.log(u) / a  # t ~ Beta(a, 1)
    iw_t = 1.0 / (a * u)  # importance weight / t
    pm = jnp.exp(wd[None, :] * logt[:, None])  # P(masked) = t**w
    masked = jax.random.uniform(km, (num, K, L), dtype=wd.dtype) < pm[:, None, :]
    A = jnp.sum(jnp.where(masked, 0, jnp.left_shift(1, jnp.arange(L))), axis=-1)
    nl = nll[xi[:, None], A]  # (num, K, L)
    ell = iw_t[:, None] * jnp.sum(w * jnp.where(masked, nl, 0.0), axis=-1)  # (num, K)
    wl = w[None, None, :] * logt[:, None, None]
    om = -jnp.expm1(wl)  # 1 - t**w
    logp = jnp.sum(jnp.where(masked, wl, jnp.log(jnp.where(om > 0, om, 1.0))), axis=-1)  # log P(z | t; w)
    adv = jax.lax.stop_gradient(_loo(ell))
    return jnp.mean(ell) + jnp.mean(adv * logp), jax.lax.stop_gradient(jnp.mean(ell))


FIT_METHODS = ("exact", "rloo_orders", "rloo_masks")


@dataclass
class OrderFit:
    """Result of :func:`fit_order`: final ``params`` and ``log_weights`` (theta, w = exp(theta)), and ``history``
    (one dict per recorded step: step, elbo, uniform_elbo, weights, and gradient-variance columns)."""

    params: object
    log_weights: np.ndarray
    history: list


def gradient_variances(key, table: LossTable, weights, *, num: int, samples: int = 4) -> dict:
    """Per-sample variance of the two RLOO estimators of d ELBO / d w (one x, ``samples`` draws each), summed
    over the L coordinates, next to the squared norm of the exact gradient and each estimator's largest
    |mean - exact| in standard errors. Variance of a batch-mean estimate of B samples: divide by B."""
    g = nll_bound_gradient(table, weights)
    out = {"grad_norm2": float(g @ g)}
    for name, fn in (("orders", rloo_order_gradient), ("masks", rloo_mask_gradient)):
        k = jax.random.fold_in(key, len(name))
        est = np.asarray(fn(k, table, weights, num=num, samples=samples)[0])
        var = est.var(0, ddof=1)
        out[f"grad_var_{name}"] = float(var.sum())
        out[f"grad_z_{name}"] = float(np.max(np.abs(est.mean(0) - g) / np.sqrt(var / num + 1e-300)))
    return out


def fit_order(
    log_probs_fn: Callable,
    params,
    enum: Enumeration,
    *,
    key,
    method: str = "exact",
    steps: int = 600,
    lr: float = 0.03,
    batch: int = 64,
    samples: int = 4,
    log_weights=None,
    learn_weights: bool = True,
    record: tuple = (),
    variance_num: int = 0,
    progress: Callable | None = None,
) -> OrderFit:
    """Learn Garg2025's order exponents w = exp(theta) jointly with a denoiser (Adam on both).

    ``log_probs_fn(params, states (S, L)) -> (S, L, V)`` log p(v | z) (the model; a module-level function, so
    that the jitted step is cached; called with every partial state ``enum.states``); ``params`` a pytree of
    float arrays (e.g. an equinox network). Objective: the NLL bound E_q ELBO under
    alpha_{t,l} = 1 - t**w_l, i.e. sum_d PL_w(d) AR(d) (Prop. 3.1). ``method``:

    * "exact": the exact objective and its gradient (closed-form Plackett-Luce weights, all sums exact);
    * "rloo_orders": ``batch`` x ~ q, ``samples`` orders each, :func:`rloo_order_surrogate`;
    * "rloo_masks": the MDM form, :func:`rloo_mask_surrogate` (the paper's estimator, our reading).

    ``learn_weights=False`` keeps theta fixed (theta = 0: the uniform-order baseline). At each step in
    ``record`` (0 = before training) the exact bound and the uniform-order bound of the current model are
    recorded, and with ``variance_num`` > 0 the RLOO estimators' variances (:func:`gradient_variances`).
    """
    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {FIT_METHODS}, got {method!r}.")
    L = enum.length
    theta = jnp.zeros(L) if log_weights is None else jnp.asarray(log_weights, dtype=jnp.float64)
    if theta.shape != (L,):
        raise ValueError(f"log_weights must have shape (L,) = ({L},), got {theta.shape}.")
    opt = _adam(float(lr))
    state = opt.init((params, theta))
    step_fn = _fit_step(opt, log_probs_fn, method, int(batch), int(samples))
    learn = jnp.float64(1.0 if learn_weights else 0.0)
    q = enum.q
    idx = (enum.states, enum.tokens, enum.state_of, jnp.asarray(enum.visible))
    history = []
    rec = set(int(r) for r in record)

    def _record(i, p, th):
        w = jnp.exp(th)
        nll, G, e, u = _bounds(log_probs_fn, p, w, q, idx)
        row = {"step": i, "elbo": float(e), "uniform_elbo": float(u), "weights": np.asarray(w, dtype=np.float64)}
        if variance_num:
            lt = LossTable(np.asarray(G, dtype=np.float64), np.asarray(nll, dtype=np.float64), enum)
            row.update(gradient_variances(jax.random.fold_in(key, 10**6 + i), lt, w, num=variance_num, samples=samples))
        history.append(row)

    if 0 in rec:
        _record(0, params, theta)
    for i in range(1, int(steps) + 1):
        params, theta, state = step_fn(params, theta, state, jax.random.fold_in(key, i), q, idx, learn)
        if i in rec:
            _record(i, params, theta)
        if progress is not None:
            progress(1)
    return OrderFit(params, np.asarray(theta, dtype=np.float64), history)


@partial(jax.jit, static_argnums=0)
def _bounds(log_probs_fn, p, w, q, idx):
    """(nll (X, 2**L, L), G (2**L, L), the bound at w, the uniform-order bound) of a model (jitted)."""
    nll = _nll_from(log_probs_fn(p, idx[0]), *idx[1:])
    G = jnp.einsum("x,xal->al", q, nll)
    return nll, G, _pl_elbo(G, w), _pl_elbo(G, jnp.ones_like(w))


@lru_cache(maxsize=32)
def _adam(lr: float):
    """One optimizer object per learning rate, so that :func:`_fit_step`'s cache hits across runs."""
    import optax

    return optax.adam(lr)


@lru_cache(maxsize=32)
def _fit_step(opt, log_probs_fn, method, batch, K):
    """The jitted Adam step of :func:`fit_order` (cached per optimizer, model function and method; ``learn``
    (0. or 1.) multiplies theta's gradient, so the fixed-order baseline shares the compiled step: Adam leaves a
    parameter whose gradients are all 0 exactly where it is)."""
    import optax

    def objective(p, th, key, q, idx):
        w = jnp.exp(th)
        nll = _nll_from(log_probs_fn(p, idx[0]), *idx[1:])
        if method == "exact":
            return _pl_elbo(jnp.einsum("x,xal->al", q, nll), w)
        if method == "rloo_orders":
            return _rloo_order_surrogate(key, nll, q, w, batch, K)[0]
        a = jnp.min(jax.lax.stop_gradient(w)) / 4
        return _rloo_mask_surrogate(key, nll, q, w, a, batch, K)[0]

    @jax.jit
    def step(p, th, state, key, q, idx, learn):
        gp, gth = jax.grad(objective, argnums=(0, 1))(p, th, key, q, idx)
        updates, state = opt.update((gp, gth * learn), state, (p, th))
        p, th = optax.apply_updates((p, th), updates)
        return p, th, state

    return step
