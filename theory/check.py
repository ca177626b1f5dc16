"""Is your sampler correct? One call: :func:`check_sampler` runs a black-box sampler on a world whose law
is known and tests its output against the law it claims to follow, at a stated significance level.

The user passes

* ``user_sampler``: any callable ``(key, denoiser, num) -> tokens (num, L)`` (a returned
  :class:`theory.sampling.Samples` or a ``(tokens, nfe)`` pair is accepted too), treated as a black box;
* ``language``: a :class:`theory.language.Language` (Joint, MarkovChain, NGram, HMM, a task ...); the
  sampler gets ``language.denoiser()`` (the exact or oracle conditionals) unless ``denoiser`` is given;
* ``reference``: the law it claims to follow — any object with ``exact_law(joint_or_denoiser, steps)`` and
  ``sample(key, denoiser, steps, num=...)`` (a registered sampler), a :class:`Reference`, or a dict
  ``dict(policy=..., reveal=..., schedule=..., counts=...)`` (turned into a :class:`Reference`).

**Enumerable instances** (V**L <= ``max_cells`` and ``language.joint()`` exists): the empirical law of the
``num`` sequences is compared with the reference's exact law p over V**L by

* Pearson's chi-square  X^2 = sum_g (O_g - E_g)^2 / E_g  and
* the likelihood-ratio  G = 2 sum_g O_g log(O_g / E_g)  (0 log 0 = 0),

both on the same cells g with E_g = num * p_g, dof = #cells - 1, p-values from the chi-square law.
**Pooling rule** (Cochran's): sequences with p = 0 are not cells (see support below); every sequence with
expected count >= 5 is its own cell; the others are merged, smallest expected count first, into groups
of expected count >= 5 (a last group below 5 joins the previous group, or the smallest cell if there is
none). **Support**: a generated sequence with p = 0 under the reference (or a token outside 0..V-1) is
an immediate failure, p = 0, and the report names examples.

**Long sequences** (not enumerable): per-position tests (V cells, dof V - 1, one per position) and
adjacent-pair tests (V**2 cells, one per pair (i, i+1)), pooled by the same rule within each test.
Expected counts are exact where the reference law is known in closed form — a :class:`Reference` that
reveals one token per step (fixed counts, every count <= 1: N >= L with the linear schedule) with the
language's own exact conditionals samples q itself, whatever the order (chain rule), so its position
and pair marginals are q's, computed from ``language.denoiser()`` (q(x_i) at the all-mask state,
q(x_{i+1} | x_i) with x_i visible). Otherwise the reference's own Monte-Carlo sample of the same size
(``reference.sample`` with an independent key) is the comparison, by the two-sample (homogeneity)
chi-square  sum_g (a_g - b_g)^2 / (a_g + b_g)  (equal sizes), dof = #cells - 1, cells pooled by
(a_g + b_g) / 2 >= 5.

**Multiple testing**: Bonferroni over the m tests run (m = 2 on enumerable instances, 2L - 1 on long
ones): the sampler fails if any p-value < alpha / m (the same verdict as Holm's procedure, whose first
step is that comparison). A correct sampler therefore fails with probability <= alpha (asymptotically:
the chi-square law of the statistics is a large-sample approximation, which the pooling rule supports).

**Power** (:func:`power`, :func:`sample_size`, :func:`detectable_tv`): under an alternative law a, the
Pearson statistic is approximately noncentral chi-square with dof d and noncentrality
lambda = num * sum_g (a_g - p_g)^2 / p_g. By Cauchy-Schwarz, sum_g (a_g - p_g)^2 / p_g >= 4 TV(a, p)^2
(TV on the pooled cells), so every law at TV >= delta from the reference is detected with power at
least 1 - F_ncx2(chi2_{d, 1 - alpha/m}; d, 4 num delta^2). ``check_sampler``'s default ``num`` is the
smallest that gives power >= 0.9 for ``effect`` (TV, default 0.05) on enumerable instances, and the
report states the TV it detects at the ``num`` used. Two-sample tests have lambda >= 2 num delta^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import chi2, ncx2

from . import sampling
from .language import check_language
from .policies import RandomOrder
from .schedules import Schedule
from .validation import check_size, require_x64

#: Cochran's rule: a cell's expected count must be at least this (smaller cells are pooled).
MIN_EXPECTED = 5.0
#: Default largest V**L for the exact (enumerated) test; above it the marginal tests run.
MAX_CELLS = 4096
#: Default effect size (TV distance) that the default ``num`` detects with power >= ``POWER``.
EFFECT_TV = 0.05
POWER = 0.9
METHODS = ("auto", "exact", "marginals")


# ================================ the reference law ==================================================
@dataclass(frozen=True)
class Reference:
    """A sampler described by its knobs: ``policy`` (default RandomOrder), ``reveal`` ("fixed" |
    "bernoulli"), ``schedule`` (default linear), ``counts`` (explicit per-step counts). Implements the
    registered-sampler interface through :func:`theory.sampling.exact_law` and :func:`theory.sampling.sample`."""

    policy: Any = None
    reveal: str = "fixed"
    schedule: Schedule | None = None
    counts: tuple | None = None

    def __post_init__(self):
        if self.reveal not in sampling.REVEALS:
            raise ValueError(f"reveal must be one of {sampling.REVEALS}, got {self.reveal!r}.")
        if self.counts is not None:
            object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

    @property
    def name(self) -> str:
        pol = type(self.policy).__name__ if self.policy is not None else "RandomOrder"
        sched = "" if self.schedule is None else f", {type(self.schedule).__name__}"
        cnt = "" if self.counts is None else f", counts {list(self.counts)}"
        return f"{pol} ({self.reveal}{sched}{cnt})"

    def _steps(self, steps):
        return None if self.counts is not None and steps is None else steps

    def exact_law(self, joint_or_denoiser, steps) -> sampling.Law:
        return sampling.exact_law(
            joint_or_denoiser,
            self.policy,
            self._steps(steps),
            reveal=self.reveal,
            schedule=self.schedule,
            counts=self.counts,
        )

    def sample(self, key, denoiser, steps, *, num: int) -> sampling.Samples:
        return sampling.sample(
            key,
            denoiser,
            self.policy,
            self._steps(steps),
            num=num,
            reveal=self.reveal,
            schedule=self.schedule,
            counts=self.counts,
        )

    def samples_data(self, length: int, steps) -> bool:
        """True if, with exact conditionals, this sampler's law is q itself: it reveals at most one token
        per step (fixed counts <= 1), so each token is drawn from q's exact conditional given all
        revealed ones (chain rule; holds for any order, adaptive or not)."""
        if self.reveal != "fixed":
            return False
        policy = RandomOrder() if self.policy is None else self.policy
        if not getattr(policy, "uses_count", True):
            return False
        plan = sampling.make_plan(policy, length, self._steps(steps), schedule=self.schedule, counts=self.counts)
        return bool(np.all(plan.values <= 1))


def as_reference(reference):
    """A dict of knobs -> :class:`Reference`; an object with ``exact_law`` and ``sample`` -> itself."""
    if isinstance(reference, dict):
        unknown = set(reference) - {"policy", "reveal", "schedule", "counts"}
        if unknown:
            raise TypeError(
                f"a reference dict takes the keys policy, reveal, schedule, counts; got unknown {sorted(unknown)}."
            )
        return Reference(**reference)
    if callable(getattr(reference, "exact_law", None)) and callable(getattr(reference, "sample", None)):
        return reference
    raise TypeError(
        "reference must be a registered sampler (with exact_law(joint_or_denoiser, steps) and "
        "sample(key, denoiser, steps, num=...)), a theory.check.Reference, or a dict "
        f"dict(policy=..., reveal=..., schedule=..., counts=...); got {type(reference).__name__}."
    )


def reference_name(reference) -> str:
    return str(getattr(reference, "name", type(reference).__name__))


# ================================ pooling and power ==================================================
def pool_cells(expected, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """Group labels (K,) for cells with expected counts ``expected`` (K,) by Cochran's rule (module
    docstring): cells with expected >= min_expected alone, the rest merged smallest first into groups of
    expected >= min_expected; cells with expected 0 get label -1 (not a cell)."""
    e = np.asarray(expected, dtype=np.float64)
    labels = np.full(e.shape, -1, dtype=np.int64)
    big = np.nonzero(e >= min_expected)[0]
    labels[big] = np.arange(big.size)
    small = np.nonzero((e > 0) & (e < min_expected))[0]
    small = small[np.argsort(e[small], kind="stable")]
    g, acc, groups = big.size, 0.0, []
    current: list = []
    for i in small:
        current.append(i)
        acc += e[i]
        if acc >= min_expected:
            groups.append(current)
            current, acc = [], 0.0
    if current:  # a last group below the threshold joins the previous group, or the smallest big cell
        if groups:
            groups[-1] = groups[-1] + current
        elif big.size:
            labels[current] = labels[big[np.argmin(e[big])]]
        else:
            groups.append(current)  # everything is small: one cell (dof 0)
    for grp in groups:
        labels[grp] = g
        g += 1
    return labels


def _grouped(values, labels) -> np.ndarray:
    ok = labels >= 0
    return np.bincount(labels[ok], weights=np.asarray(values, dtype=np.float64)[ok], minlength=int(labels.max()) + 1)


def _check_level(alpha, name="alpha"):
    if not 0 < float(alpha) < 1:
        raise ValueError(f"{name} must be in (0, 1), got {alpha}.")
    return float(alpha)


def power_at(noncentrality: float, dof: int, level: float) -> float:
    """P(noncentral chi-square(dof, lambda) > chi2_{dof, 1 - level}): the asymptotic power of a chi-square
    test at ``level`` under noncentrality lambda."""
    if dof < 1:
        return 0.0
    crit = chi2.isf(level, dof)
    return float(ncx2.sf(crit, dof, max(float(noncentrality), 1e-300)))


def noncentrality(reference_probs, alternative_probs, num: int, *, min_expected: float = MIN_EXPECTED):
    """lambda = num * sum_g (a_g - p_g)^2 / p_g on the cells pooled at ``num`` from the reference law p
    (the law the alternative a is tested against); returns (lambda, dof, mass of a outside p's support)."""
    p = np.asarray(reference_probs, dtype=np.float64).ravel()
    a = np.asarray(alternative_probs, dtype=np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(f"reference and alternative laws differ in size: {p.size} vs {a.size}.")
    labels = pool_cells(num * p, min_expected)
    pg, ag = _grouped(p, labels), _grouped(a, labels)
    lam = float(num * np.sum((ag - pg) ** 2 / pg))
    return lam, int(pg.size - 1), float(a[labels < 0].sum())


def power(reference_probs, alternative_probs, num: int, alpha: float = 0.01, *, tests: int = 2) -> float:
    """Lower bound on the probability that :func:`check_sampler` (enumerable path, ``num`` samples, level
    ``alpha`` Bonferroni-split over ``tests`` tests) flags a sampler whose exact law is
    ``alternative_probs`` when the reference law is ``reference_probs`` (both (V**L,)).

    max of the Pearson test's asymptotic power 1 - F_ncx2(chi2_{d, 1 - alpha/tests}; d, lambda)
    (:func:`noncentrality`) and the support check's 1 - (1 - m)^num, m the alternative's mass outside
    the reference's support (either alone makes the sampler fail).
    """
    alpha = _check_level(alpha)
    lam, dof, out = noncentrality(reference_probs, alternative_probs, num)
    return max(power_at(lam, dof, alpha / tests), 1.0 - (1.0 - out) ** num)


def _lambda_for(dof: int, level: float, target: float) -> float:
    """The noncentrality at which a chi-square test (dof, level) has power ``target``."""
    f = lambda lam: power_at(lam, dof, level) - target  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2.0
    return float(brentq(f, 1e-9, hi, xtol=1e-10))


def sample_size(tv: float, dof: int, alpha: float = 0.01, power: float = POWER, *, tests: int = 2) -> int:
    """The smallest ``num`` at which every law at TV >= ``tv`` from the reference is flagged with power
    >= ``power`` by a chi-square test with ``dof`` at level alpha / tests: num = ceil(lambda* / (4 tv^2)),
    lambda* the noncentrality giving that power (module docstring)."""
    if not 0 < tv <= 1:
        raise ValueError(f"tv must be in (0, 1], got {tv}.")
    _check_level(power, "power")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}.")
    return int(math.ceil(_lambda_for(int(dof), _check_level(alpha) / tests, power) / (4.0 * tv * tv)))


def detectable_tv(num: int, dof: int, alpha: float = 0.01, power: float = POWER, *, tests: int = 2, scale=4.0):
    """The TV distance detected with probability >= ``power`` at ``num`` samples: sqrt(lambda* / (scale num))
    (scale 4 for a test against an exact law, 2 for the two-sample test). NaN if dof < 1."""
    if dof < 1:
        return float("nan")
    return float(math.sqrt(_lambda_for(int(dof), _check_level(alpha) / tests, power) / (scale * num)))


def default_num(probs, tv: float = EFFECT_TV, alpha: float = 0.01, power: float = POWER, *, tests: int = 2) -> int:
    """:func:`sample_size` for a reference law ``probs`` (V**L,): dof from the cells pooled at that num
    (iterated to a fixed point, at most 20 rounds; the largest num seen is returned)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    dof = max(int(np.count_nonzero(p > 0)) - 1, 1)
    num = sample_size(tv, dof, alpha, power, tests=tests)
    best = num
    for _ in range(20):
        labels = pool_cells(num * p)
        new_dof = max(int(labels.max()), 1)  # labels run 0..#cells-1: dof = #cells - 1
        num = sample_size(tv, new_dof, alpha, power, tests=tests)
        best = max(best, num)
        if new_dof == dof:
            break
        dof = new_dof
    return best


# ================================ the report =========================================================
@dataclass(frozen=True)
class GoodnessOfFit:
    """One test: ``name``, ``statistic``, ``dof``, ``p_value`` (and the ``level`` it is compared with)."""

    name: str
    statistic: float
    dof: int
    p_value: float
    level: float

    @property
    def rejected(self) -> bool:
        return bool(self.p_value < self.level)


@dataclass(frozen=True)
class Deviation:
    """A named cell: ``what`` (a sequence, a position's value, a pair's values), ``observed`` and
    ``expected`` counts (two-sample: the reference sample's count) and the standardized residual."""

    what: str
    observed: float
    expected: float
    residual: float


@dataclass(frozen=True)
class CheckReport:
    """Verdict of :func:`check_sampler`.

    ``passed``: no support violation and every p-value >= alpha / m (Bonferroni over the m tests).
    ``statistic``, ``dof``, ``p_value``: of the test with the smallest p-value; ``adjusted_p`` = min(1,
    m p_value). ``deviations``: the largest standardized residuals (support violations first).
    ``detectable_tv``: TV distance detected with power ``power_target`` at this ``num``.
    """

    passed: bool
    alpha: float
    method: str
    reference: str
    num: int
    tests: tuple
    statistic: float
    dof: int
    p_value: float
    adjusted_p: float
    correction: str
    pooling: str
    support_violations: int
    deviations: tuple
    detectable_tv: float
    power_target: float = POWER
    notes: tuple = field(default_factory=tuple)

    def to_frame(self) -> pd.DataFrame:
        """One row per test: test, statistic, dof, p_value, level, rejected (+ num, alpha, method, passed)."""
        rows = [
            dict(test=t.name, statistic=t.statistic, dof=t.dof, p_value=t.p_value, level=t.level, rejected=t.rejected)
            for t in self.tests
        ]
        frame = pd.DataFrame(rows, columns=["test", "statistic", "dof", "p_value", "level", "rejected"])
        frame["num"] = self.num
        frame["alpha"] = self.alpha
        frame["method"] = self.method
        frame["passed"] = self.passed
        return frame

    def deviations_frame(self) -> pd.DataFrame:
        """The named deviations: what, observed, expected, residual."""
        return pd.DataFrame([vars(d) for d in self.deviations], columns=["what", "observed", "expected", "residual"])

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"check_sampler: {verdict} at alpha = {self.alpha:g}  (reference: {self.reference}; {self.num} samples)",
            f"  method: {self.method}",
            f"  pooling: {self.pooling}",
        ]
        if self.support_violations:
            lines.append(f"  {self.support_violations} samples outside the reference law's support: p = 0")
        shown = sorted(self.tests, key=lambda t: t.p_value)[:4]
        for t in shown:
            lines.append(f"  {t.name}: statistic {t.statistic:.4g}, dof {t.dof}, p = {t.p_value:.3g}")
        if len(self.tests) > len(shown):
            lines.append(f"  ... {len(self.tests) - len(shown)} more tests (smallest p-values shown)")
        lines.append(f"  {self.correction}")
        if self.deviations:
            lines.append("  largest deviations (observed vs expected count, standardized residual):")
            for d in self.deviations:
                lines.append(f"    {d.what}: {d.observed:g} vs {d.expected:.4g}  ({d.residual:+.2f})")
        if np.isfinite(self.detectable_tv):
            lines.append(
                f"  power: at this num a law at TV >= {self.detectable_tv:.3g} from the reference is flagged with "
                f"probability >= {self.power_target:g} (noncentral chi-square)"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ================================ running the user's sampler ==========================================
def _key(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    return key


def _tokens(out, num: int, V: int, L: int) -> np.ndarray:
    """The user's output as an int array (num, L): accepts an array, a Samples, or (tokens, nfe)."""
    if hasattr(out, "tokens"):
        out = out.tokens
    elif isinstance(out, (tuple, list)) and len(out) == 2 and np.ndim(out[0]) == 2:
        out = out[0]
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape != (num, L):
        raise ValueError(
            f"user_sampler must return tokens of shape (num, L) = ({num}, {L}) (or a Samples / (tokens, nfe)); "
            f"got shape {arr.shape}."
        )
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"user_sampler must return integer tokens; got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _fmt_seq(row) -> str:
    return " ".join(str(int(v)) for v in row)


def check_sampler(
    user_sampler,
    language,
    *,
    reference,
    steps,
    num: int | None = None,
    alpha: float = 0.01,
    key=0,
    denoiser=None,
    method: str = "auto",
    effect: float = EFFECT_TV,
    max_cells: int = MAX_CELLS,
    top: int = 5,
) -> CheckReport:
    """Test whether ``user_sampler`` samples the law of ``reference`` (N = ``steps``) on ``language``.

    Parameters
    ----------
    user_sampler: a black box ``(key, denoiser, num) -> tokens (num, L)`` (or Samples / (tokens, nfe)).
    language: a Language; the sampler receives ``denoiser`` or ``language.denoiser()``.
    reference: a registered sampler, a :class:`Reference`, or a dict of its fields.
    num: sample size; default on enumerable instances: the smallest giving power >= 0.9 against every
        law at TV >= ``effect`` (:func:`default_num`); on long sequences 4000.
    alpha: the significance level of the whole check (Bonferroni-split over the tests run).
    key: an int seed or a PRNG key; the user's sampler gets ``fold_in(key, 0)``, the reference's own
        Monte-Carlo sample (two-sample tests) ``fold_in(key, 1)``.
    method: "auto" (exact if V**L <= ``max_cells`` and the language is enumerable), "exact" or "marginals".

    A correct sampler fails with probability about alpha (the chi-square approximation); see the module
    docstring for the tests, the pooling rule and the power rule.
    """
    require_x64("check_sampler")
    check_language(language)
    alpha = _check_level(alpha)
    reference = as_reference(reference)
    if not callable(user_sampler):
        raise TypeError(
            f"user_sampler must be a callable (key, denoiser, num) -> tokens; got {type(user_sampler).__name__}."
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if num is not None and (isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2):
        raise ValueError(f"num must be an int >= 2 (or None for the power-based default), got {num!r}.")
    V, L = int(language.vocab_size), int(language.length)
    enumerable = callable(getattr(language, "joint", None))
    if method == "auto":
        method = "exact" if enumerable and V**L <= max_cells else "marginals"
    if method == "exact" and not enumerable:
        raise ValueError(
            f"method='exact' needs a language with joint() (an enumerable one); {type(language).__name__} has none. "
            "Use method='marginals' (per-position and adjacent-pair tests)."
        )
    key = _key(key)
    exact_den = denoiser is None
    den = language.denoiser() if denoiser is None else denoiser
    if method == "exact":
        check_size(
            8.0 * V**L,
            f"check_sampler's exact law over V**L = {V}**{L} sequences",
            None,
            "Use method='marginals' (per-position and adjacent-pair tests, any length)",
        )
        joint = language.joint()
        law = np.asarray(reference.exact_law(joint if exact_den else den, steps).probs, dtype=np.float64)
        if num is None:
            num = default_num(law, effect, alpha)
        toks = _tokens(user_sampler(jax.random.fold_in(key, 0), den, int(num)), int(num), V, L)
        return _exact_check(toks, law, V, L, alpha, reference_name(reference), top)
    if num is None:
        num = 4000
    toks = _tokens(user_sampler(jax.random.fold_in(key, 0), den, int(num)), int(num), V, L)
    closed = exact_den and callable(getattr(reference, "samples_data", None)) and reference.samples_data(L, steps)
    if closed:
        pos, pair = data_marginals(den, L, V)
        ref_toks = None
    else:
        pos = pair = None
        ref = reference.sample(jax.random.fold_in(key, 1), den, steps, num=int(num))
        ref_toks = _tokens(ref, int(num), V, L)
    return _marginal_check(toks, ref_toks, pos, pair, V, L, alpha, reference_name(reference), top)


# ================================ enumerable: the exact law ===========================================
def _exact_check(toks, law, V, L, alpha, ref_name, top) -> CheckReport:
    num = toks.shape[0]
    m = 2
    level = alpha / m
    bad_range = np.any((toks < 0) | (toks >= V), axis=1)
    idx = np.where(bad_range, 0, np.clip(toks, 0, V - 1) @ (V ** np.arange(L - 1, -1, -1, dtype=np.int64)))
    outside = bad_range | (law[idx] <= 0)
    deviations = []
    if outside.any():
        seen: dict = {}
        for row in toks[outside]:
            seen[_fmt_seq(row)] = seen.get(_fmt_seq(row), 0) + 1
        for what, c in sorted(seen.items(), key=lambda kv: -kv[1])[:top]:
            deviations.append(Deviation(f"x = {what} (outside the support)", float(c), 0.0, float("inf")))
    obs = np.bincount(idx[~outside], minlength=V**L).astype(np.float64)
    exp = num * law
    labels = pool_cells(exp)
    og, eg = _grouped(obs, labels), _grouped(exp, labels)
    dof = int(og.size - 1)
    x2 = float(np.sum((og - eg) ** 2 / eg))
    gstat = float(2.0 * np.sum(np.where(og > 0, og * np.log(np.where(og > 0, og, 1.0) / eg), 0.0)))
    if dof >= 1:
        p_x2, p_g = float(chi2.sf(x2, dof)), float(chi2.sf(gstat, dof))
    else:
        p_x2 = p_g = 1.0
    if outside.any():
        p_x2 = p_g = 0.0
    tests = (
        GoodnessOfFit("Pearson chi-square (exact law)", x2, dof, p_x2, level),
        GoodnessOfFit("G likelihood ratio (exact law)", gstat, dof, p_g, level),
    )
    cells = np.nonzero(exp > 0)[0]
    res = (obs[cells] - exp[cells]) / np.sqrt(exp[cells])
    order = cells[np.argsort(-np.abs(res), kind="stable")][: max(top - len(deviations), 0)]
    seqs = (order[:, None] // (V ** np.arange(L - 1, -1, -1, dtype=np.int64))) % V
    for c, s in zip(order, seqs):
        deviations.append(
            Deviation(f"x = {_fmt_seq(s)}", float(obs[c]), float(exp[c]), float((obs[c] - exp[c]) / np.sqrt(exp[c])))
        )
    pmin = min(p_x2, p_g)
    decisive = tests[0] if p_x2 <= p_g else tests[1]
    small = int(np.count_nonzero((exp > 0) & (exp < MIN_EXPECTED)))
    return CheckReport(
        passed=bool(not outside.any() and pmin >= level),
        alpha=alpha,
        method=f"exact law over V**L = {V}**{L} sequences: Pearson chi-square and G test",
        reference=ref_name,
        num=num,
        tests=tests,
        statistic=decisive.statistic,
        dof=dof,
        p_value=pmin,
        adjusted_p=min(1.0, m * pmin),
        correction=f"Bonferroni over {m} tests: fail if any p < alpha/{m} = {level:.3g}",
        pooling=(
            f"{int(np.count_nonzero(law > 0))} sequences in the reference support; {small} with expected count < "
            f"{MIN_EXPECTED:g} pooled (Cochran) -> {og.size} cells"
        ),
        support_violations=int(outside.sum()),
        deviations=tuple(deviations),
        detectable_tv=detectable_tv(num, dof, alpha, POWER, tests=m),
    )


# ================================ long sequences: marginals ===========================================
def data_marginals(denoiser, length: int, vocab_size: int):
    """q's position marginals (L, V) and adjacent-pair marginals (L-1, V, V) from exact conditionals:
    q(x_i) at the all-mask state, q(x_i = a, x_{i+1} = b) = q(x_i = a) q(x_{i+1} = b | x_i = a)."""
    V, L = vocab_size, length
    allmask = np.full((1, L), V, dtype=np.int32)
    pos = sampling.batched_marginals(denoiser, allmask)[0]  # (L, V)
    if L < 2:
        return pos, np.zeros((0, V, V))
    states = np.full((L - 1, V, L), V, dtype=np.int32)
    states[np.arange(L - 1), :, np.arange(L - 1)] = np.arange(V)[None, :]
    marg = sampling.batched_marginals(denoiser, states.reshape(-1, L)).reshape(L - 1, V, L, V)
    cond = marg[np.arange(L - 1), :, np.arange(1, L), :]  # (L-1, V, V): q(x_{i+1} = b | x_i = a)
    pair = pos[:-1, :, None] * np.where(pos[:-1, :, None] > 0, cond, 0.0)
    return pos, pair


def _one_sample(obs, exp):
    labels = pool_cells(exp)
    og, eg = _grouped(obs, labels), _grouped(exp, labels)
    dof = int(og.size - 1)
    stat = float(np.sum((og - eg) ** 2 / eg))
    outside = float(np.sum(obs[labels < 0]))
    p = 0.0 if outside > 0 else (float(chi2.sf(stat, dof)) if dof >= 1 else 1.0)
    res = np.where(exp > 0, (obs - exp) / np.sqrt(np.where(exp > 0, exp, 1.0)), np.where(obs > 0, np.inf, 0.0))
    return stat, dof, p, res


def _two_sample(a, b):
    labels = pool_cells((a + b) / 2.0)
    ag, bg = _grouped(a, labels), _grouped(b, labels)
    dof = int(ag.size - 1)
    stat = float(np.sum((ag - bg) ** 2 / (ag + bg)))
    p = float(chi2.sf(stat, dof)) if dof >= 1 else 1.0
    res = np.where(a + b > 0, (a - b) / np.sqrt(np.where(a + b > 0, a + b, 1.0)), 0.0)
    return stat, dof, p, res


def _counts(toks, V):
    num, L = toks.shape
    pos = np.zeros((L, V))
    for v in range(V):
        pos[:, v] = np.sum(toks == v, axis=0)
    pidx = toks[:, :-1] * V + toks[:, 1:]  # (num, L-1)
    pair = np.zeros((L - 1, V * V))
    for c in range(V * V):
        pair[:, c] = np.sum(pidx == c, axis=0)
    return pos, pair


def _marginal_check(toks, ref_toks, pos, pair, V, L, alpha, ref_name, top) -> CheckReport:
    num = toks.shape[0]
    bad = np.any((toks < 0) | (toks >= V), axis=1)
    m = L + max(L - 1, 0)
    level = alpha / m
    closed = ref_toks is None
    obs_pos, obs_pair = _counts(np.where(bad[:, None], 0, toks), V)  # invalid rows counted as 0s: they fail anyway
    if closed:
        exp_pos, exp_pair = num * pos, num * pair.reshape(L - 1, V * V)
    else:
        exp_pos, exp_pair = _counts(ref_toks, V)
    tests, cand = [], []
    safe = np.where(bad[:, None], 0, toks)
    violating = bad.copy()
    if closed:  # a sample with a position value or an adjacent pair of probability 0 under q
        violating |= np.any(pos[np.arange(L), safe] <= 0, axis=1)
        if L > 1:
            violating |= np.any(pair[np.arange(L - 1), safe[:, :-1], safe[:, 1:]] <= 0, axis=1)
    outside = int(violating.sum())
    for kind, obs, exp in (("position", obs_pos, exp_pos), ("pair", obs_pair, exp_pair)):
        for i in range(obs.shape[0]):
            stat, dof, p, res = _one_sample(obs[i], exp[i]) if closed else _two_sample(obs[i], exp[i])
            name = f"position {i}" if kind == "position" else f"pair ({i}, {i + 1})"
            tests.append(GoodnessOfFit(name, stat, dof, p, level))
            c = int(np.argmax(np.abs(res)))
            what = f"x_{i} = {c}" if kind == "position" else f"(x_{i}, x_{i + 1}) = ({c // V}, {c % V})"
            cand.append((p, -abs(res[c]), Deviation(what, float(obs[i][c]), float(exp[i][c]), float(res[c]))))
    if bad.any():
        tests.append(GoodnessOfFit("tokens outside 0..V-1", float("inf"), 0, 0.0, level))
    cand.sort(key=lambda t: (t[0], t[1]))
    deviations = tuple(d for _, _, d in cand[:top])
    if bad.any():
        deviations = (Deviation(f"x = {_fmt_seq(toks[bad][0])} (token outside 0..{V - 1})", 1.0, 0.0, float("inf")),)
        deviations += tuple(cand_d for _, _, cand_d in cand[: top - 1])
    tmin = min(tests, key=lambda t: t.p_value)
    passed = bool(tmin.p_value >= level)
    if closed:
        how = "exact marginals of q (the reference reveals one token per step with exact conditionals: its law is q)"
    else:
        how = "two-sample chi-square against the reference's own Monte-Carlo sample of the same size"
    pair_dof = max((t.dof for t in tests if t.name.startswith("pair")), default=0)
    return CheckReport(
        passed=passed,
        alpha=alpha,
        method=f"per-position ({L}) and adjacent-pair ({max(L - 1, 0)}) chi-square tests vs {how}",
        reference=ref_name,
        num=num,
        tests=tuple(tests),
        statistic=tmin.statistic,
        dof=tmin.dof,
        p_value=tmin.p_value,
        adjusted_p=min(1.0, m * tmin.p_value),
        correction=f"Bonferroni over {m} tests: fail if any p < alpha/{m} = {level:.3g} (the verdict of Holm's too)",
        pooling=f"within each test, cells with expected count < {MIN_EXPECTED:g} pooled (Cochran)",
        support_violations=outside,
        deviations=deviations,
        detectable_tv=detectable_tv(num, pair_dof, alpha, POWER, tests=m, scale=4.0 if closed else 2.0),
        notes=(f"detectable TV is per adjacent pair's law (dof {pair_dof}) at level alpha/{m}",),
    )


def law_pair_marginals(probs, vocab_size: int, length: int) -> np.ndarray:
    """Adjacent-pair marginals (L-1, V, V) of a law over V**L (flat, row-major as theory.states)."""
    V, L = int(vocab_size), int(length)
    p = np.asarray(probs, dtype=np.float64).reshape((V,) * L)
    out = np.zeros((max(L - 1, 0), V, V))
    for i in range(L - 1):
        out[i] = p.sum(axis=tuple(j for j in range(L) if j not in (i, i + 1)))
    return out


def transition_mismatch(probs, reference_probs, vocab_size: int, length: int) -> np.ndarray:
    """TV distance between the adjacent-pair laws of two laws over V**L, per pair (L-1,): the
    "transition-level" mismatch of Tang et al. 2026 (their Markov-data diagnostic), exactly."""
    a = law_pair_marginals(probs, vocab_size, length)
    b = law_pair_marginals(reference_probs, vocab_size, length)
    return 0.5 * np.abs(a - b).sum(axis=(1, 2))
