"""Chen2025 (Masked Diffusion Models as Energy Minimization): kinetic, conditional-kinetic and geodesic
energies of a masked diffusion path, computed by explicit sums over the (V+1)**L partial states.

**Time.** Chen2025 runs time tau from mask (tau = 0) to data (tau = 1) with alpha_C(tau) = fraction
unmasked, alpha_C(0) = 0, alpha_C(1) = 1 — the reverse of :mod:`theory.schedules`. Everything here is in
Chen's time; a toolkit :class:`~theory.schedules.Schedule` is converted by the one conversion of
:mod:`theory.schedules` (alpha_C(tau) = alpha(1 - tau), :func:`theory.schedules.chen_alpha`). A weight
schedule gamma (:class:`theory.schedules.Weight`: increasing, gamma(0) = 0, gamma(1) = 1) enters every
energy as 1 / gamma'(tau).

**Paths and rates** (papers.md, Chen2025 [paper, partly reconstructed]). For data q over V**L:

* marginal path p_tau(z) = q(visible part of z) alpha^k (1 - alpha)^(L - k), k = #visible tokens of z
  (each token is visible independently with probability alpha_C(tau)); q(visible part) is the cylinder sum
  C[z] of :mod:`theory.denoiser`;
* unmasking rate, for x = z with the masked position i filled with v:
  Q_tau(z -> x) = sigma_tau p_tau(x) / p_tau(z), sigma_tau = alpha' / alpha, and the ratio is the concrete
  score p_tau(x) / p_tau(z) = alpha / (1 - alpha) q(x_i = v | z) (Ou et al. 2024), so
  Q_tau(z -> x) = alpha' / (1 - alpha) q(x_i = v | z), with q(. | z) the exact denoiser;
* conditional path given data x_1: p_{tau|1}(z | x_1) = prod_i alpha [z_i = x_1,i] + (1 - alpha) [z_i = M];
  conditional rate Q_{tau|1}(z -> x | x_1) = alpha' / (1 - alpha) for filling a mask with its x_1 value;
  averaged over the posterior q(x_1 | z) it is Q_tau (Chen2025 Eq. 6; :func:`averaged_conditional_rates`).

**Energies** [reconstructed in papers.md; implemented as stated there]:

* kinetic E_k = int_0^1 (1/gamma') sum_z sum_{x != z} p_tau(z) Q_tau(z, x)^2 / p_tau(x) dtau;
* conditional kinetic E_c = E_{x_1 ~ q} of the same sum on p_{tau|1}, Q_{tau|1};
* geodesic E_g = c int_0^1 (1/gamma') E_{x_1} sum_i || d/dtau sqrt(p_{tau|1}(. | x_1,i)) ||^2 dtau, the
  square-root (Fisher–Rao) embedding of each token's conditional law (alpha on x_1,i, 1 - alpha on M),
  with c = 4 (:data:`GEODESIC_C`), the value that makes all three agree for one token.

A term with p_tau(z) Q_tau(z, x) = 0 (an impossible state z, or a fill q gives probability 0) is 0: no
mass, no flux. Carried out, the sums give [ours, derived here and checked by the tests]:
with J = int_0^1 alpha'^2 / (alpha (1 - alpha) gamma') dtau (the one-token energy) and
n_q = sum over partial states z with C[z] > 0 of #masked(z),

    E_k = n_q J,   E_c = L 2^(L-1) J,   E_g = L J   (c = 4),

since sum_{x} p(z) Q(z,x)^2 / p(x) = alpha'^2 / (alpha (1 - alpha)) * sum_{masked i, v} q(v | z). So

* E_c / E_g = C_2 = 2^(L-1): Chen2025's constant, reproduced (L = n tokens);
* E_k / E_c = C_1 = n_q / (L 2^(L-1)) (:func:`kinetic_constant`): when q has full support
  n_q = L (V+1)^(L-1) and C_1 = ((V+1)/2)^(L-1), depending only on (L, V) as Chen2025 says; without full
  support C_1 depends on q's support (not on its weights): 1 <= C_1 <= ((V+1)/2)^(L-1), C_1 = 1 exactly for a
  point mass. Chen2025's Fig. 4 targets (V = 2, L = 5): C_1 = 155/80 (A: uniform on {aaaaa, bbbbb}: the
  all-mask state and the 2 (2^5 - 1) masked copies of aaaaa / bbbbb) and 395/80 (B: 2 or 3 a's: every
  partial state but those showing >= 4 equal tokens), against (3/2)^4 = 405/80 for full support.

Every energy is a multiple of J, so all three share their minimisers. Writing alpha = sin^2(phi) (phi the
Fisher–Rao angle, alpha'^2 / (alpha (1 - alpha)) = 4 phi'^2), J = 4 int phi'^2 / gamma' >= 4 (int phi')^2 =
pi^2 by Cauchy–Schwarz, with equality iff phi = (pi/2) gamma: alpha* = sin^2((pi/2) gamma) is optimal for every
gamma (Chen2025), and every schedule is optimal for exactly one weight, gamma = (2/pi) arcsin sqrt(alpha)
(:func:`optimal_path`, :func:`optimal_schedule`, :func:`weight_for`).

**Quadrature.** The integrands can have integrable singularities at tau = 0 and 1 (alpha'^2/(alpha(1-alpha))
and 1/gamma' for Beta weights). :func:`tanh_sinh` never evaluates the end points, gets nodes as exact pairs
(tau, 1 - tau) down to 1e-275 from either end, and reports the achieved error: the difference between the
last two levels plus a power-law estimate of the truncated end intervals. Paths are evaluated in angle form
(phi, pi/2 - phi, phi') so that both ends are resolved; for the built-in schedule families the angle is
written in closed form in Chen's time; other schedules are converted from alpha(t) and lose the ends where
alpha or 1 - alpha round to 0 (those nodes are dropped and their interval enters the error estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from scipy.special import betaln, expit

from . import schedules as sch
from .joint import Joint
from .schedules import Schedule, Weight
from .states import all_states, strides
from .validation import SCALABLE_HINT, check_size, require_x64

#: c of the geodesic energy: the value that makes E_k = E_c = E_g for one token (papers.md: "c fixed so
#: all three agree for one token"); with it the one-token energy is J.
GEODESIC_C = 4.0
#: Minimum of the one-token energy over schedules, for every weight gamma: pi^2 (Cauchy–Schwarz) [ours].
MIN_ENERGY = float(np.pi**2)

_HALF_PI = np.pi / 2


_PAD = sch._GRID  # quadrature nodes are padded to a multiple of the schedules.validate grid (2049): shared compilations


def _padded(fn: Callable, tau, sigma):
    """numpy outputs of ``fn(tau, sigma)`` (an array or a tuple of arrays) evaluated on inputs padded with 1/2 to a
    multiple of 2049 nodes, so that JAX compiles each primitive once for all quadrature levels and grids."""
    tau, sigma = np.asarray(tau, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    n = tau.shape[0]
    size = -(-n // _PAD) * _PAD
    pad = np.full(size - n, 0.5)
    out = fn(jnp.asarray(np.concatenate([tau, pad])), jnp.asarray(np.concatenate([sigma, pad])))
    if isinstance(out, tuple):
        return tuple(np.asarray(o, dtype=np.float64)[:n] for o in out)
    return np.asarray(out, dtype=np.float64)[:n]


# ================================ paths in Chen's time ==================================================
@dataclass(frozen=True, eq=False)
class ChenPath:
    """A mask schedule in Chen2025's time, in angle form: alpha_C(tau) = sin^2 phi(tau), phi: 0 -> pi/2.

    ``angle_fn(tau, sigma) -> (phi, phic)`` with phic = pi/2 - phi computed accurately near tau = 1, and
    ``dangle_fn(tau, sigma) -> phi'(tau)`` (>= 0); sigma = 1 - tau exactly. ``schedule`` is the toolkit
    schedule it came from (or None). ``rel_error_fn(tau, sigma)``, for schedules converted from alpha(t)
    without a closed form in Chen's time, is a first-order estimate of the relative rounding error of
    phi'^2: 2 eps (1 + |alpha_C'| / alpha_C + 1 / (1 - alpha_C)) (t = 1 - tau rounds by eps near the mask end,
    1 - alpha loses digits near the data end). The quadratures drop the end nodes where it exceeds 1e-3 (their
    interval enters the tail estimate) and add sum w |f| rel over the others to their error: expect ~1e-6
    relative accuracy for such schedules, full accuracy for the built-in families and ChenPaths.
    """

    angle_fn: Callable
    dangle_fn: Callable
    name: str
    schedule: Schedule | None = None
    rel_error_fn: Callable | None = None  # (tau, sigma) -> relative rounding error of phi'^2 (converted paths)

    def angles(self, tau, sigma=None):
        return self.angle_fn(*sch._pair(tau, sigma))

    def dangle(self, tau, sigma=None):
        return self.dangle_fn(*sch._pair(tau, sigma))

    def alpha(self, tau, sigma=None):
        """alpha_C(tau) = sin^2 phi: the fraction unmasked at Chen time tau."""
        return jnp.sin(self.angles(tau, sigma)[0]) ** 2

    def masked(self, tau, sigma=None):
        """1 - alpha_C(tau) = sin^2(pi/2 - phi)."""
        return jnp.sin(self.angles(tau, sigma)[1]) ** 2

    def dalpha(self, tau, sigma=None):
        """alpha_C'(tau) = sin(2 phi) phi' = 2 sin(phi) sin(pi/2 - phi) phi'."""
        phi, phic = self.angles(tau, sigma)
        return 2.0 * jnp.sin(phi) * jnp.sin(phic) * self.dangle(tau, sigma)

    def __repr__(self) -> str:
        return f"ChenPath({self.name})"


def _angles_from_alpha(alpha, masked, dalpha):
    """(phi, phic, phi') from alpha, 1 - alpha and alpha' (all accurate): phi = atan2(sqrt a, sqrt(1-a))."""
    ra, rm = jnp.sqrt(alpha), jnp.sqrt(masked)
    return jnp.arctan2(ra, rm), jnp.arctan2(rm, ra), dalpha / (2.0 * ra * rm)


def _alpha_path(name, schedule, amd: Callable) -> ChenPath:
    """A ChenPath from ``amd(tau, sigma) -> (alpha_C, 1 - alpha_C, alpha_C')``."""

    def angle(tau, sigma):
        phi, phic, _ = _angles_from_alpha(*amd(tau, sigma))
        return phi, phic

    def dangle(tau, sigma):
        return _angles_from_alpha(*amd(tau, sigma))[2]

    return ChenPath(angle, dangle, name, schedule)


def _log1m(tau, sigma):
    """log(1 - tau) accurately at both ends."""
    return jnp.where(tau < 0.5, jnp.log1p(-tau), jnp.log(sigma))


def _chen_form(schedule: Schedule) -> Callable | None:
    """(alpha_C, 1 - alpha_C, alpha_C') in Chen's time, in closed form, for the built-in families (None else).

    Same functions as the schedules' alpha(t) at t = 1 - tau, written so that both ends are resolved.
    """
    if not schedule.builtin:
        return None
    name, p = schedule.name, schedule.params
    pi = jnp.pi
    if name == "linear":
        return lambda tau, sigma: (tau, sigma, jnp.ones_like(tau))
    if name == "polynomial":  # alpha = 1 - t^p: alpha_C = 1 - sigma^p, 1 - alpha_C = sigma^p
        k = p["power"]
        return lambda tau, sigma: (
            -jnp.expm1(k * _log1m(tau, sigma)),
            jnp.exp(k * _log1m(tau, sigma)),
            k * jnp.exp((k - 1.0) * _log1m(tau, sigma)),
        )
    if name == "cosine":  # alpha = 1 - sin(pi t/2): alpha_C = 1 - cos(pi tau/2) = 2 sin^2(pi tau/4)
        return lambda tau, sigma: (
            2.0 * jnp.sin(pi * tau / 4) ** 2,
            jnp.sin(pi * sigma / 2),
            (pi / 2) * jnp.sin(pi * tau / 2),
        )
    if name == "chen_sine":  # alpha_C = sin(pi tau/2) = cos(pi sigma/2)
        return lambda tau, sigma: (
            jnp.sin(pi * tau / 2),
            2.0 * jnp.sin(pi * sigma / 4) ** 2,
            (pi / 2) * jnp.sin(pi * sigma / 2),
        )
    if name == "beta_cdf":  # alpha = 1 - I_t(a, b): alpha_C = 1 - I_sigma(a, b) = I_tau(b, a)
        a, b = p["a"], p["b"]
        return lambda tau, sigma: (
            sch._betainc_pair(b, a, tau, sigma),
            sch._betainc_pair(a, b, sigma, tau),
            sch._beta_pdf_pair(b, a, tau, sigma),
        )
    return None


def as_path(alpha) -> ChenPath:
    """A mask schedule in Chen's time: a :class:`ChenPath` as is, or a toolkit Schedule converted.

    Built-in families are written in Chen's time in closed form (sin2_beta and cosine_squared in angle form:
    they are :func:`optimal_path` of a Beta weight); any other Schedule goes through
    :func:`theory.schedules.chen_alpha` / ``chen_dalpha``. Raises ValueError if alpha'(t) > 0 somewhere (a
    toolkit schedule must not increase: alpha_C' >= 0 in Chen's time) or alpha(0) != 1, alpha(1) != 0.
    """
    if isinstance(alpha, ChenPath):
        return alpha
    if not isinstance(alpha, Schedule):
        raise TypeError(
            f"alpha must be a theory.schedules.Schedule or a theory.energy.ChenPath, got {type(alpha).__name__}."
        )
    _check_schedule(alpha)
    if alpha.builtin and alpha.name == "sin2_beta":
        return _replace(optimal_path(sch.beta_weight(alpha.params["a"], alpha.params["b"])), repr(alpha), alpha)
    if alpha.builtin and alpha.name == "cosine_squared":
        return _replace(optimal_path(sch.linear_weight()), repr(alpha), alpha)
    form = _chen_form(alpha)
    if form is None:

        def form(tau, sigma):
            a = sch.chen_alpha(alpha, tau, sigma)
            return a, 1.0 - a, sch.chen_dalpha(alpha, tau, sigma)

        def rel_error(tau, sigma):
            a, m, d = _padded(form, tau, sigma)
            with np.errstate(divide="ignore", invalid="ignore"):
                return 2 * _EPS * (1.0 + np.abs(d) / a + 1.0 / m)

        p = _alpha_path(repr(alpha), alpha, form)
        return ChenPath(p.angle_fn, p.dangle_fn, p.name, alpha, rel_error)
    return _alpha_path(repr(alpha), alpha, form)


def _replace(path: ChenPath, name: str, schedule) -> ChenPath:
    return ChenPath(path.angle_fn, path.dangle_fn, name, schedule, path.rel_error_fn)


def _check_schedule(schedule: Schedule, tol: float = 1e-10) -> None:
    sch.validate(schedule, tol)
    t = np.linspace(0.0, 1.0, sch._GRID)  # the grid of schedules.validate: shares its compilations
    d = np.asarray(schedule.dalpha(jnp.asarray(t)), dtype=np.float64)[1:-1]
    t = t[1:-1]
    if not np.all(np.isfinite(d)):
        raise ValueError(f"schedule {schedule} has a non-finite alpha'(t) inside (0, 1).")
    if np.any(d > tol):
        i = int(np.argmax(d))
        raise ValueError(
            f"schedule {schedule} has alpha'(t) = {d[i]:.3g} > 0 at t = {t[i]:.4f}: in the toolkit's time alpha "
            "(the clean probability) must not increase (alpha' <= 0; in Chen2025's time alpha_C' >= 0). Check the "
            "sign of dalpha."
        )


def optimal_path(weight: Weight) -> ChenPath:
    """Chen2025's optimal schedule for a weight: alpha*_C(tau) = sin^2((pi/2) gamma(tau)), i.e. phi = (pi/2) gamma.

    Its one-token energy is pi^2 for every gamma (the Cauchy–Schwarz minimum, :data:`MIN_ENERGY`).
    """
    sch.validate_weight(weight)
    return ChenPath(
        lambda tau, sigma: (_HALF_PI * weight.gamma_fn(tau, sigma), _HALF_PI * weight.cgamma_fn(tau, sigma)),
        lambda tau, sigma: _HALF_PI * weight.dgamma_fn(tau, sigma),
        f"optimal[{weight!r}]",
    )


def optimal_schedule(weight: Weight) -> Schedule:
    """alpha* = sin^2((pi/2) gamma) as a toolkit Schedule (t = 1 - tau): alpha(t) = sin^2((pi/2) gamma(1 - t)).

    For a Beta weight this is the built-in :func:`theory.schedules.sin2_beta` (a, b) (same function, hashes
    by value); otherwise a user schedule built from the weight's functions.
    """
    sch.validate_weight(weight)
    if weight.builtin and weight.name == "beta_weight":
        return sch.sin2_beta(weight.params["a"], weight.params["b"])

    def alpha(t):
        return jnp.sin(_HALF_PI * weight.gamma(sch.chen_time(t), t)) ** 2

    def dalpha(t):
        g = weight.gamma(sch.chen_time(t), t)
        return -_HALF_PI * jnp.sin(np.pi * g) * weight.dgamma(sch.chen_time(t), t)

    return sch.validate(Schedule(alpha, dalpha, f"optimal[{weight!r}]"))


def weight_for(alpha) -> Weight:
    """The one weight for which ``alpha`` is optimal: gamma(tau) = (2/pi) arcsin sqrt(alpha_C(tau)) = (2/pi) phi.

    gamma' = (2/pi) phi' = alpha_C' / (pi sqrt(alpha_C (1 - alpha_C))). Inverse of :func:`optimal_path`.
    Raises ValueError if the result is not a valid weight (e.g. alpha has a flat piece: gamma' = 0 there is
    allowed, but alpha must run from 0 to 1).
    """
    path = as_path(alpha)
    w = Weight(
        lambda tau, sigma: path.angle_fn(tau, sigma)[0] / _HALF_PI,
        lambda tau, sigma: path.dangle_fn(tau, sigma) / _HALF_PI,
        lambda tau, sigma: path.angle_fn(tau, sigma)[1] / _HALF_PI,
        f"weight_for[{path.name}]",
    )
    return sch.validate_weight(w)


def _as_weight(gamma) -> Weight:
    if not isinstance(gamma, Weight):
        raise TypeError(f"gamma must be a theory.schedules.Weight (e.g. schedules.beta_weight(a, b)), got "
                        f"{type(gamma).__name__}.")  # fmt: skip
    return sch.validate_weight(gamma)


# ---- a flexible monotone family: Bernstein polynomials with increasing coefficients ---------------------
def _bernstein_coeffs(coeffs, what: str) -> np.ndarray:
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim != 1 or c.size < 2 or abs(c[0]) > 1e-12 or abs(c[-1] - 1) > 1e-12 or np.any(np.diff(c) < 0):
        raise ValueError(f"{what} coefficients must rise from c_0 = 0 to c_n = 1 without decreasing, got {coeffs!r}.")
    return c


def _bernstein(c, tau, sigma):
    """sum_k c_k C(n, k) tau^k sigma^(n-k) and its derivative n sum_k (c_(k+1) - c_k) C(n-1, k) tau^k sigma^(n-1-k)."""
    from scipy.special import comb

    n = len(c) - 1
    k = np.arange(n + 1)
    basis = comb(n, k)[:, None] * jnp.asarray(tau)[None] ** k[:, None] * jnp.asarray(sigma)[None] ** (n - k)[:, None]
    kd = np.arange(n)
    dbasis = (
        comb(n - 1, kd)[:, None]
        * jnp.asarray(tau)[None] ** kd[:, None]
        * jnp.asarray(sigma)[None] ** (n - 1 - kd)[:, None]
    )
    return (jnp.asarray(c)[:, None] * basis).sum(0), n * (jnp.asarray(np.diff(c))[:, None] * dbasis).sum(0)


def bernstein_path(coeffs) -> ChenPath:
    """A monotone path phi(tau) = (pi/2) sum_k c_k C(n,k) tau^k (1-tau)^(n-k), 0 = c_0 <= ... <= c_n = 1 (a
    monotone Bezier curve; a mixture of Beta(k, n-k+1) CDFs). pi/2 - phi uses the coefficients 1 - c_k."""
    c = _bernstein_coeffs(coeffs, "bernstein_path")
    return ChenPath(
        lambda tau, sigma: (_HALF_PI * _bernstein(c, tau, sigma)[0], _HALF_PI * _bernstein(1.0 - c, tau, sigma)[0]),
        lambda tau, sigma: _HALF_PI * _bernstein(c, tau, sigma)[1],
        f"bernstein{tuple(np.round(c, 4))}",
    )


def bernstein_weight(coeffs) -> Weight:
    """A weight gamma(tau) = sum_k c_k C(n,k) tau^k (1-tau)^(n-k), 0 = c_0 <= ... <= c_n = 1 (validated)."""
    c = _bernstein_coeffs(coeffs, "bernstein_weight")
    return sch.validate_weight(
        Weight(
            lambda tau, sigma: _bernstein(c, tau, sigma)[0],
            lambda tau, sigma: _bernstein(c, tau, sigma)[1],
            lambda tau, sigma: _bernstein(1.0 - c, tau, sigma)[0],
            "bernstein_weight",
            {"coeffs": tuple(float(x) for x in c)},
            builtin=True,
        )
    )


@dataclass(frozen=True)
class BernsteinFit:
    """The result of :func:`minimise_bernstein`: coefficients c (n + 1,), the path, its energy J and the optimiser's
    status."""

    coeffs: np.ndarray
    path: ChenPath
    energy: float
    success: bool


def minimise_bernstein(gamma: Weight, degree: int, *, seed: int = 0) -> BernsteinFit:
    """Minimise the one-token energy J over the monotone Bernstein paths of a degree, numerically.

    J(c) = pi^2 d^T M d with d_k = c_(k+1) - c_k >= 0 (sum 1) and M_jk = int n^2 b_j b_k / gamma' (b the degree
    n - 1 Bernstein basis; M by :func:`tanh_sinh`); d = softmax(z), minimised over z by BFGS from a random start.
    When sin^2((pi/2) gamma) is in the family (gamma a Bernstein polynomial of degree <= n), the minimiser is
    alpha* (the Cauchy–Schwarz bound is attained), which tests it.
    """
    from scipy.special import comb, softmax

    weight = _as_weight(gamma)
    n = int(degree)
    if n < 1:
        raise ValueError(f"degree must be >= 1, got {degree}.")
    kd = np.arange(n)

    def f(tau, sigma):
        b = comb(n - 1, kd)[None] * tau[:, None] ** kd[None] * sigma[:, None] ** (n - 1 - kd)[None]  # (nodes, n)
        g = _padded(weight.dgamma_fn, tau, sigma)
        return n**2 * b[:, :, None] * b[:, None, :] / g[:, None, None]

    M = np.pi**2 * np.asarray(tanh_sinh(f, rtol=1e-13).value)
    if not np.all(np.isfinite(M)):
        raise ValueError(f"the energy of some Bernstein paths of degree {n} is infinite for {weight!r}.")

    def obj(z):
        d = softmax(z)
        Md = M @ d
        grad_d = 2 * Md
        return float(d @ Md), d * (grad_d - d @ grad_d)

    z0 = np.random.default_rng(seed).normal(size=n)
    res = optimize.minimize(obj, z0, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 10_000})
    d = softmax(res.x)
    c = np.concatenate([[0.0], np.cumsum(d)])
    c[-1] = 1.0
    return BernsteinFit(c, bernstein_path(c), float(res.fun), bool(res.success))


# ================================ quadrature ============================================================
@dataclass(frozen=True)
class Integral:
    """A tanh–sinh integral over [0, 1]: ``value``, achieved ``error`` (last level difference + ``tail``),
    ``tail`` (power-law estimate of the truncated end intervals), ``nodes`` and ``level`` (h = 2^-level).
    Arrays for vector-valued integrands. ``value`` is inf when the integral diverges at an end (the
    integrand decays no faster than 1/tau there)."""

    value: np.ndarray | float
    error: np.ndarray | float
    tail: np.ndarray | float
    nodes: int
    level: int

    def __float__(self) -> float:
        return float(self.value)


#: Rounding floor of a quadrature sum, relative to sum w |f|: 64 float64 epsilons (~1.4e-14; the sum and the
#: integrand's special functions, e.g. jax's betainc to ~3e-14 relative, are not exact).
_EPS = float(np.finfo(np.float64).eps)
_ROUNDING = 64 * _EPS
_MAX_NODE_ERROR = 1e-3  # end nodes whose integrand is known to no better than this are dropped
_XMAX = 6.0  # tanh-sinh nodes x in [-6, 6]: the end nodes are 1e-275 from 0 and 1


@lru_cache(maxsize=16)
def tanh_sinh_nodes(level: int):
    """Nodes (tau, sigma = 1 - tau) and weights of the tanh–sinh rule on [0, 1] at step h = 2^-level.

    tau = 1/(1 + exp(-pi sinh(x))), x = k h, |x| <= 6; both tau and sigma are computed directly (no 1 - tau).
    """
    h = 2.0**-level
    K = int(np.ceil(_XMAX / h))
    x = np.arange(-K, K + 1) * h
    u2 = np.pi * np.sinh(x)
    tau, sigma = expit(u2), expit(-u2)
    w = h * (np.pi / 2) * np.cosh(x) * 2.0 * tau * sigma  # dtau/dx = (pi/2) cosh(x) * 2 tau sigma
    return tau, sigma, w


def _end_tail(d, F):
    """Power-law estimate of the integral over [0, d0] from the two outermost resolved nodes (d = distance to
    the end, F = |f|): int_0^d0 c s^(e-1) ds = d0 F0 / e, e = log(d1 F1 / d0 F0) / log(d1 / d0). inf if e <= 0."""
    g0, g1 = d[0] * F[0], d[1] * F[1]
    out = np.zeros_like(g0)
    pos = g0 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.log(np.where(pos, g1, 1.0) / np.where(pos, g0, 1.0)) / np.log(d[1] / d[0])
        out = np.where(pos, np.where(e > 1e-9, g0 / e, np.inf), 0.0)
    return out


def _one_level(f, level, node_error=None):
    tau, sigma, w = tanh_sinh_nodes(level)
    with np.errstate(all="ignore"):
        F = np.asarray(f(tau, sigma), dtype=np.float64)
    if F.shape[0] != tau.shape[0]:
        raise ValueError(f"integrand must return shape (nodes, ...), got {F.shape} for {tau.shape[0]} nodes.")
    flat = F.reshape(len(tau), -1)
    ok = np.isfinite(flat).all(1)
    rel = np.full(len(tau), _ROUNDING)
    if node_error is not None:
        with np.errstate(all="ignore"):
            r = np.asarray(node_error(tau, sigma), dtype=np.float64)
        good = np.isfinite(r) & (r <= _MAX_NODE_ERROR)
        core = np.nonzero(good)[0]
        if core.size:  # unreliable nodes count as unresolved only at the ends
            ok &= (np.arange(len(tau)) >= core[0]) & (np.arange(len(tau)) <= core[-1])
        rel = rel + np.where(good, r, 0.0)
    if not ok.any():
        raise ValueError("the integrand is non-finite at every quadrature node.")
    lo, hi = int(np.argmax(ok)), len(ok) - 1 - int(np.argmax(ok[::-1]))
    if not ok[lo : hi + 1].all():
        bad = lo + int(np.argmin(ok[lo : hi + 1]))
        raise ValueError(f"the integrand is non-finite inside (0, 1) (at tau = {tau[bad]:.6g}).")
    if hi - lo < 3:
        raise ValueError("the integrand is finite at fewer than 4 quadrature nodes.")
    value = (w[lo : hi + 1, None] * flat[lo : hi + 1]).sum(0)
    A = np.abs(flat)
    rounding = (w[lo : hi + 1, None] * rel[lo : hi + 1, None] * A[lo : hi + 1]).sum(0)
    tail = _end_tail(tau[[lo, lo + 1]], A[[lo, lo + 1]]) + _end_tail(sigma[[hi, hi - 1]], A[[hi, hi - 1]])
    return value, tail, rounding, hi - lo + 1, F.shape[1:]


def tanh_sinh(
    f: Callable,
    *,
    rtol: float = 1e-12,
    atol: float = 0.0,
    min_level: int = 3,
    max_level: int = 8,
    node_error: Callable | None = None,
):
    """int_0^1 f(tau) dtau by the tanh–sinh (double-exponential) rule, refined until two levels agree.

    ``f(tau, sigma)`` gets arrays of nodes and their exact complements sigma = 1 - tau and returns an array
    (nodes,) or (nodes, ...) (vector-valued integrands share the nodes). End points are never evaluated;
    non-finite values are allowed only on the outermost nodes at either end (a schedule that cannot resolve
    an end), which are dropped. The reported ``error`` is |I_h - I_2h| at the last level, plus a rounding
    floor sum w |f| (64 eps + ``node_error(tau, sigma)``, the integrand's own relative error if known), plus
    the ``tail``: for each end, d0 |f(d0)| / e with e the local exponent of d |f(d)| between the two outermost resolved
    nodes (exact for |f| = c d^(e-1); e <= 0 means the integral diverges and ``value`` is inf).
    """
    prev = None
    for level in range(min_level, max_level + 1):
        value, tail, rounding, n, shape = _one_level(f, level, node_error)
        if prev is not None:
            diff = np.abs(value - prev)
            if np.all(diff <= np.maximum(atol, rtol * np.abs(value))):
                break
        prev = value
    value = np.where(np.isfinite(tail), value, np.inf)
    err = diff + rounding + tail
    if shape == ():
        return Integral(float(value[0]), float(err[0]), float(tail[0]), n, level)
    return Integral(value.reshape(shape), err.reshape(shape), tail.reshape(shape), n, level)


# ================================ exact structure of q ==================================================
@dataclass(frozen=True)
class _Structure:
    """Index arrays of the unmasking moves z -> x of (V+1)**L: every (state, masked position, value)."""

    V: int
    L: int
    cyl: np.ndarray  # (S,) C[z] = q(visible part of z)
    visible: np.ndarray  # (S,) k(z)
    parent: np.ndarray  # (P,) z
    child: np.ndarray  # (P,) x = z with position i set to v
    position: np.ndarray  # (P,) i
    value: np.ndarray  # (P,) v
    cond: np.ndarray  # (P,) q(x_i = v | z), the exact denoiser at the masked position


def _structure(q: Joint, max_bytes: float | None = None) -> _Structure:
    require_x64("theory.energy")
    if not isinstance(q, Joint):
        raise TypeError(f"q must be a theory.joint.Joint, got {type(q).__name__}.")
    cached = q.__dict__.get("_energy_structure")
    if cached is not None:
        return cached
    V, L = q.vocab_size, q.length
    S = (V + 1) ** L
    P = L * V * (V + 1) ** (L - 1)
    check_size(
        8 * (S * (L * V + 2) + 6 * P),
        f"Chen2025's energies by explicit sums over (V+1)**L = {V + 1}**{L} partial states and their "
        f"{P} unmasking moves",
        max_bytes,
        "The sums reduce to closed forms (theory.energy module docstring): E_k = kinetic_constant(q) L 2^(L-1) J, "
        "E_c = L 2^(L-1) J, E_g = L J with J = one_token_energy(alpha, gamma); kinetic_constant needs only the "
        "support of q. " + SCALABLE_HINT,
    )
    den = q.denoiser(max_bytes)
    cyl = np.asarray(den.cyl)
    states = all_states(V, L)  # (S, L)
    table = np.asarray(den.table(max_bytes))  # (S, L, V)
    z, i = np.nonzero(states == V)  # masked (state, position)
    parent = np.repeat(z, V)
    position = np.repeat(i, V)
    value = np.tile(np.arange(V), len(z))
    st = strides(V + 1, L)
    child = parent + (value - V) * st[position]
    out = _Structure(V, L, cyl, (states != V).sum(1), parent, child, position, value, table[parent, position, value])
    object.__setattr__(q, "_energy_structure", out)
    return out


def kinetic_constant(q: Joint) -> float:
    """C_1(q) = E_k / E_c = n_q / (L 2^(L-1)), n_q = sum of #masked(z) over partial states with q(visible z) > 0.

    [ours; Chen2025 Thm 3.1 states that C_1 depends only on (n, d).] Full support: n_q = L (V+1)^(L-1), so
    C_1 = ((V+1)/2)^(L-1). Otherwise it depends on the support of q (not its weights): 1 <= C_1, with equality
    iff q is a point mass.
    """
    s = _structure(q)
    L = s.L
    n_q = float(((L - s.visible) * (s.cyl > 0)).sum())
    return n_q / (L * 2.0 ** (L - 1))


def full_support_kinetic_constant(vocab_size: int, length: int) -> float:
    """C_1 for full-support q: ((V+1)/2)^(L-1) [ours; the constant of Chen2025 Thm 3.1 in this reconstruction]."""
    return ((vocab_size + 1) / 2.0) ** (length - 1)


def geodesic_constant(length: int) -> float:
    """C_2 = E_c / E_g = 2^(L-1) (Chen2025 Thm 3.2: C_2 = 2^(n-1) for n tokens)."""
    return 2.0 ** (length - 1)


# ================================ paths and rates ========================================================
# alpha_C, 1 - alpha_C and alpha_C' are JAX scalars (differentiable in tau); the sums over the (V+1)**L states are a
# jitted polynomial (one compilation per state count) or numpy, so that random instances of many shapes stay cheap.
@jax.jit
def _path_poly(cyl, k, L, a, m):
    """C[z] a^k (1 - a)^(L - k): the marginal path as a polynomial in the scalars a = alpha_C, m = 1 - alpha_C."""
    return cyl * a**k * m ** (L - k)


def _scalars(alpha, tau, sigma):
    path = as_path(alpha)
    tau = jnp.asarray(tau, dtype=jnp.float64)
    if tau.ndim != 0:
        raise ValueError(f"tau must be a scalar, got shape {tau.shape}.")
    return path.alpha(tau, sigma), path.masked(tau, sigma), path.dalpha(tau, sigma)


def marginal_path(q: Joint, alpha, tau, sigma=None) -> jax.Array:
    """p_tau(z) = C[z] alpha_C^k (1 - alpha_C)^(L-k) over the (V+1)**L partial states (flat, row-major), shape (S,).

    Differentiable in tau (``jax.jvp``): alpha_C is evaluated through the path's angle functions.
    """
    s = _structure(q)
    a, m, _ = _scalars(alpha, tau, sigma)
    return _path_poly(jnp.asarray(s.cyl), jnp.asarray(s.visible, dtype=jnp.float64), float(s.L), a, m)


def unmasking_rates(q: Joint, alpha, tau, sigma=None) -> np.ndarray:
    """Q_tau(z -> z with z_i := v) = alpha_C' / (1 - alpha_C) q(x_i = v | z), shape (S, L, V); 0 at visible i.

    Chen2025's rate sigma_tau p_tau(x) / p_tau(z) with sigma_tau = alpha'/alpha and the concrete score
    p_tau(x) / p_tau(z) = alpha / (1 - alpha) q(x_i = v | z) from the exact denoiser. (numpy)
    """
    s = _structure(q)
    _, m, d = _scalars(alpha, tau, sigma)
    Q = np.zeros((len(s.cyl), s.L, s.V))
    Q[s.parent, s.position, s.value] = s.cond
    return float(d / m) * Q


def generator_action(q: Joint, p, rates) -> np.ndarray:
    """(Q^T p)(x) - p(x) sum_y Q(x, y): the right side of the Kolmogorov forward equation, shape (S,). (numpy)"""
    s = _structure(q)
    R, p = np.asarray(rates, dtype=np.float64), np.asarray(p, dtype=np.float64)
    flow = p[s.parent] * R[s.parent, s.position, s.value]  # (P,)
    inflow = np.zeros(len(s.cyl))
    np.add.at(inflow, s.child, flow)
    return inflow - p * R.sum((1, 2))


@dataclass(frozen=True)
class ForwardCheck:
    """d p_tau / d tau (by jax.jvp) against the generator's action: ``residual`` = max |difference|,
    ``scale`` = max over states of |inflow| + |outflow| (the size of the terms that cancel)."""

    dp: np.ndarray
    rhs: np.ndarray
    residual: float
    scale: float


def forward_equation(q: Joint, alpha, tau: float) -> ForwardCheck:
    """Check that Q_tau generates p_tau: d/dtau p_tau = Q_tau^T p_tau (Kolmogorov forward), at one tau in (0, 1).

    The time derivative is exact (``jax.jvp`` of :func:`marginal_path` in tau).
    """
    if not 0.0 < float(tau) < 1.0:
        raise ValueError(f"tau must lie in (0, 1), got {tau}.")
    t0 = jnp.float64(tau)
    p, dp = jax.jvp(lambda t: marginal_path(q, alpha, t), (t0,), (jnp.ones_like(t0),))
    p = np.asarray(p)
    R = unmasking_rates(q, alpha, t0)
    rhs = generator_action(q, p, R)
    s = _structure(q)
    inflow = np.zeros(len(s.cyl))
    np.add.at(inflow, s.child, np.abs(p[s.parent] * R[s.parent, s.position, s.value]))
    scale = float(np.max(inflow + np.abs(p * R.sum((1, 2)))))
    dp = np.asarray(dp)
    return ForwardCheck(dp, rhs, float(np.max(np.abs(dp - rhs))), scale)


def _check_x1(x1, V, L) -> np.ndarray:
    x = np.asarray(x1)
    if x.shape != (L,) or x.dtype.kind not in "iu" or x.min() < 0 or x.max() >= V:
        raise ValueError(f"x1 must be a clean sequence of {L} ints in 0..{V - 1}, got {x1!r}.")
    return x.astype(np.int64)


def _consistent(x, V):
    st = all_states(V, len(x))
    return st, ((st == x) | (st == V)).all(1)


def conditional_path(x1, alpha, tau, vocab_size: int, sigma=None) -> np.ndarray:
    """p_{tau|1}(z | x1) = prod_i (alpha_C [z_i = x1_i] + (1 - alpha_C) [z_i = M]) over (V+1)**L, shape (S,)."""
    L = len(np.asarray(x1))
    x = _check_x1(x1, vocab_size, L)
    st, consistent = _consistent(x, vocab_size)
    k = (st != vocab_size).sum(1)
    a, m, _ = (float(v) for v in _scalars(alpha, tau, sigma))
    return np.where(consistent, a**k * m ** (L - k), 0.0)


def conditional_rates(x1, alpha, tau, vocab_size: int, sigma=None) -> np.ndarray:
    """Q_{tau|1}(z -> z_i := v | x1) = alpha_C' / (1 - alpha_C) [z_i = M, v = x1_i, z consistent with x1], (S, L, V)."""
    L = len(np.asarray(x1))
    x = _check_x1(x1, vocab_size, L)
    V = vocab_size
    st, consistent = _consistent(x, V)
    ind = (st == V)[:, :, None] & (np.arange(V)[None, None, :] == x[None, :, None]) & consistent[:, None, None]
    _, m, d = _scalars(alpha, tau, sigma)
    return float(d / m) * ind.astype(np.float64)


def averaged_conditional_rates(q: Joint, alpha, tau) -> np.ndarray:
    """sum_{x1} q(x1) p_{tau|1}(z | x1) Q_{tau|1}(z, . | x1) / p_tau(z), shape (S, L, V) (0 where p_tau(z) = 0).

    Chen2025 Eq. 6: equals :func:`unmasking_rates` wherever p_tau(z) > 0.
    """
    s = _structure(q)
    V, L = s.V, s.L
    probs = np.asarray(q.probs)
    seqs = q.sequences()
    num = np.zeros(((V + 1) ** L, L, V))
    for j in np.nonzero(probs > 0)[0]:
        num += (
            probs[j]
            * conditional_path(seqs[j], alpha, tau, V)[:, None, None]
            * conditional_rates(seqs[j], alpha, tau, V)
        )
    p = np.asarray(marginal_path(q, alpha, tau))
    return np.where(p[:, None, None] > 0, num / np.where(p > 0, p, 1.0)[:, None, None], 0.0)


# ================================ energies ==============================================================
def _log_angles(path: ChenPath, tau, sigma):
    """log alpha, log(1 - alpha), log alpha' at the nodes (numpy), from the angle form (no underflow)."""
    phi, phic, dphi = _padded(lambda t, s_: (*path.angle_fn(t, s_), path.dangle_fn(t, s_)), tau, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls, lc = np.log(np.sin(phi)), np.log(np.sin(phic))
        return 2 * ls, 2 * lc, np.log(2.0) + ls + lc + np.log(dphi), dphi


_CHUNK = 1 << 21  # node x move entries per block


def _kinetic_sum(s: _Structure, la, lm, lda):
    """sum_z sum_x p(z) Q(z,x)^2 / p(x) at each node, by the explicit sum over all unmasking moves, (n,)."""
    with np.errstate(divide="ignore"):
        lC = np.log(s.cyl)
        lcond = np.log(s.cond)
    k = s.visible
    out = np.zeros(len(la))
    step = max(1, _CHUNK // max(1, len(s.parent)))
    live = (s.cyl[s.parent] > 0) & (s.cond > 0)  # p(z) Q(z, x) > 0 for alpha in (0, 1)
    par, chi, lq = s.parent[live], s.child[live], lcond[live]
    for a in range(0, len(la), step):
        A, M, D = la[a : a + step, None], lm[a : a + step, None], lda[a : a + step, None]
        lp = lC[None, :] + k[None, :] * A + (s.L - k)[None, :] * M  # (n, S) log p_tau(z)
        lQ = D - M + lq[None, :]  # (n, P) log Q_tau(z -> x)
        out[a : a + step] = np.exp(lp[:, par] + 2.0 * lQ - lp[:, chi]).sum(1)
    return out


@lru_cache(maxsize=16)
def _subset_moves(L: int):
    """Moves S -> S + {i} of the subset lattice of L positions: sizes |S| (P,), with P = L 2^(L-1)."""
    sizes = []
    for S in range(2**L):
        k = bin(S).count("1")
        sizes += [k] * (L - k)
    return np.asarray(sizes, dtype=np.int64)


def _conditional_sum(q: Joint, s: _Structure, la, lm, lda):
    """E_{x1 ~ q} sum_z sum_x p(z | x1) Q(z, x | x1)^2 / p(x | x1) at each node, (n,).

    For a given x1 the states with p_{tau|1}(z | x1) > 0 are the 2^L ways to mask x1 (a subset of visible
    positions), and the moves fill one masked position with its x1 value; p_{tau|1} and Q_{tau|1} depend on x1
    only through which states these are, so the explicit sum over them is the same for every x1 and the
    expectation over x1 ~ q multiplies it by sum_x1 q(x1) = 1.
    """
    k = _subset_moves(s.L)[None, :]  # (1, P)
    L = s.L
    A, M, D = la[:, None], lm[:, None], lda[:, None]
    lp_z = k * A + (L - k) * M
    lp_x = (k + 1) * A + (L - k - 1) * M
    lQ = D - M
    per_x1 = np.exp(lp_z + 2.0 * lQ - lp_x).sum(1)  # (n,)
    w = np.asarray(q.probs)
    return float(w[w > 0].sum()) * per_x1


def _geodesic_sum(path: ChenPath, L: int, tau, sigma):
    """c E_{x1} sum_i ||d/dtau sqrt(p_{tau|1}(. | x1_i))||^2 at each node. The square-root embedding of the token
    law (alpha on x1_i, 1 - alpha on M) is (sin phi, sin(pi/2 - phi)); its derivative is (cos phi, -sin phi) phi'
    (chain rule, cos phi = sin(pi/2 - phi)). The token law is the same for every i and x1, so the sum over i is L
    times it and the expectation over x1 ~ q leaves it unchanged."""
    phi, phic, dphi = _padded(lambda t, s_: (*path.angle_fn(t, s_), path.dangle_fn(t, s_)), tau, sigma)
    d1, d2 = np.sin(phic) * dphi, -np.sin(phi) * dphi
    return GEODESIC_C * L * (d1**2 + d2**2)


@dataclass(frozen=True)
class Energies:
    """Chen2025's three energies of (q, alpha, gamma) and the one-token energy J, as :class:`Integral` s on
    shared quadrature nodes; ``c1`` = E_k / E_c, ``c2`` = E_c / E_g (Chen2025 Thm 3.1 / 3.2)."""

    kinetic: Integral
    conditional: Integral
    geodesic: Integral
    one_token: Integral

    @property
    def c1(self) -> float:
        return float(self.kinetic.value) / float(self.conditional.value)

    @property
    def c2(self) -> float:
        return float(self.conditional.value) / float(self.geodesic.value)


def _integrand_parts(path: ChenPath, weight: Weight, tau, sigma):
    la, lm, lda, dphi = _log_angles(path, tau, sigma)
    dg = _padded(weight.dgamma_fn, tau, sigma)
    return la, lm, lda, dphi, dg


def energies(q: Joint, alpha, gamma: Weight, *, rtol: float = 1e-12, max_bytes: float | None = None) -> Energies:
    """E_k, E_c, E_g (explicit sums over states, module docstring) and J for data ``q``, mask schedule ``alpha``
    (a toolkit Schedule or a ChenPath) and weight ``gamma``, by one tanh–sinh quadrature in Chen's time.

    Raises ValueError for a weight that is not increasing from 0 to 1, a schedule with alpha' of the wrong
    sign, or an instance too large to enumerate (the message gives the memory and the closed forms).
    """
    s = _structure(q, max_bytes)
    path, weight = as_path(alpha), _as_weight(gamma)

    def f(tau, sigma):
        la, lm, lda, dphi, dg = _integrand_parts(path, weight, tau, sigma)
        return np.stack(
            [
                _kinetic_sum(s, la, lm, lda) / dg,
                _conditional_sum(q, s, la, lm, lda) / dg,
                _geodesic_sum(path, s.L, tau, sigma) / dg,
                4.0 * dphi**2 / dg,
            ],
            axis=1,
        )

    I = tanh_sinh(f, rtol=rtol, node_error=path.rel_error_fn)
    parts = [Integral(float(I.value[j]), float(I.error[j]), float(I.tail[j]), I.nodes, I.level) for j in range(4)]
    return Energies(*parts)


def kinetic_energy(q: Joint, alpha, gamma: Weight, **kw) -> Integral:
    """E_k = int (1/gamma') sum_z sum_{x != z} p_tau(z) Q_tau(z, x)^2 / p_tau(x) dtau (explicit sums)."""
    return energies(q, alpha, gamma, **kw).kinetic


def conditional_energy(q: Joint, alpha, gamma: Weight, **kw) -> Integral:
    """E_c = E_{x1 ~ q} int (1/gamma') sum_z sum_x p_{tau|1}(z|x1) Q_{tau|1}(z,x|x1)^2 / p_{tau|1}(x|x1) dtau."""
    return energies(q, alpha, gamma, **kw).conditional


def geodesic_energy(q: Joint, alpha, gamma: Weight, **kw) -> Integral:
    """E_g = 4 int (1/gamma') E_{x1} sum_i ||d/dtau sqrt(p_{tau|1}(. | x1_i))||^2 dtau (c = 4, :data:`GEODESIC_C`)."""
    return energies(q, alpha, gamma, **kw).geodesic


def one_token_energy(alpha, gamma: Weight, *, rtol: float = 1e-12) -> Integral:
    """J = int_0^1 alpha_C'^2 / (alpha_C (1 - alpha_C) gamma') dtau = 4 int phi'^2 / gamma' dtau (Chen2025, one token:
    E_k = E_c = E_g = J). >= pi^2 for every schedule, = pi^2 iff alpha = sin^2((pi/2) gamma)."""
    path, weight = as_path(alpha), _as_weight(gamma)

    def f(tau, sigma):
        dphi, dg = _padded(lambda t, s_: (path.dangle_fn(t, s_), weight.dgamma_fn(t, s_)), tau, sigma)
        return 4.0 * dphi**2 / dg

    return tanh_sinh(f, rtol=rtol, node_error=path.rel_error_fn)


def beta_energy(a: float, b: float, a_gamma: float, b_gamma: float) -> float:
    """Closed form [ours] of J for alpha_C = sin^2((pi/2) I_tau(a, b)) (``schedules.sin2_beta(a, b)``) and the Beta
    weight gamma = I_tau(a_gamma, b_gamma):

        J = pi^2 int f_ab^2 / f_g = pi^2 B(a_g, b_g) B(2a - a_g, 2b - b_g) / B(a, b)^2
          = pi^2 (1 + chi^2(Beta(a, b) || Beta(a_g, b_g))),

    finite iff 2a > a_g and 2b > b_g (inf otherwise); minimum pi^2 at (a, b) = (a_g, b_g).
    """
    a, b = sch._check_ab(a, b)
    ag, bg = sch._check_ab(a_gamma, b_gamma)
    if 2 * a <= ag or 2 * b <= bg:
        return float("inf")
    return float(np.pi**2 * np.exp(betaln(ag, bg) + betaln(2 * a - ag, 2 * b - bg) - 2 * betaln(a, b)))


# ================================ the discrete N-step energy ============================================
def _check_grid(alphas, gammas):
    a = np.asarray(alphas, dtype=np.float64)
    g = np.asarray(gammas, dtype=np.float64)
    if a.ndim != 1 or a.shape != g.shape or a.size < 2:
        raise ValueError(f"alphas and gammas must be 1-D of the same length N + 1 >= 2, got {a.shape}, {g.shape}.")
    if abs(a[0]) > 1e-12 or abs(a[-1] - 1) > 1e-12 or np.any(np.diff(a) < -1e-15):
        raise ValueError("alphas (Chen's time: fraction unmasked) must rise from 0 to 1 without decreasing.")
    if abs(g[0]) > 1e-12 or abs(g[-1] - 1) > 1e-12 or np.any(np.diff(g) <= 0):
        raise ValueError("gammas must increase strictly from 0 to 1 (each step needs Delta gamma > 0).")
    return np.clip(a, 0.0, 1.0), g


def discrete_energy(alphas, gammas) -> float:
    """The N-step energy c sum_j chord_j^2 / Delta gamma_j (c = 4) of the points alpha_0 = 0 <= ... <= alpha_N = 1
    (Chen's time) with weights gamma_0 = 0 < ... < gamma_N = 1.

    chord_j = ||sqrt(p_{j+1}) - sqrt(p_j)|| for the one-token laws (alpha, 1 - alpha): 2 sin(Delta phi_j / 2).
    Tends to J as the grid refines (the chord tends to the arc Delta phi).
    """
    a, g = _check_grid(alphas, gammas)
    phi = np.arcsin(np.sqrt(a))
    chord2 = 4.0 * np.sin(np.diff(phi) / 2) ** 2
    return float(GEODESIC_C * np.sum(chord2 / np.diff(g)))


def grid_points(alpha, gamma: Weight, steps: int):
    """(alphas, gammas) of a schedule and weight on the sampling grid tau_j = j / N (step n: tau from (n-1)/N to n/N,
    the toolkit's t from 1 - (n-1)/N to 1 - n/N)."""
    from .validation import check_steps

    N = check_steps(steps)
    path, weight = as_path(alpha), _as_weight(gamma)
    tau = np.arange(N + 1) / N
    sigma = (N - np.arange(N + 1)) / N
    a, g = _padded(lambda t, s_: (jnp.sin(path.angle_fn(t, s_)[0]) ** 2, weight.gamma_fn(t, s_)), tau, sigma)
    a, g = a.copy(), g.copy()
    a[0], a[-1], g[0], g[-1] = 0.0, 1.0, 0.0, 1.0
    return a, g


def discrete_energy_on_grid(alpha, gamma: Weight, steps: int) -> float:
    """:func:`discrete_energy` of ``alpha`` on the uniform N-step grid with weights gamma(j / N)."""
    return discrete_energy(*grid_points(alpha, gamma, steps))


def optimal_discrete_alphas(gammas) -> np.ndarray:
    """The points alpha_0..alpha_N minimising :func:`discrete_energy` for the given weights gamma_j [ours].

    sum_j 4 sin^2(Delta phi_j / 2) / Delta gamma_j is convex in Delta phi (on [0, pi/2]); with sum Delta phi = pi/2
    the optimum has sin(Delta phi_j) = lambda Delta gamma_j (Lagrange), found by a 1-D root in lambda. For equally
    spaced gammas this is Delta phi_j = pi / (2N): points equally spaced in gamma along the geodesic,
    alpha_j = sin^2((pi/2) gamma_j). For unequal Delta gamma it is not sin^2((pi/2) gamma_j).
    """
    g = np.asarray(gammas, dtype=np.float64)
    _check_grid(np.linspace(0, 1, g.size), g)
    dg = np.diff(g)
    hi = 1.0 / dg.max()

    def excess(lam):
        return np.arcsin(np.minimum(lam * dg, 1.0)).sum() - np.pi / 2

    lam = hi if excess(hi) <= 0 else optimize.brentq(excess, 0.0, hi, xtol=1e-300, rtol=1e-15, maxiter=500)
    dphi = np.arcsin(np.minimum(lam * dg, 1.0))
    phi = np.concatenate([[0.0], np.cumsum(dphi)])
    phi *= (np.pi / 2) / phi[-1]
    return np.sin(phi) ** 2


def discrete_optimum(steps: int) -> float:
    """Minimum N-step energy with equally spaced gammas: 4 N * 4 N sin^2(pi / (4N)) = 16 N^2 sin^2(pi/(4N)) < pi^2."""
    N = int(steps)
    return float(16.0 * N**2 * np.sin(np.pi / (4 * N)) ** 2)


# ================================ Chen2025's Fig. 4 toy =================================================
def toy_targets() -> dict[str, Joint]:
    """Chen2025's Fig. 4 toy: 5 tokens over {a, b} (a = 0, b = 1), two targets.

    "A": uniform on {aaaaa, bbbbb}; "B": uniform on the 20 sequences with 2 or 3 a's. Different targets prefer
    different Beta schedules for 3-step sampling with the exact denoiser (experiments/energy_schedules.py).
    """
    from .states import all_sequences

    X = all_sequences(2, 5)
    return {
        "A": Joint.from_support(np.array([[0] * 5, [1] * 5]), 2, 5),
        "B": Joint.from_support(X[np.isin((X == 0).sum(1), [2, 3])], 2, 5),
    }


__all__ = [
    "GEODESIC_C",
    "MIN_ENERGY",
    "ChenPath",
    "Energies",
    "ForwardCheck",
    "Integral",
    "as_path",
    "averaged_conditional_rates",
    "BernsteinFit",
    "bernstein_path",
    "bernstein_weight",
    "beta_energy",
    "conditional_energy",
    "conditional_path",
    "conditional_rates",
    "discrete_energy",
    "discrete_energy_on_grid",
    "discrete_optimum",
    "energies",
    "forward_equation",
    "full_support_kinetic_constant",
    "generator_action",
    "geodesic_constant",
    "geodesic_energy",
    "grid_points",
    "kinetic_constant",
    "kinetic_energy",
    "marginal_path",
    "minimise_bernstein",
    "one_token_energy",
    "optimal_discrete_alphas",
    "optimal_path",
    "optimal_schedule",
    "tanh_sinh",
    "tanh_sinh_nodes",
    "toy_targets",
    "unmasking_rates",
    "weight_for",
]
