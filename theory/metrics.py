"""Quality of generated text, exactly from tables and as Monte-Carlo estimates with standard errors.

Feng2025's metrics: log TER(p) = E_{x~p}[-log q(x)] / L (the log-perplexity of generated text scored by
the true language; its optimum is log TER(q) = H(q) / L) and SER(p) = 1 - sum_{x: q(x) > 0} p(x) (the
mass outside the support of q), plus a variant with a user-given correctness predicate.

Exact functions take probability tables (V**L,); Monte-Carlo ones take per-sample values and return an
:class:`Estimate` (mean, standard error = sample std / sqrt(n), n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .joint import Joint
from .states import all_sequences
from .validation import check_distribution


def _table(p, name) -> np.ndarray:
    return check_distribution(np.asarray(p), name)


def _xlogy(x, y):
    return np.where(x > 0, x * np.log(np.where(y > 0, y, 1.0)), 0.0)


def kl(p, q) -> float:
    """KL(p || q) = sum p log(p / q) in nats for tables of equal shape; +inf if p puts mass where q = 0."""
    p, q = _table(p, "p"), _table(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"kl needs tables of equal shape, got {p.shape} and {q.shape}.")
    if np.any((p > 0) & (q == 0)):
        return float("inf")
    return float(np.sum(_xlogy(p, p) - _xlogy(p, q)))


def tv(p, q) -> float:
    """Total variation distance 1/2 sum |p - q|."""
    p, q = _table(p, "p"), _table(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"tv needs tables of equal shape, got {p.shape} and {q.shape}.")
    return float(0.5 * np.abs(p - q).sum())


def log_ter(p, joint: Joint) -> float:
    """Exact log TER(p) = -sum_x p(x) log q(x) / L (nats per token); +inf if p leaves q's support."""
    p = _table(p, "p")
    q = np.asarray(joint.probs)
    if p.shape != q.shape:
        raise ValueError(f"p must have shape {q.shape} (V**L of the joint), got {p.shape}.")
    if np.any((p > 0) & (q == 0)):
        return float("inf")
    return float(-np.sum(_xlogy(p, q)) / joint.length)


def sequence_error_rate(
    p,
    joint: Joint | None = None,
    *,
    correct: Callable | None = None,
    vocab_size: int | None = None,
    length: int | None = None,
) -> float:
    """Exact SER: mass of p outside q's support, or (with ``correct``) mass where the predicate is False.

    ``correct(sequences (M, L) int array) -> (M,) bool`` is evaluated on all V**L sequences.
    """
    p = _table(p, "p")
    if correct is None:
        if joint is None:
            raise ValueError("sequence_error_rate needs a joint (support of q) or a correctness predicate.")
        if p.shape != joint.probs.shape:
            raise ValueError(f"p must have shape {joint.probs.shape}, got {p.shape}.")
        return float(p[np.asarray(joint.probs) == 0].sum())
    V = joint.vocab_size if joint is not None else vocab_size
    L = joint.length if joint is not None else length
    if V is None or L is None:
        raise ValueError("with a predicate and no joint, pass vocab_size and length.")
    ok = np.asarray(correct(all_sequences(V, L)), dtype=bool)
    if ok.shape != p.shape:
        raise ValueError(f"correct() must return one bool per sequence ({p.shape}), got {ok.shape}.")
    return float(p[~ok].sum())


ser = sequence_error_rate


# ---- Monte Carlo -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo mean with its standard error (sample std / sqrt(n))."""

    mean: float
    se: float
    n: int

    def ci95(self) -> tuple[float, float]:
        return (self.mean - 1.959963984540054 * self.se, self.mean + 1.959963984540054 * self.se)

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}mean": self.mean, f"{prefix}se": self.se, f"{prefix}n": self.n}


def mean_se(values) -> Estimate:
    """Estimate of E[values] with standard error; infinite values propagate (mean = se = inf)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.size
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 samples, got {n}.")
    if not np.all(np.isfinite(v)):
        return Estimate(float("inf"), float("inf"), n)
    return Estimate(float(v.mean()), float(v.std(ddof=1) / np.sqrt(n)), n)


def log_ter_mc(log_q, length: int) -> Estimate:
    """log TER from per-sample log q(x) (num,): mean of -log q / L with its standard error."""
    return mean_se(-np.asarray(log_q, dtype=np.float64) / length)


def ser_mc(correct) -> Estimate:
    """SER from per-sample correctness flags (num,) bool: mean of (not correct) with its standard error."""
    c = np.asarray(correct)
    if c.dtype != bool:
        raise TypeError(f"ser_mc needs a boolean array of per-sample correctness, got {c.dtype}.")
    return mean_se(~c)


def kl_mc(log_p, log_q) -> Estimate:
    """KL(p || q) from samples of p with their log p and log q: mean of log p - log q with its SE."""
    return mean_se(np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64))


def empirical_law(tokens, vocab_size: int) -> np.ndarray:
    """Histogram of sampled sequences (num, L) over V**L, normalised."""
    t = np.asarray(tokens, dtype=np.int64)
    L = t.shape[1]
    idx = t @ (vocab_size ** np.arange(L - 1, -1, -1, dtype=np.int64))
    return np.bincount(idx, minlength=vocab_size**L) / t.shape[0]


def sample_metrics(tokens, language, correct: Callable | None = None, nfe=None) -> pd.DataFrame:
    """One-row DataFrame of log TER and SER (mean, se, n) for samples (num, L) scored by ``language``.

    ``language``: any Language (:mod:`theory.language`; its ``log_prob`` scores the samples) or Joint.
    SER counts samples that are not ``correct(tokens) -> (num,) bool`` (default: q(x) > 0). With ``nfe``
    (num,) also the mean NFE and its standard error. log TER is +inf if a sample leaves the support.
    """
    t = np.asarray(tokens, dtype=np.int64)
    lq = np.asarray(language.log_prob(t), dtype=np.float64)
    ok = np.isfinite(lq) if correct is None else np.asarray(correct(t), dtype=bool)
    if ok.shape != lq.shape:
        raise ValueError(f"correct() must return one bool per sample ({lq.shape}), got {ok.shape}.")
    row = {**log_ter_mc(lq, language.length).as_dict("log_ter_"), **ser_mc(ok).as_dict("ser_")}
    if nfe is not None:
        e = mean_se(np.asarray(nfe, dtype=np.float64))
        row.update(nfe_mean=e.mean, nfe_se=e.se)
    return pd.DataFrame([row])


# ---- NFE reduction at equal accuracy (BenHamu2025's headline metric) ---------------------------------------
def nfe_speedups(
    frame: pd.DataFrame,
    tolerances=(0.0,),
    *,
    by=("task", "denoiser", "proxy"),
    baseline=("TopK", 1),
    num_se: float = 2.0,
    slack: float = 1e-9,
) -> pd.DataFrame:
    """NFE reduction at equal accuracy relative to one token per step (BenHamu2025's "2-3x fewer NFE").

    ``frame`` has one row per measured point with the columns ``by`` (the groups compared separately,
    e.g. task, denoiser, proxy), ``policy``, ``param``, ``nfe`` (expected number of denoiser calls),
    ``accuracy`` and optionally ``accuracy_se`` (Monte-Carlo standard error; missing or NaN = 0, exact).
    In each group the **baseline** b is the one row with ``policy == baseline[0]`` and
    ``param == baseline[1]`` (default: Top-k with k = 1, one token per step). For a tolerance tau, a row r
    has **equal accuracy** when

        accuracy_r >= accuracy_b - tau - num_se * sqrt(se_b**2 + se_r**2) - slack,

    i.e. it loses at most tau, plus ``num_se`` (= 2) standard errors of the difference of two independent
    Monte-Carlo estimates (zero for exact rows), plus a float slack (1e-9) for rounding in exact accuracies.
    For each policy P of the group, among its rows with equal accuracy, the one with the smallest ``nfe``
    (first in frame order on ties) gives

        nfe = its nfe,  speedup = nfe_b / nfe   (> 1: fewer calls than the baseline at equal accuracy),

    with its ``param`` and ``accuracy``; NaN when no row of P qualifies. Equivalently, ``nfe`` is where P's
    Pareto front (best accuracy at NFE <= x) first reaches the baseline's accuracy minus the tolerance.

    Returns one row per (group, tolerance, policy), policies in order of first appearance: the ``by``
    columns, tolerance, policy, baseline_nfe, baseline_accuracy, nfe, param, accuracy, speedup.
    Raises ValueError if a group has no baseline row or more than one.
    """
    by = list(by)
    need = set(by) | {"policy", "param", "nfe", "accuracy"}
    missing = sorted(need - set(frame.columns))
    if missing:
        raise ValueError(f"nfe_speedups needs the columns {sorted(need)}; missing {missing}.")
    df = frame.reset_index(drop=True)
    se = df["accuracy_se"].fillna(0.0) if "accuracy_se" in df else pd.Series(0.0, index=df.index)
    rows = []
    for keys, g in df.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        b = g[(g["policy"] == baseline[0]) & (g["param"] == baseline[1])]
        if len(b) != 1:
            raise ValueError(
                f"group {dict(zip(by, keys))} has {len(b)} baseline rows (policy {baseline[0]!r}, param "
                f"{baseline[1]!r}); it needs exactly one."
            )
        bi = b.index[0]
        b_nfe, b_acc = float(df.at[bi, "nfe"]), float(df.at[bi, "accuracy"])
        margin = num_se * np.sqrt(se[bi] ** 2 + se[g.index] ** 2)  # (rows of g,)
        for tol in tolerances:
            ok = g[g["accuracy"] >= b_acc - float(tol) - margin - slack]
            for pol in dict.fromkeys(g["policy"]):
                o = ok[ok["policy"] == pol]
                best = o.loc[o["nfe"].idxmin()] if len(o) else None
                rows.append(
                    {
                        **dict(zip(by, keys)),
                        "tolerance": float(tol),
                        "policy": pol,
                        "baseline_nfe": b_nfe,
                        "baseline_accuracy": b_acc,
                        "nfe": np.nan if best is None else float(best["nfe"]),
                        "param": np.nan if best is None else best["param"],
                        "accuracy": np.nan if best is None else float(best["accuracy"]),
                        "speedup": np.nan if best is None else b_nfe / float(best["nfe"]),
                    }
                )
    return pd.DataFrame(rows)
