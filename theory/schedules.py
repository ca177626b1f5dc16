"""Mask schedules alpha(t) and their discretisation into N sampling steps.

Convention (the toolkit's; papers that differ are converted at their boundary): alpha(t) is the
probability that a token is still clean at noise level t, alpha(0) = 1, alpha(1) = 0, non-increasing.
Sampling runs t from 1 to 0 over N steps on the uniform grid t_j = j / N: step n (n = 1..N) goes
from t = 1 - (n-1)/N to s = 1 - n/N.

A schedule is a small frozen object owning ``alpha(t)`` and ``dalpha(t)`` (jax.numpy, traceable and
differentiable); everything else here is derived from them.

Two ways to reveal:

* **fixed counts** (LLaDA-style): ``fixed_counts(schedule, N, L)`` gives integers k_1..k_N summing to
  L, k_n = R_n - R_{n-1} with R_n = round(L * alpha(1 - n/N)) (round half up), R_0 = 0, R_N = L;
* **Bernoulli** (MDLM/MD4 ancestral): ``reveal_probs(schedule, N)`` gives, for each step, the
  probability that a still-masked token is revealed, (alpha_s - alpha_t) / (1 - alpha_t), defined as
  1 where 1 - alpha_t = 0. The last step reveals every remaining token (probability 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from .validation import check_steps, check_vocab_length, require_x64

_GRID = 2049


@dataclass(frozen=True, eq=False)
class Schedule:
    """A mask schedule: ``alpha(t)`` (clean probability) and ``dalpha(t)``; ``name`` for tables/plots.

    Schedules compare and hash by value — the built-in families by (name, params), so two ``linear()``
    share jit caches; user schedules (:func:`from_function`) by their functions as well.
    """

    alpha_fn: Callable
    dalpha_fn: Callable
    name: str
    params: dict = field(default_factory=dict)
    builtin: bool = False

    def _identity(self):
        p = tuple(sorted(self.params.items()))
        return (self.name, p) if self.builtin else (self.name, p, self.alpha_fn, self.dalpha_fn)

    def __eq__(self, other):
        return isinstance(other, Schedule) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def alpha(self, t):
        return self.alpha_fn(jnp.asarray(t, dtype=jnp.result_type(float)))

    def dalpha(self, t):
        return self.dalpha_fn(jnp.asarray(t, dtype=jnp.result_type(float)))

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({ps})"


def validate(schedule: Schedule, tol: float = 1e-10) -> Schedule:
    """Check alpha(0) = 1, alpha(1) = 0 and monotonicity on a fine grid; raise ValueError otherwise."""
    require_x64("schedule validation")
    t = np.linspace(0.0, 1.0, _GRID)
    a = np.asarray(schedule.alpha(jnp.asarray(t)), dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"schedule {schedule} gives non-finite alpha(t) on [0, 1].")
    if abs(a[0] - 1.0) > tol or abs(a[-1]) > tol:
        raise ValueError(
            f"schedule {schedule} must have alpha(0) = 1 and alpha(1) = 0 (got {a[0]:.6g}, {a[-1]:.6g}); "
            f"rescale it as (alpha(t) - alpha(1)) / (alpha(0) - alpha(1))."
        )
    d = np.diff(a)
    if np.any(d > tol):
        i = int(np.argmax(d))
        raise ValueError(
            f"schedule {schedule} is not non-increasing: alpha rises from {a[i]:.6g} at t={t[i]:.4f} to "
            f"{a[i + 1]:.6g} at t={t[i + 1]:.4f}. alpha(t) is the clean probability and must not increase."
        )
    if np.any(a < -tol) or np.any(a > 1 + tol):
        raise ValueError(f"schedule {schedule} leaves [0, 1].")
    return schedule


@lru_cache(maxsize=256)
def _derivative(alpha: Callable) -> Callable:
    """alpha'(t) by ``jax.grad`` (vectorised); one function per alpha, so equal schedules stay equal."""
    g = jax.grad(lambda s: jnp.asarray(alpha(s)).sum())

    def dalpha(t):
        return jnp.vectorize(g)(jnp.asarray(t))

    return dalpha


def from_function(alpha: Callable, dalpha: Callable | None = None, name: str = "custom", **params) -> Schedule:
    """A user schedule from a jax.numpy function alpha(t); dalpha defaults to ``jax.grad`` (vmapped). Validated.

    Two schedules from the same functions compare equal (and share jit caches).
    """
    return validate(Schedule(alpha, _derivative(alpha) if dalpha is None else dalpha, name, dict(params)))


def linear() -> Schedule:
    """alpha(t) = 1 - t (MDLM/MD4 linear)."""
    return Schedule(lambda t: 1.0 - t, lambda t: -jnp.ones_like(t), "linear", builtin=True)


def cosine() -> Schedule:
    """alpha(t) = 1 - sin(pi t / 2) (MD4's "cosine": 1 - cos(pi/2 (1 - t))). alpha(1/2) = 1 - sqrt(2)/2."""
    return Schedule(
        lambda t: 1.0 - jnp.sin(jnp.pi * t / 2),
        lambda t: -(jnp.pi / 2) * jnp.cos(jnp.pi * t / 2),
        "cosine",
        builtin=True,
    )


def cosine_squared() -> Schedule:
    """alpha(t) = cos^2(pi t / 2), alpha(1/2) = 1/2.

    The Fisher-Rao / energy-optimal schedule for a linear weight (Chen2025, Zhang & Syed 2025).
    """
    return Schedule(
        lambda t: jnp.cos(jnp.pi * t / 2) ** 2,
        lambda t: -(jnp.pi / 2) * jnp.sin(jnp.pi * t),
        "cosine_squared",
        builtin=True,
    )


def polynomial(power: float) -> Schedule:
    """alpha(t) = 1 - t**power (MD4 "poly"); power > 0. power = 1 is linear."""
    if not power > 0:
        raise ValueError(f"polynomial schedule needs power > 0, got {power}.")
    p = float(power)
    return Schedule(lambda t: 1.0 - t**p, lambda t: -p * t ** (p - 1.0), "polynomial", {"power": p}, builtin=True)


def geometric(sigma_min: float = 1e-4, sigma_max: float = 20.0) -> Schedule:
    """Geometric noise sigma(t) = sigma_min**(1-t) sigma_max**t, alpha_raw = exp(-sigma(t)), rescaled to
    alpha(t) = (alpha_raw(t) - alpha_raw(1)) / (alpha_raw(0) - alpha_raw(1)) so that alpha(0)=1, alpha(1)=0
    exactly (MD4's geometric schedule, normalised: the toolkit starts sampling from the all-mask state)."""
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"geometric schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
    lo, hi = float(sigma_min), float(sigma_max)
    a0, a1 = np.exp(-lo), np.exp(-hi)
    scale = a0 - a1

    def sig(t):
        return lo ** (1.0 - t) * hi**t

    def alpha(t):
        return (jnp.exp(-sig(t)) - a1) / scale

    def dalpha(t):
        s = sig(t)
        return -jnp.exp(-s) * s * np.log(hi / lo) / scale

    return Schedule(alpha, dalpha, "geometric", {"sigma_min": lo, "sigma_max": hi}, builtin=True)


def _check_ab(a, b):
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}.")
    return float(a), float(b)


def _beta_pdf(t, a, b):
    # xlogy / xlog1py: (a - 1) log t is 0 for a = 1 even at t = 0 (Beta(1, 1)'s pdf is 1 at the end points, not nan)
    return jnp.exp(
        jsp.xlogy(a - 1, t) + jsp.xlog1py(b - 1, -t) - (jsp.gammaln(a) + jsp.gammaln(b) - jsp.gammaln(a + b))
    )


def beta_cdf(a: float, b: float) -> Schedule:
    """alpha(t) = 1 - I_t(a, b): the masked fraction follows the Beta(a, b) CDF. Beta(1, 1) is linear."""
    a, b = _check_ab(a, b)
    return Schedule(
        lambda t: 1.0 - jsp.betainc(a, b, t), lambda t: -_beta_pdf(t, a, b), "beta_cdf", {"a": a, "b": b}, builtin=True
    )


def sin2_beta(a: float, b: float) -> Schedule:
    """Chen2025's energy-optimal Beta schedules, converted to the toolkit's time.

    Chen2025 (Sec. on Beta schedules) runs time tau from mask (0) to data (1) with
    alpha_C(tau) = sin^2((pi/2) I_tau(a, b)). With t = 1 - tau: alpha(t) = sin^2((pi/2) I_{1-t}(a, b)).
    Beta(0.5, 0.5) gives linear alpha(t) = 1 - t; Beta(1, 1) gives cos^2(pi t / 2).
    """
    a, b = _check_ab(a, b)

    def alpha(t):
        return jnp.sin(jnp.pi / 2 * jsp.betainc(a, b, 1.0 - t)) ** 2

    def dalpha(t):
        g = jsp.betainc(a, b, 1.0 - t)
        return -(jnp.pi / 2) * jnp.sin(jnp.pi * g) * _beta_pdf(1.0 - t, a, b)

    return Schedule(alpha, dalpha, "sin2_beta", {"a": a, "b": b}, builtin=True)


def chen_sine() -> Schedule:
    """Chen2025's sine baseline: alpha_C(tau) = sin(pi tau / 2) in Chen's time, i.e. alpha(t) = cos(pi t / 2).

    Not a point of the sin^2-Beta family. alpha(1/2) = sqrt(2)/2, alpha'(t) = -(pi/2) sin(pi t / 2):
    alpha'(0) = 0, alpha'(1) = -pi/2.
    """
    return Schedule(
        lambda t: jnp.cos(jnp.pi * t / 2),
        lambda t: -(jnp.pi / 2) * jnp.sin(jnp.pi * t / 2),
        "chen_sine",
        builtin=True,
    )


# ---- Chen2025: its time and its weight schedules gamma ------------------------------------------------
# Chen2025 runs time tau from mask (tau = 0, alpha_C = 0) to data (tau = 1, alpha_C = 1); the toolkit runs
# t from data (t = 0, alpha = 1) to mask (t = 1). THE conversion, used everywhere Chen's time appears:
#     tau = 1 - t,   alpha_C(tau) = alpha(1 - tau),   alpha_C'(tau) = -alpha'(1 - tau).
# Near tau = 1 the complement sigma = 1 - tau is not representable from tau alone, so the functions of
# Chen's time below take an optional ``sigma`` (= 1 - tau, computed exactly by the caller, e.g. a
# tanh-sinh quadrature); it defaults to 1 - tau.
def chen_time(t):
    """Chen2025's time tau = 1 - t of the toolkit's time t (and back: the map is its own inverse)."""
    return 1.0 - t


def toolkit_time(tau):
    """The toolkit's time t = 1 - tau of Chen2025's time tau."""
    return 1.0 - tau


def chen_alpha(schedule: Schedule, tau, sigma=None):
    """Chen2025's alpha_C(tau) = fraction unmasked at Chen time tau = the toolkit's alpha(t = 1 - tau).

    ``sigma`` = 1 - tau if given (exact complement): the schedule is evaluated at t = sigma.
    """
    return schedule.alpha(toolkit_time(jnp.asarray(tau)) if sigma is None else sigma)


def chen_dalpha(schedule: Schedule, tau, sigma=None):
    """d alpha_C / d tau = -alpha'(t) at t = 1 - tau (or t = sigma): positive for a valid schedule."""
    return -schedule.dalpha(toolkit_time(jnp.asarray(tau)) if sigma is None else sigma)


def _pair(tau, sigma):
    tau = jnp.asarray(tau, dtype=jnp.result_type(float))
    return tau, (1.0 - tau if sigma is None else jnp.asarray(sigma, dtype=tau.dtype))


@dataclass(frozen=True, eq=False)
class Weight:
    """Chen2025's weight schedule gamma(tau) in Chen's time: increasing, gamma(0) = 0, gamma(1) = 1.

    It enters every Chen2025 energy as 1 / gamma'(tau) (:mod:`theory.energy`). The functions take
    ``(tau, sigma)`` with sigma = 1 - tau exact, so that built-in weights are accurate at both ends:
    ``gamma_fn(tau, sigma)``, ``dgamma_fn(tau, sigma)`` = gamma'(tau) and ``cgamma_fn(tau, sigma)`` =
    1 - gamma(tau). Weights hash by value like :class:`Schedule` (built-ins by (name, params)).
    """

    gamma_fn: Callable
    dgamma_fn: Callable
    cgamma_fn: Callable
    name: str
    params: dict = field(default_factory=dict)
    builtin: bool = False

    def _identity(self):
        p = tuple(sorted(self.params.items()))
        return (self.name, p) if self.builtin else (self.name, p, self.gamma_fn, self.dgamma_fn, self.cgamma_fn)

    def __eq__(self, other):
        return isinstance(other, Weight) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def gamma(self, tau, sigma=None):
        return self.gamma_fn(*_pair(tau, sigma))

    def dgamma(self, tau, sigma=None):
        return self.dgamma_fn(*_pair(tau, sigma))

    def cgamma(self, tau, sigma=None):
        """1 - gamma(tau), accurate near tau = 1 for the built-in weights."""
        return self.cgamma_fn(*_pair(tau, sigma))

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({ps})"


def _log_beta(a, b):
    return jsp.gammaln(a) + jsp.gammaln(b) - jsp.gammaln(a + b)


def _betainc_pair(a, b, tau, sigma):
    """I_tau(a, b), evaluated through the complement 1 - I_sigma(b, a) where tau > 1/2 (accurate both ends)."""
    lo = tau <= 0.5
    return jnp.where(lo, jsp.betainc(a, b, jnp.where(lo, tau, 0.5)), 1.0 - jsp.betainc(b, a, jnp.where(lo, 0.5, sigma)))


def _beta_pdf_pair(a, b, tau, sigma):
    return jnp.exp(jsp.xlogy(a - 1.0, tau) + jsp.xlogy(b - 1.0, sigma) - _log_beta(a, b))


def beta_weight(a: float, b: float) -> Weight:
    """Chen2025's Beta weight gamma(tau) = I_tau(a, b) (regularised incomplete beta, the Beta(a, b) CDF),
    gamma'(tau) = tau^(a-1) (1 - tau)^(b-1) / B(a, b). Beta(1, 1) is the linear weight gamma = tau.

    With it, Chen2025's optimal schedule alpha_C = sin^2((pi/2) gamma) is :func:`sin2_beta` (a, b).
    Beta(1, 1) (gamma = tau) and Beta(0.5, 0.5) (gamma = (2/pi) arcsin sqrt(tau)) are written in closed form.
    """
    a, b = _check_ab(a, b)
    if a == b == 1.0:  # closed form (no betainc to compile): gamma = tau
        return Weight(lambda tau, sigma: tau, lambda tau, sigma: jnp.ones_like(tau), lambda tau, sigma: sigma,
                      "beta_weight", {"a": a, "b": b}, builtin=True)  # fmt: skip
    if a == b == 0.5:  # closed form: gamma = (2/pi) arcsin sqrt(tau), gamma' = 1 / (pi sqrt(tau (1 - tau)))
        return Weight(
            lambda tau, sigma: jnp.arctan2(jnp.sqrt(tau), jnp.sqrt(sigma)) / (jnp.pi / 2),
            lambda tau, sigma: 1.0 / (jnp.pi * jnp.sqrt(tau) * jnp.sqrt(sigma)),
            lambda tau, sigma: jnp.arctan2(jnp.sqrt(sigma), jnp.sqrt(tau)) / (jnp.pi / 2),
            "beta_weight",
            {"a": a, "b": b},
            builtin=True,
        )
    return Weight(
        lambda tau, sigma: _betainc_pair(a, b, tau, sigma),
        lambda tau, sigma: _beta_pdf_pair(a, b, tau, sigma),
        lambda tau, sigma: _betainc_pair(b, a, sigma, tau),
        "beta_weight",
        {"a": a, "b": b},
        builtin=True,
    )


def linear_weight() -> Weight:
    """gamma(tau) = tau (Beta(1, 1)): Chen2025's energies without reweighting."""
    return beta_weight(1.0, 1.0)


def validate_weight(weight: Weight, tol: float = 1e-10) -> Weight:
    """Check gamma(0) = 0, gamma(1) = 1, gamma increasing and gamma' >= 0 finite on a fine interior grid."""
    require_x64("weight validation")
    if not isinstance(weight, Weight):
        raise TypeError(f"expected a theory.schedules.Weight, got {type(weight).__name__}.")
    tau = np.linspace(0.0, 1.0, _GRID)
    g = np.asarray(weight.gamma(jnp.asarray(tau), jnp.asarray(1.0 - tau)), dtype=np.float64)
    d = np.asarray(weight.dgamma(jnp.asarray(tau), jnp.asarray(1.0 - tau)), dtype=np.float64)[1:-1]  # interior
    if not np.all(np.isfinite(g)) or not np.all(np.isfinite(d)):
        raise ValueError(f"weight {weight} gives non-finite gamma(tau) or gamma'(tau) on [0, 1].")
    if abs(g[0]) > tol or abs(g[-1] - 1.0) > tol:
        raise ValueError(
            f"weight {weight} must run from gamma(0) = 0 to gamma(1) = 1 (got {g[0]:.6g}, {g[-1]:.6g}); "
            "rescale it as (gamma(tau) - gamma(0)) / (gamma(1) - gamma(0))."
        )
    dg = np.diff(g)
    if np.any(dg < -tol) or np.any(d < -tol):
        i = int(np.argmin(dg))
        raise ValueError(
            f"weight {weight} is not increasing: gamma falls from {g[i]:.6g} at tau={tau[i]:.4f} to {g[i + 1]:.6g} "
            f"(or gamma' < 0 somewhere). Chen2025's gamma must increase from 0 to 1."
        )
    if np.all(d <= tol):
        raise ValueError(f"weight {weight} has gamma' = 0 everywhere; it must increase from 0 to 1.")
    return weight


def weight_from_function(gamma: Callable, dgamma: Callable | None = None, name: str = "custom", **params) -> Weight:
    """A user weight from a jax.numpy function gamma(tau) (Chen's time); gamma' defaults to ``jax.grad``.

    Validated (:func:`validate_weight`); 1 - gamma is computed as 1 - gamma(tau) (no extra accuracy at tau -> 1).
    """
    dg = _derivative(gamma) if dgamma is None else dgamma
    return validate_weight(
        Weight(
            lambda tau, sigma: gamma(tau),
            lambda tau, sigma: dg(tau),
            lambda tau, sigma: 1.0 - gamma(tau),
            name,
            dict(params),
        )  # fmt: skip
    )


@dataclass(frozen=True)
class PerPosition:
    """One schedule per position, alpha_{t,l} (Garg2025): ``alpha(t)``, ``dalpha(t)`` return t.shape + (L,).

    Used by the training loss and its evaluation (:mod:`theory.elbo`); the samplers take a shared schedule.
    """

    schedules: tuple

    def __post_init__(self):
        sch = tuple(self.schedules)
        if not sch or not all(isinstance(x, Schedule) for x in sch):
            raise TypeError("PerPosition needs a non-empty sequence of theory.schedules.Schedule (one per position).")
        object.__setattr__(self, "schedules", sch)

    @property
    def length(self) -> int:
        return len(self.schedules)

    def alpha(self, t):
        return jnp.stack([s.alpha(t) for s in self.schedules], axis=-1)

    def dalpha(self, t):
        return jnp.stack([s.dalpha(t) for s in self.schedules], axis=-1)


# ---- discretisation ---------------------------------------------------------------------------
def step_times(steps: int) -> np.ndarray:
    """Grid 1 = t_N > ... > t_0 = 0 in sampling order: array [1, 1 - 1/N, ..., 0] of length N + 1."""
    N = check_steps(steps)
    return 1.0 - np.arange(N + 1) / N


def alphas_on_grid(schedule: Schedule, steps: int) -> np.ndarray:
    """alpha at the N + 1 grid times in sampling order (starts at alpha(1) = 0, ends at alpha(0) = 1)."""
    require_x64("schedule discretisation")
    validate(schedule)
    a = np.array(schedule.alpha(jnp.asarray(step_times(steps))), dtype=np.float64)
    a[0], a[-1] = 0.0, 1.0
    return np.maximum.accumulate(np.clip(a, 0.0, 1.0))


def fixed_counts(schedule: Schedule, steps: int, length: int) -> np.ndarray:
    """Tokens revealed per step, k_1..k_N (int64, sum L): k_n = round(L alpha_{s_n}) - round(L alpha_{t_n})."""
    _, L = check_vocab_length(2, length)
    a = alphas_on_grid(schedule, steps)
    R = np.floor(L * a + 0.5 + 1e-9).astype(np.int64)
    R[0], R[-1] = 0, L
    R = np.maximum.accumulate(R)
    return np.diff(R)


def reveal_probs(schedule: Schedule, steps: int) -> np.ndarray:
    """Per-step Bernoulli reveal probability of a masked token, (alpha_s - alpha_t)/(1 - alpha_t), shape (N,)."""
    a = alphas_on_grid(schedule, steps)
    at, as_ = a[:-1], a[1:]
    den = 1.0 - at
    p = np.where(den > 0, (as_ - at) / np.where(den > 0, den, 1.0), 1.0)
    p[-1] = 1.0
    return np.clip(p, 0.0, 1.0)


def check_counts(counts, length: int) -> np.ndarray:
    """Validate user-given per-step counts: non-negative ints summing to L."""
    c = np.asarray(counts)
    if c.ndim != 1 or c.size < 1 or c.dtype.kind not in "iu":
        raise ValueError(f"counts must be a 1-D sequence of ints (one per step), got {counts!r}.")
    if np.any(c < 0) or int(c.sum()) != length:
        raise ValueError(
            f"counts must be >= 0 and sum to the length L = {length}; got {c.tolist()} (sum {int(c.sum())})."
        )
    return c.astype(np.int64)
