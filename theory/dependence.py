"""Exact error accounting of parallel sampling: model error and joint-dependence error per step.

BenHamu2025 (Prop./Thm. on EB-sampler error; papers.md "Bound"): for any sequencing policy phi,

    KL(q || p_phi) <= sum_i E_{q_phi}[ sum_{l in z_i} KL(q(x_l | .) || p_theta(x_l | .)) ]    (model error)
                    + sum_i E_{q_phi}[ KL(q(x_{z_i} | .) || prod_{l in z_i} q(x_l | .)) ]  (joint dependence)

with equality when phi is deterministic (the reveal set is a function of the revealed values). The
dependence term of a step is the total correlation  sum_l H_l - H(x_{z_i} | .)  <=  sum_l H_l - max_l H_l.
Feng2025's analysis rests on the same per-step dependence (its sum bounds KL(q || p_N)).

The expectations are over q_phi: the path on which the policy (looking at the *model's* marginals)
chooses the reveal sets but the revealed values are drawn from q's **joint** conditional — not over
the sampler's own path (with the sampler's path the sum is not a bound in general).

Derivation of the equality (deterministic phi): given x, the ordered partition z_1, z_2, ... is fixed,
so q(x) = prod_i q(x_{z_i} | x_{z_<i}) and p_phi(x) = prod_i prod_{l in z_i} p_theta(x_l | x_{z_<i});
then log q_S / prod p_l = log q_S / prod q_l + sum_l log q_l / p_l, whose q_S-expectation is the
dependence term plus the model term. For random phi, KL of the x-marginals is at most KL of the joint
laws of (partition, x) by the data-processing inequality, which is the same sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .joint import Joint
from .metrics import kl
from .sampling import Law, batched_marginals, exact_law, reveal_children
from .validation import require_x64


def _xlogx(p):
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def reveal_set_entropies(cyl: np.ndarray, vocab_size: int, length: int, parent_idx, subsets):
    """For reveal rows (state index (R,), subset (R, L)) under q: returns (H_joint, sum_H, max_H), each (R,).

    H_joint = H(x_S | z) from q's joint conditional C[z_{S<-v}] / C[z]; sum_H / max_H over the
    per-position conditionals q(x_l | z), l in S. Rows with an empty subset give zeros.
    """
    V, L = vocab_size, length
    R = len(parent_idx)
    hj, hs, hm = np.zeros(R), np.zeros(R), np.zeros(R)
    sizes = subsets.sum(1)
    st = (V + 1) ** np.arange(L - 1, -1, -1, dtype=np.int64)
    for s in np.unique(sizes):
        s = int(s)
        if s == 0:
            continue
        rows = np.nonzero(sizes == s)[0]
        pos = np.nonzero(subsets[rows])[1].reshape(len(rows), s)
        par = parent_idx[rows]
        den = cyl[par]
        child, _ = reveal_children(par, pos, V, L)
        pj = cyl[child] / den[:, None]  # (R, V**s)
        hj[rows] = -_xlogx(pj).sum(1)
        # per-position conditionals: shift a single position
        base = par[:, None] - V * st[pos]  # (R, s): that position set to token 0
        single = base[:, :, None] + np.arange(V)[None, None, :] * st[pos][:, :, None]  # (R, s, V)
        pl = cyl[single] / den[:, None, None]
        h = -_xlogx(pl).sum(-1)  # (R, s)
        hs[rows] = h.sum(1)
        hm[rows] = h.max(1)
    return hj, hs, hm


@dataclass(frozen=True)
class ErrorDecomposition:
    """Per-step table and totals of BenHamu2025's decomposition.

    ``per_step`` columns: step, p_reveal (prob. the step reveals something), model_error, dependence
    (total correlation), entropy_bound (sum H - max H), tokens (expected revealed). Totals: ``kl``
    (exact KL(q || p) of the sampler's law), ``model_error``, ``dependence``, ``entropy_bound``,
    ``bound`` = model_error + dependence, ``expected_nfe`` (of the sampler), ``law`` (its exact Law).
    """

    per_step: pd.DataFrame
    kl: float
    model_error: float
    dependence: float
    entropy_bound: float
    expected_nfe: float
    law: Law | None = None  # the sampler's exact Law

    @property
    def bound(self) -> float:
        return self.model_error + self.dependence

    def summary(self) -> dict:
        return {
            "kl": self.kl,
            "model_error": self.model_error,
            "dependence": self.dependence,
            "bound": self.bound,
            "entropy_bound": self.entropy_bound,
            "expected_nfe": self.expected_nfe,
        }


def error_decomposition(
    joint: Joint,
    policy=None,
    steps=None,
    *,
    denoiser=None,
    reveal: str = "fixed",
    schedule=None,
    counts=None,
    max_bytes=None,
) -> ErrorDecomposition:
    """Exact model-error / dependence-error accounting along the data path q_phi, and the true KL.

    ``denoiser`` (default: q's exact denoiser) is the model p_theta; the policy sees its marginals.
    """
    require_x64("error_decomposition")
    ex = joint.denoiser(max_bytes)
    model = ex if denoiser is None else denoiser
    cyl = np.asarray(ex.cyl)
    V, L = joint.vocab_size, joint.length
    st = (V + 1) ** np.arange(L - 1, -1, -1, dtype=np.int64)
    rows = []

    def cb(n, states, probs, marg, parent, subsets, weights):
        w = probs[parent] * weights  # (R,)
        idx = states @ st
        hj, hs, hm = reveal_set_entropies(cyl, V, L, idx[parent], subsets)
        if model is ex:
            me = np.zeros(len(parent))
        else:
            qm = batched_marginals(ex, states)[parent]  # (R, L, V)
            pm = marg[parent]
            kl_pos = np.sum(_xlogx(qm) - np.where(qm > 0, qm * np.log(np.where(pm > 0, pm, 1e-300)), 0.0), -1)
            kl_pos = np.where(np.any((qm > 0) & (pm == 0), -1), np.inf, kl_pos)
            me = np.where(subsets, kl_pos, 0.0).sum(1)
        rows.append(
            {
                "step": n + 1,
                "p_reveal": float(np.sum(w * subsets.any(1))),
                "tokens": float(np.sum(w * subsets.sum(1))),
                "model_error": float(np.sum(w * me)),
                "dependence": float(np.sum(w * (hs - hj))),
                "entropy_bound": float(np.sum(w * (hs - hm))),
            }
        )

    kw = dict(reveal=reveal, schedule=schedule, counts=counts, max_bytes=max_bytes)
    exact_law(joint, policy, steps, denoiser=model, values="joint", callback=cb, **kw)
    law = exact_law(joint, policy, steps, denoiser=model, **kw)
    df = pd.DataFrame(rows)
    return ErrorDecomposition(
        per_step=df,
        kl=kl(np.asarray(joint.probs), np.asarray(law.probs)),
        model_error=float(df["model_error"].sum()),
        dependence=float(df["dependence"].sum()),
        entropy_bound=float(df["entropy_bound"].sum()),
        expected_nfe=law.expected_nfe,
        law=law,
    )
