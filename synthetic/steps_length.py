"""Feng2025 measurements: TER gap and SER of the MDM sampler versus steps N and length L.

Library side of ``experiments/steps_vs_length.py`` (the script is a thin loop over these functions).
Every function takes any Language (:mod:`theory.language`) and uses only its protocol members.

Single measurements

* :func:`exact_metrics` — exact log TER, TER gap, SER and KL(q||p_N) by enumeration (small L, any
  enumerable language) for any denoiser.
* :func:`mc_metrics` — Monte-Carlo log TER / TER gap / SER with standard errors at any L, through the
  core sampler :func:`theory.sampling.sample` and the language's exact conditionals (``denoiser()``),
  log q (``log_prob``) and H(q) (``entropy()``). The TER gap's reference log TER(q) = H(q)/L is exact, so
  its standard error is that of the sample mean of -log q(x)/L.

The figures' grids (Feng2025 Figs. 1-3 on our synthetic languages)

* :func:`feng_language` — the named languages of the figures at any length (cached: one object, one
  denoiser and so one compilation of the sampler per (name, L, seed)).
* :func:`ter_curves`, :func:`ser_curves` — the measured curves of Figures 1 and 2 (:class:`Curve`: a
  language at a length, a method, a reveal mode, the steps, and the labels of its PRNG keys);
  :func:`measure_curve` measures one curve, one row per N.
* :func:`min_steps_rows` — Figure 3: the smallest N reaching TER gap <= eps and SER <= delta per
  language and L (closed forms and exact searches over every N where they exist, else the measured grid).
* :func:`learning_error_rows` — the learning-error variant: the TER gap of an imperfect denoiser (smoothed
  or learned) next to the exact denoiser's, their move, and the *total* gap against Feng2025's bound
  eps_learning + 4 eps log|V| at the eps implied by N (:func:`feng_bound_columns`, O-constant 1).

Randomness: the Monte-Carlo point at step N of a curve uses ``mc_key(seed, *curve.labels, N)`` (the same
fold-in chain as ``experiments._common.point_key``), and every row records it as ``point_key``
("seed/label/.../N"), so any row of a CSV can be re-measured alone. All MC calls draw in batches of
:data:`MC_BATCH` (the tokens do not depend on the batch size; a fixed batch shape means one compilation
per language object and reveal mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jax
import numpy as np

from theory import bounds as B
from theory import metrics
from theory import schedules as S
from theory.language import check_language, is_correct
from theory.policies import RandomOrder
from theory.sampling import exact_law, sample
from theory.validation import require_x64

from . import languages as la
from . import worst_case as wc

#: Batch size of every Monte-Carlo call here (the tokens do not depend on it; one shape, one compilation).
MC_BATCH = 200
#: Figure 1 enumerates a language exactly when (V + 1)**L is at most this many partial states.
EXACT_MAX_STATES = 3**8
#: Key labels (the first label folded into PRNGKey(seed)) of the figures' Monte-Carlo points and training.
FIG_TER, FIG_SER, TRAIN = 1, 2, 4
#: Figure 1's languages (full support: finite log TER) and Figure 2's worst cases (hard constraints).
TER_LANGUAGES = ("bigram V=3 h=0.6", "trigram V=2 h=0.35", "noisy copy pairs")
SER_LANGUAGES = ("copy pairs", "additive 3-gram V=2")
REVEALS = ("bernoulli", "fixed")
METHODS = ("exact", "exact (block product)", "closed form", "mc")


# ---- single measurements ---------------------------------------------------------------------------
def exact_metrics(lang, steps: int, *, reveal: str = "bernoulli", schedule=None, denoiser=None, policy=None) -> dict:
    """Exact log TER(p_N), TER gap, SER and KL(q || p_N) by enumeration (small L).

    ``lang``: an enumerable language (``joint()``, e.g. a Joint); ``denoiser`` defaults to q's exact denoiser.
    """
    require_x64("exact_metrics")
    q = lang.joint()
    law = exact_law(
        q, RandomOrder() if policy is None else policy, steps, reveal=reveal, schedule=schedule, denoiser=denoiser
    )
    p = np.asarray(law.probs)
    lt = metrics.log_ter(p, q)
    lq = q.entropy() / q.length
    return {
        "log_ter": lt,
        "log_ter_q": lq,
        "ter_gap": lt - lq,
        "ter_gap_se": 0.0,
        "ser": metrics.sequence_error_rate(p, q),
        "ser_se": 0.0,
        "kl_q_p": metrics.kl(np.asarray(q.probs), p),
        "expected_nfe": law.expected_nfe,
        "law": p,
    }


def mc_metrics(
    key,
    lang,
    steps: int,
    *,
    num: int,
    reveal: str = "bernoulli",
    schedule=None,
    denoiser=None,
    policy=None,
    batch_size: int | None = None,
) -> dict:
    """Monte-Carlo log TER(p_N), TER gap and SER with standard errors, and the mean NFE, at any L.

    ``lang``: any Language; ``denoiser`` defaults to its exact conditionals (``lang.denoiser()``);
    ``policy`` to RandomOrder (Feng2025's sampler). Samples are scored with the language's exact log q;
    log TER(q) = H(q)/L is exact. ``scores`` holds the per-sample -log q(x)/L (num,) (for paired
    comparisons of two denoisers run with the same key).
    """
    require_x64("mc_metrics")
    check_language(lang)
    d = lang.denoiser() if denoiser is None else denoiser
    s = sample(
        key,
        d,
        RandomOrder() if policy is None else policy,
        steps,
        num=num,
        reveal=reveal,
        schedule=schedule,
        batch_size=batch_size,
    )
    toks = np.asarray(s.tokens)
    lq_x = np.asarray(lang.log_prob(toks), dtype=np.float64)
    L = toks.shape[1]
    ok = is_correct(lang, toks)
    lqr = lang.entropy() / L
    ser = metrics.ser_mc(ok)
    ter = metrics.log_ter_mc(lq_x, L)  # +inf (mean and se) if a sample leaves the support
    nfe = metrics.mean_se(np.asarray(s.nfe, dtype=np.float64))
    return {
        "log_ter": ter.mean,
        "log_ter_q": lqr,
        "ter_gap": ter.mean - lqr,
        "ter_gap_se": ter.se,
        "ser": ser.mean,
        "ser_se": ser.se,
        "n": len(lq_x),
        "nfe": nfe.mean,
        "nfe_se": nfe.se,
        "scores": -lq_x / L,
    }


def min_steps(steps, values, target: float, se=None, z: float = 0.0):
    """Smallest N in ``steps`` (sorted) with value + z * se <= target, or None if none does."""
    steps = np.asarray(steps)
    v = np.asarray(values, dtype=np.float64) + (0.0 if se is None else z * np.asarray(se, dtype=np.float64))
    order = np.argsort(steps, kind="stable")
    for N, val in zip(steps[order], v[order]):
        if val <= target:
            return int(N)
    return None


def first_step_reaching(value_at, target: float, max_steps: int = 4096):
    """Smallest N in 1..``max_steps`` with ``value_at(N) <= target`` (a scan over every N), or None."""
    for N in range(1, int(max_steps) + 1):
        if value_at(N) <= target:
            return N
    return None


def mc_key(seed: int, *labels: int):
    """A PRNG key for one measured point: fold the integer labels into PRNGKey(seed) (= _common.point_key)."""
    k = jax.random.PRNGKey(seed)
    for lab in labels:
        k = jax.random.fold_in(k, int(lab))
    return k


def key_string(seed: int, *labels: int) -> str:
    """The ``point_key`` column: "seed/label/.../label", the arguments of :func:`mc_key`."""
    return "/".join(str(int(x)) for x in (seed, *labels))


def parse_key_string(text: str) -> tuple[int, tuple[int, ...]]:
    """Inverse of :func:`key_string`: (seed, labels)."""
    parts = [int(x) for x in str(text).split("/")]
    return parts[0], tuple(parts[1:])


# ---- the figures' languages --------------------------------------------------------------------------
@cache
def feng_language(name: str, length: int, seed: int = 0):
    """The named language of the Feng2025 figures at length L (cached per (name, L, seed)).

    * "bigram V=3 h=0.6", "trigram V=2 h=0.35": :func:`synthetic.languages.entropy_ngram` drawn from
      ``fold_in(PRNGKey(seed), 1)`` / ``fold_in(., 2)`` (stationary, full support, entropy rate h nats);
    * "noisy copy pairs" (flip 0.1), "copy pairs": :mod:`synthetic.worst_case` block languages;
    * "additive 3-gram V=2": x_i = x_{i-1} + x_{i-2} mod 2 (:func:`synthetic.worst_case.additive_ngram`).

    Cached so that a (name, L, seed) is one object with one denoiser: the sampler compiles once for it.
    """
    L = int(length)
    key = jax.random.PRNGKey(seed)
    if name == "bigram V=3 h=0.6":
        return la.entropy_ngram(jax.random.fold_in(key, 1), 3, 2, 16, 0.6).with_length(L)
    if name == "trigram V=2 h=0.35":
        return la.entropy_ngram(jax.random.fold_in(key, 2), 2, 3, 16, 0.35).with_length(L)
    if name == "noisy copy pairs":
        return wc.noisy_copy_pairs(L, 0.1)
    if name == "copy pairs":
        return wc.copy_pairs(L)
    if name == "additive 3-gram V=2":
        return wc.additive_ngram(2, L)
    raise ValueError(f"unknown language {name!r}; known: {TER_LANGUAGES + SER_LANGUAGES}.")


def feng_bound_columns(lang, steps: int, eps_learning: float = 0.0, constant: float = 1.0) -> dict:
    """Feng2025's TER statement (as recalled) at N steps: ``feng_eps``, ``feng_steps``, ``feng_bound``.

    For an n-gram (``lang.order`` = n) the theorem gives log TER(p) - log TER(q) <= eps_learning + 4 eps log|V|
    at N = constant (n - 1) / eps^n steps; at a given N we take the eps it implies,
    eps = (constant (n - 1) / N)^(1/n) (:func:`theory.bounds.feng2025_eps`; constant 1 is our choice, the
    paper's O-constant is unconfirmed), and ``feng_steps`` = :func:`theory.bounds.feng2025_steps` of that eps
    (= N, the round trip). NaN for languages that are not n-grams (no ``order``).
    """
    order = getattr(lang, "order", None)
    if order is None:
        return {"feng_eps": np.nan, "feng_steps": np.nan, "feng_bound": np.nan}
    eps = B.feng2025_eps(order, steps, constant)
    return {
        "feng_eps": eps,
        "feng_steps": B.feng2025_steps(order, eps, constant),
        "feng_bound": B.feng2025_ter_bound(eps, lang.vocab_size, eps_learning),
    }


@dataclass(frozen=True)
class Curve:
    """One measured curve: ``language`` (a :func:`feng_language` name) at ``length``, a method of
    :data:`METHODS`, the ``reveal`` mode, the ``steps`` N, and (Monte Carlo) the key ``labels``: the point
    at step N uses ``mc_key(seed, *labels, N)``."""

    language: str
    length: int
    method: str
    steps: tuple[int, ...]
    reveal: str = "bernoulli"
    labels: tuple[int, ...] = ()

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.reveal not in REVEALS:
            raise ValueError(f"reveal must be one of {REVEALS}, got {self.reveal!r}.")
        if self.method == "mc" and not self.labels:
            raise ValueError("a Monte-Carlo curve needs key labels.")


def ter_curves(
    *,
    lengths,
    exact_lengths,
    steps,
    languages=TER_LANGUAGES,
    mc_languages=None,
    exact_max_states: int = EXACT_MAX_STATES,
) -> list[Curve]:
    """Figure 1's curves (Bernoulli reveal): per language, exact enumeration at each of ``exact_lengths``
    where (V + 1)**L <= ``exact_max_states``; at each of ``lengths`` Monte Carlo (labels (FIG_TER, i, L),
    i the language's index in ``languages``) for the languages in ``mc_languages`` (default: all), and for
    block languages also the exact block-product law."""
    steps = tuple(int(N) for N in steps)
    mc_languages = tuple(languages) if mc_languages is None else tuple(mc_languages)
    out = []
    for i, name in enumerate(languages):
        for L in exact_lengths:
            if (feng_language(name, L).vocab_size + 1) ** L <= exact_max_states:
                out.append(Curve(name, int(L), "exact", steps))
        for L in lengths:
            if isinstance(feng_language(name, L), wc.BlockLanguage):
                out.append(Curve(name, int(L), "exact (block product)", steps))
            if name in mc_languages:
                out.append(Curve(name, int(L), "mc", steps, labels=(FIG_TER, i, int(L))))
    return out


def ser_grid(length: int) -> tuple[int, ...]:
    """Figure 2's closed-form grid at length L: N = 1, 2, 4, ... up to 4L."""
    return tuple(1 << e for e in range(0, int(np.log2(4 * length)) + 1))


def ser_curves(*, lengths, mc_steps, additive_max_steps: int, additive_reveals=("bernoulli",)) -> list[Curve]:
    """Figure 2's curves: copy pairs (closed forms on :func:`ser_grid` and Monte Carlo on ``mc_steps`` <= 4L,
    both reveal modes) and the additive 3-gram (Monte Carlo around the threshold N ~ L:
    {1, 4, L/8, L/4, L/2, L, 2L} up to ``additive_max_steps``). MC labels (FIG_SER, i, L, reveal index)."""
    out = []
    for L in lengths:
        L = int(L)
        for reveal in REVEALS:
            out.append(Curve("copy pairs", L, "closed form", ser_grid(L), reveal))
        mc = tuple(int(N) for N in mc_steps if N <= 4 * L)
        for r, reveal in enumerate(REVEALS):
            out.append(Curve("copy pairs", L, "mc", mc, reveal, labels=(FIG_SER, 0, L, r)))
        add = tuple(N for N in sorted({1, 4, L // 8, L // 4, L // 2, L, 2 * L}) if 1 <= N <= additive_max_steps)
        for reveal in additive_reveals:
            out.append(
                Curve("additive 3-gram V=2", L, "mc", add, reveal, labels=(FIG_SER, 1, L, REVEALS.index(reveal)))
            )
    return out


def _copy_pairs_ser(L: int, N: int, reveal: str, schedule) -> float:
    if reveal == "bernoulli":
        return B.copy_pairs_ser_bernoulli(L, S.reveal_probs(schedule, N))
    return B.copy_pairs_ser_fixed(L, S.fixed_counts(schedule, N, L))


def measure_curve(curve: Curve, *, seed: int = 0, num: int | None = None, schedule=None) -> list[dict]:
    """Measure one curve: one row per N with language, length, steps, method, reveal, ter_gap, ter_gap_se,
    log_ter_q, ser, ser_se, num (0 if exact), point_key ("" if exact) and the Feng2025 bound columns
    (:func:`feng_bound_columns` with eps_learning = 0: the exact denoiser).

    "exact": enumeration (:func:`exact_metrics`); "exact (block product)": the product of block laws at any L
    (:func:`synthetic.worst_case.block_bernoulli_metrics`, Bernoulli only); "closed form": copy pairs only
    (:func:`theory.bounds.copy_pairs_ser_bernoulli` / ``_fixed``; SER only, TER is +inf); "mc":
    :func:`mc_metrics` with ``num`` samples and key ``mc_key(seed, *curve.labels, N)``.
    """
    sched = S.linear() if schedule is None else schedule
    lang = feng_language(curve.language, curve.length, seed)
    n_mc = 0
    if curve.method == "mc":
        if not (isinstance(num, (int, np.integer)) and num >= 2):
            raise ValueError(f"a Monte-Carlo curve needs num >= 2 samples, got {num!r}.")
        n_mc = int(num)
    rows = []
    for N in curve.steps:
        key = ""
        if curve.method == "exact":
            m = exact_metrics(lang, N, reveal=curve.reveal, schedule=sched)
        elif curve.method == "exact (block product)":
            if curve.reveal != "bernoulli":
                raise ValueError("the block-product law holds for Bernoulli reveal only (fixed counts couple blocks).")
            m = {**wc.block_bernoulli_metrics(lang, N, schedule=sched), "ter_gap_se": 0.0}
        elif curve.method == "closed form":
            if curve.language != "copy pairs":
                raise ValueError(f"closed forms exist for 'copy pairs' only, not {curve.language!r}.")
            m = {"ter_gap": np.inf, "ter_gap_se": 0.0, "log_ter_q": np.log(2) / 2}
            m["ser"] = _copy_pairs_ser(curve.length, N, curve.reveal, sched)
        else:
            m = mc_metrics(
                mc_key(seed, *curve.labels, N),
                lang,
                N,
                num=n_mc,
                reveal=curve.reveal,
                schedule=sched,
                batch_size=MC_BATCH,
            )
            key = key_string(seed, *curve.labels, N)
        rows.append(
            {
                "language": curve.language,
                "length": curve.length,
                "steps": int(N),
                "method": curve.method,
                "reveal": curve.reveal,
                "ter_gap": float(m["ter_gap"]),
                "ter_gap_se": float(m["ter_gap_se"]),
                "log_ter_q": float(m["log_ter_q"]),
                "ser": float(m["ser"]),
                "ser_se": float(m.get("ser_se", 0.0)),
                "num": n_mc,
                "point_key": key,
                "eps_learning": 0.0,
                **feng_bound_columns(lang, N),
            }
        )
    return rows


# ---- Figure 3: smallest N -------------------------------------------------------------------------------
def _grid_text(steps) -> str:
    return "grid " + ",".join(str(int(N)) for N in sorted(steps))


def min_steps_rows(
    ter_rows,
    ser_rows,
    *,
    eps: float,
    delta: float,
    lengths,
    schedule=None,
    fixed_max_length: int | None = None,
    seed: int = 0,
    max_steps: int = 4096,
) -> list[dict]:
    """Figure 3: the smallest N reaching TER gap <= ``eps`` and SER <= ``delta``, per language and L.

    Rows: target, language, length, reveal, method, min_steps (None if not reached), searched.

    * TER, block languages: exact search over every N (block-product law, :func:`first_step_reaching`);
      their MC rows are then skipped.
    * TER, other curves of ``ter_rows`` (exact small-L, Monte Carlo): the first N of the measured grid
      whose point estimate is <= eps (:func:`min_steps`), method "<method> (grid)".
    * SER, copy pairs at each of ``lengths``: Bernoulli, the closed form
      :func:`theory.bounds.copy_pairs_min_steps_linear` (linear schedule; ``schedule`` must be linear);
      fixed counts, the exact scan :func:`theory.bounds.copy_pairs_min_steps` for L <= ``fixed_max_length``
      (all L if None; it costs ~L^2 DP steps per N).
    * SER, the additive 3-gram: the first N of its Monte-Carlo grid in ``ser_rows``.
    """
    import pandas as pd

    sched = S.linear() if schedule is None else schedule
    rows = []
    ter = pd.DataFrame(list(ter_rows))
    tt = f"TER gap <= {eps:g}"
    for (name, L, method), g in ter.groupby(["language", "length", "method"], sort=False):
        lang = feng_language(name, int(L), seed)
        row = {"target": tt, "language": name, "length": int(L), "reveal": "bernoulli"}
        if method == "exact (block product)":
            n = first_step_reaching(
                lambda N, lang=lang: wc.block_bernoulli_metrics(lang, N, schedule=sched)["ter_gap"], eps, max_steps
            )
            rows.append({**row, "method": "exact search", "min_steps": n, "searched": f"all N <= {max_steps}"})
        elif method in ("exact", "mc", "mc (learned)"):
            if method == "mc" and isinstance(lang, wc.BlockLanguage):
                continue  # the exact block-product search covers it
            n = min_steps(g.steps, g.ter_gap, eps)
            rows.append({**row, "method": f"{method} (grid)", "min_steps": n, "searched": _grid_text(g.steps)})
    st = f"SER <= {delta:g}"
    for L in lengths:
        L = int(L)
        row = {"target": st, "language": "copy pairs", "length": L}
        if sched != S.linear():
            raise ValueError("the copy-pairs Bernoulli closed form of the minimum is for the linear schedule.")
        n = B.copy_pairs_min_steps_linear(L, delta)
        rows.append({**row, "reveal": "bernoulli", "method": "closed form", "min_steps": n, "searched": "all N"})
        if fixed_max_length is None or L <= fixed_max_length:
            n = B.copy_pairs_min_steps(L, delta, reveal="fixed", schedule=sched)
            rows.append({**row, "reveal": "fixed", "method": "closed form", "min_steps": n, "searched": "all N"})
    ser = pd.DataFrame(list(ser_rows))
    add = ser[(ser.language != "copy pairs") & (ser.method == "mc")]
    for (name, L, reveal), g in add.groupby(["language", "length", "reveal"], sort=False):
        n = min_steps(g.steps, g.ser, delta)
        rows.append(
            {
                "target": st,
                "language": name,
                "length": int(L),
                "reveal": reveal,
                "method": "mc (grid)",
                "min_steps": n,
                "searched": _grid_text(g.steps),
            }
        )
    return rows


# ---- learning error -------------------------------------------------------------------------------------
def learning_error_rows(
    name: str,
    length: int,
    denoiser,
    steps,
    *,
    eps_learning: float,
    denoiser_name: str,
    method: str = "mc",
    seed: int = 0,
    labels: tuple[int, ...] = (),
    num: int | None = None,
    schedule=None,
) -> list[dict]:
    """The TER gap of an imperfect ``denoiser`` of :func:`feng_language` (name, L) against Feng2025's bound.

    ``eps_learning``: the denoiser's per-token learning error (Feng2025's eps_learning; e.g.
    :func:`theory.denoiser.smoothing_kl_bound` for a smoothed denoiser, the trained model's measured value
    for a learned one). One row per N with

    * ``ter_gap`` (+ ``ter_gap_se``): the TOTAL gap log TER(p~_N) - log TER(q) of the imperfect denoiser,
      ``feng_eps``/``feng_steps``/``feng_bound``: Feng2025's total bound eps_learning + 4 eps log|V| at the
      eps implied by N (:func:`feng_bound_columns`, O-constant 1), and ``total_gap_within_bound``
      (ter_gap + 1.96 se <= feng_bound): what the theorem (as recalled) states;
    * ``ter_gap_exact_denoiser`` and ``move`` = ter_gap - ter_gap_exact_denoiser (+ ``move_se``): how much
      replacing the exact conditionals moves the gap — beyond the paper, which bounds the total gap only;
    * method "exact" (enumerable L): also ``locality_bound_on_move``
      (:func:`theory.bounds.ter_gap_locality_bound` with the exact-denoiser law as reference), ``kl_rate`` =
      KL(q||p~_N)/L and ``kl_rate_bound`` = (model error + dependence)/L
      (:func:`theory.bounds.dependence_kl_bound`);
    * method "mc": both denoisers run with the same key ``mc_key(seed, *labels, N)`` (common random numbers)
      and ``move_se`` is the standard error of the paired per-sample differences.
    """
    sched = S.linear() if schedule is None else schedule
    lang = feng_language(name, length, seed)
    rows = []
    for N in steps:
        extra = {"locality_bound_on_move": np.nan, "kl_rate": np.nan, "kl_rate_bound": np.nan}
        if method == "exact":
            q = lang.joint()
            m0 = exact_metrics(lang, N, schedule=sched)
            m1 = exact_metrics(lang, N, schedule=sched, denoiser=denoiser)
            mv = B.ter_gap_locality_bound(m1["law"], lang, reference=m0["law"])
            dec = B.dependence_kl_bound(q, None, N, denoiser=denoiser, reveal="bernoulli", schedule=sched)
            L = q.length
            extra = {
                "locality_bound_on_move": mv["bound"],
                "kl_rate": dec.kl / L,
                "kl_rate_bound": (dec.model_error + dec.dependence) / L,
            }
            move, move_se, key, n = m1["ter_gap"] - m0["ter_gap"], 0.0, "", 0
        elif method == "mc":
            if not (isinstance(num, (int, np.integer)) and num >= 2) or not labels:
                raise ValueError("method 'mc' needs num >= 2 and key labels.")
            k = mc_key(seed, *labels, N)
            m0 = mc_metrics(k, lang, N, num=num, schedule=sched, batch_size=MC_BATCH)
            m1 = mc_metrics(k, lang, N, num=num, schedule=sched, denoiser=denoiser, batch_size=MC_BATCH)
            d = metrics.mean_se(m1["scores"] - m0["scores"])
            move, move_se, key, n = d.mean, d.se, key_string(seed, *labels, N), int(num)
        else:
            raise ValueError(f"method must be 'exact' or 'mc', got {method!r}.")
        fb = feng_bound_columns(lang, N, eps_learning)
        rows.append(
            {
                "language": name,
                "length": int(length),
                "steps": int(N),
                "method": method,
                "denoiser": denoiser_name,
                "eps_learning": float(eps_learning),
                "ter_gap": float(m1["ter_gap"]),
                "ter_gap_se": float(m1["ter_gap_se"]),
                "log_ter_q": float(m1["log_ter_q"]),
                **fb,
                "total_gap_within_bound": bool(m1["ter_gap"] + 1.96 * m1["ter_gap_se"] <= fb["feng_bound"]),
                "ter_gap_exact_denoiser": float(m0["ter_gap"]),
                "ter_gap_exact_denoiser_se": float(m0["ter_gap_se"]),
                "move": float(move),
                "move_se": float(move_se),
                "move_over_eps_learning": float(move / eps_learning) if eps_learning > 0 else np.nan,
                **extra,
                "num": n,
                "point_key": key,
            }
        )
    return rows


def learned_denoiser(name: str, length: int, *, seed: int, key, train_steps: int):
    """A transformer trained on :func:`feng_language` (name, L) (``synthetic.train.fit_denoiser``):
    returns (denoiser, eps_learning), eps_learning its final measured per-token KL to the exact conditionals."""
    from .train import fit_denoiser  # local: equinox / optax only when a model is trained

    den, hist = fit_denoiser(feng_language(name, length, seed), key=key, steps=train_steps, progress=False)
    if "eps_learning" not in hist:
        raise ValueError("fit_denoiser's history has no eps_learning column; cannot place the model on the bound.")
    return den, float(hist["eps_learning"].iloc[-1])
