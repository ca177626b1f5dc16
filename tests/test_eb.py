"""BenHamu2025's entropy-bounded (EB) policy: the rule against brute force, its limits, and the sampler.

* the EB count is the largest prefix (in the proxy's order) with sum H - max H <= gamma, checked by
  enumerating prefixes in numpy (own entropy / proxy code, no shared helpers);
* gamma = 0: exactly one positive-entropy token per step (with the entropy proxy: plus every
  zero-entropy token); gamma = inf: every masked token at once;
* the batched select (vmapped, as the sampler runs it) and the exact reveal_distribution equal the
  per-example select; the Monte-Carlo sampler's NFE and accuracy agree with the exact law within 4 SE;
* the quick experiment writes its files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from synthetic.tasks import copy_pairs_task, sudoku_task
from theory import policies
from theory.metrics import mean_se
from theory.sampling import exact_law, sample

from conftest import assert_close
from strategies import any_proxy, eb_gammas, joints, masked_marginals

ROOT = Path(__file__).resolve().parent.parent


# ---- numpy brute force ----------------------------------------------------------------------------------
def _np_entropy(m):
    return np.array([-sum(p * np.log(p) for p in row if p > 0) for row in m])


def _np_score(m, proxy):
    if proxy == "confidence":
        return -m.max(-1)
    if proxy == "margin":
        s = np.sort(m, -1)
        return -(s[:, -1] - s[:, -2])
    return _np_entropy(m)


def _bruteforce_eb(state, m, gamma, proxy):
    """Reveal set of the EB rule: enumerate every prefix of the masked positions in the proxy's order."""
    V = m.shape[-1]
    masked = np.nonzero(state == V)[0]
    if masked.size == 0:
        return np.zeros(state.shape, bool)
    order = masked[np.argsort(_np_score(m[masked], proxy), kind="stable")]
    h = _np_entropy(m[order])
    best = 1
    for size in range(1, len(order) + 1):
        if h[:size].sum() - h[:size].max() <= gamma:
            best = size
        else:
            break
    out = np.zeros(state.shape, bool)
    out[order[:best]] = True
    return out


@given(masked_marginals(), eb_gammas, any_proxy)
def test_eb_is_largest_valid_prefix(sm, gamma, proxy):
    states, marg = sm
    pol = policies.EntropyBounded(gamma, proxy)
    key = jax.random.PRNGKey(0)
    for z, m in zip(states, marg):
        got = np.asarray(pol.select(key, jnp.asarray(z), jnp.asarray(m), 0))
        np.testing.assert_array_equal(got, _bruteforce_eb(z, m, gamma, proxy))


@settings(max_examples=10)
@given(masked_marginals(max_batch=8), eb_gammas, any_proxy)
def test_batched_select_equals_per_example(sm, gamma, proxy):
    states, marg = sm
    pol = policies.EntropyBounded(gamma, proxy)
    key = jax.random.PRNGKey(0)
    one = np.stack([np.asarray(pol.select(key, jnp.asarray(z), jnp.asarray(m), 0)) for z, m in zip(states, marg)])
    keys = jax.random.split(key, len(states))
    vm = np.asarray(
        jax.vmap(pol.select)(keys, jnp.asarray(states), jnp.asarray(marg), jnp.zeros(len(states), jnp.int32))
    )
    np.testing.assert_array_equal(vm, one)
    parent, subsets, weights = pol.reveal_distribution(states, marg, np.zeros(len(states), np.int64))
    np.testing.assert_array_equal(parent, np.arange(len(states)))
    np.testing.assert_array_equal(subsets, one & (states == marg.shape[-1]))
    assert_close(weights, np.ones(len(states)))


@given(masked_marginals(), any_proxy)
def test_gamma_zero_one_positive_entropy_token(sm, proxy):
    states, marg = sm
    V = marg.shape[-1]
    pol = policies.EntropyBounded(0.0, proxy)
    h = _np_entropy(marg.reshape(-1, V)).reshape(states.shape)
    for z, m, hz in zip(states, marg, h):
        sel = np.asarray(pol.select(jax.random.PRNGKey(0), jnp.asarray(z), jnp.asarray(m), 0))
        masked = z == V
        assert not np.any(sel & ~masked)
        if not masked.any():
            assert not sel.any()
            continue
        pos = masked & (hz > 0)
        assert int((sel & pos).sum()) == (1 if pos.any() else 0)
        if proxy == "entropy":  # zero-entropy tokens come first in the order: all of them are revealed
            assert np.all(sel[masked & (hz == 0)])
        if not pos.any():
            assert np.all(sel[masked])


@given(masked_marginals(), any_proxy)
def test_gamma_inf_reveals_all(sm, proxy):
    states, marg = sm
    V = marg.shape[-1]
    pol = policies.EntropyBounded(float("inf"), proxy)
    for z, m in zip(states, marg):
        sel = np.asarray(pol.select(jax.random.PRNGKey(0), jnp.asarray(z), jnp.asarray(m), 0))
        np.testing.assert_array_equal(sel, z == V)


@settings(max_examples=8)
@given(joints(max_states=4**4), any_proxy)
def test_exact_law_limits(q, proxy):
    """gamma = inf: one step, the product of the marginals. gamma = 0 with the exact denoiser: each step
    reveals at most one positive-entropy token, so its total correlation is 0 and the law is exactly q."""
    law = exact_law(q, policies.EntropyBounded(float("inf"), proxy))
    assert_close(law.expected_nfe, 1.0)
    prod = np.asarray(q.marginals())[0]
    for i in range(1, q.length):
        prod = np.multiply.outer(prod, np.asarray(q.marginals())[i])
    assert_close(np.asarray(law.probs), prod.reshape(-1), atol=1e-15)
    law0 = exact_law(q, policies.EntropyBounded(0.0, proxy))
    assert_close(np.asarray(law0.probs), np.asarray(q.probs), atol=1e-13)  # exact conditionals, one by one
    assert 1.0 <= law0.expected_nfe <= q.length + 1e-12


def test_copy_pairs_pinned_nfe():
    """Copy pairs (a, a): gamma = 0 reveals {x0}, then {partner (H = 0), next a}, ...: NFE = L/2 + 1, exact."""
    for L in (2, 4, 6):
        q = copy_pairs_task(L).joint()
        law = exact_law(q, policies.EntropyBounded(0.0))
        assert_close(law.expected_nfe, L / 2 + 1)
        assert_close(np.asarray(law.probs), np.asarray(q.probs), atol=1e-15)


def test_rejects_bad_gamma():
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            policies.EntropyBounded(bad)
    with pytest.raises(TypeError):
        policies.EntropyBounded("big")
    with pytest.raises(ValueError, match="proxy"):
        policies.EntropyBounded(0.1, "perplexity")
    assert policies.EntropyBounded(1).uses_count is False


def test_mc_sampler_agrees_with_exact_law():
    """MC sampler with EB on the sparse Sudoku denoiser: NFE and accuracy within 4 standard errors."""
    task = sudoku_task(num_blanks=6, seed=1, min_solutions=2)
    pol = policies.EntropyBounded(0.7, "confidence")
    law = exact_law(task.denoiser(), pol)
    q = task.joint()
    acc_exact = float(np.asarray(law.probs)[np.asarray(q.probs) > 0].sum())
    s = sample(jax.random.PRNGKey(7), task.denoiser(), pol, num=4000)
    nfe = mean_se(np.asarray(s.nfe, dtype=np.float64))
    acc = mean_se(task.correct(np.asarray(s.tokens)).astype(np.float64))
    assert abs(nfe.mean - law.expected_nfe) <= 4 * nfe.se + 1e-12
    assert abs(acc.mean - acc_exact) <= 4 * max(acc.se, np.sqrt(acc_exact * (1 - acc_exact) / 4000)) + 1e-12


def test_quick_experiment_writes_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MDM_NO_PROGRESS": "1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "eb_sampler.py"), "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for ext in ("csv", "png", "json"):
        assert (tmp_path / f"eb_sampler.{ext}").stat().st_size > 0
    meta = json.loads((tmp_path / "eb_sampler.json").read_text())
    assert meta["quick"] is True
    import pandas as pd

    df = pd.read_csv(tmp_path / "eb_sampler.csv")
    assert {"task", "denoiser", "policy", "proxy", "param", "nfe", "accuracy", "method"} <= set(df.columns)
    assert np.all((df["accuracy"] >= -1e-12) & (df["accuracy"] <= 1 + 1e-12))
