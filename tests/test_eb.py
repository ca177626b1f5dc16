"""BenHamu2025's entropy-bounded (EB) policy: the rule against brute force, its limits, and the sampler.

* the EB count is the largest prefix (in the proxy's order) with sum H - max H <= gamma, checked by
  enumerating prefixes in numpy (own entropy / proxy code, no shared helpers);
* gamma = 0: exactly one positive-entropy token per step (with the entropy proxy: plus every
  zero-entropy token); gamma = inf: every masked token at once;
* the batched select (vmapped, as the sampler runs it) and the exact reveal_distribution equal the
  per-example select; synthetic.tasks.evaluate_sampler_mc (the Monte-Carlo sampler) agrees with
  evaluate_sampler (the exact law) within 4 SE;
* experiments/eb_sampler.py --quick (run once for the module, in-process): its numbers are the library's
  (one exact point recomputed, one Monte-Carlo point recomputed with the same key, the speed-up table
  recomputed by theory.metrics.nfe_speedups from the CSV, hand-derived values), and it covers every task
  kind, policy, proxy and denoiser of the default run;
* the committed figures/eb_sampler.csv is what the default run writes: a handful of exact rows (1e-10)
  and one Monte-Carlo row (identical) recomputed through the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from synthetic.tasks import copy_pairs_task, evaluate_sampler, evaluate_sampler_mc, markov_task, sudoku_task
from theory import policies
from theory.denoiser import smoothed
from theory.metrics import nfe_speedups
from theory.sampling import exact_law

from conftest import assert_close, load_script, one_row, run_quick
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


# The policy is a pytree (gamma traced, proxy static): one compilation per (proxy, shape) serves every gamma,
# far cheaper than op-by-op dispatch over the strategies' shapes.
@jax.jit
def _select(pol, key, state, marginals):
    return pol.select(key, state, marginals, 0)


@jax.jit
def _select_vmapped(pol, keys, states, marginals):
    """As the Monte-Carlo sampler runs it: vmapped over the batch, one key per row."""
    counts = jnp.zeros(states.shape[0], jnp.int32)
    return jax.vmap(pol.select)(keys, states, marginals, counts)


# Each new (proxy, shape) costs a compilation: the default suite draws a few examples, `-m slow` many more.
def _check_largest_valid_prefix(sm, gamma, proxy):
    states, marg = sm
    pol = policies.EntropyBounded(gamma, proxy)
    key = jax.random.PRNGKey(0)
    for z, m in zip(states, marg):
        got = np.asarray(_select(pol, key, jnp.asarray(z), jnp.asarray(m)))
        np.testing.assert_array_equal(got, _bruteforce_eb(z, m, gamma, proxy))


def _check_batched_select(sm, gamma, proxy):
    states, marg = sm
    pol = policies.EntropyBounded(gamma, proxy)
    key = jax.random.PRNGKey(0)
    one = np.stack([np.asarray(_select(pol, key, jnp.asarray(z), jnp.asarray(m))) for z, m in zip(states, marg)])
    keys = jax.random.split(key, len(states))
    vm = np.asarray(_select_vmapped(pol, keys, jnp.asarray(states), jnp.asarray(marg)))
    np.testing.assert_array_equal(vm, one)
    parent, subsets, weights = pol.reveal_distribution(states, marg, np.zeros(len(states), np.int64))
    np.testing.assert_array_equal(parent, np.arange(len(states)))
    np.testing.assert_array_equal(subsets, one & (states == marg.shape[-1]))
    assert_close(weights, np.ones(len(states)))


@settings(max_examples=8)
@given(masked_marginals(), eb_gammas, any_proxy)
def test_eb_is_largest_valid_prefix(sm, gamma, proxy):
    _check_largest_valid_prefix(sm, gamma, proxy)


@settings(max_examples=3)
@given(masked_marginals(max_batch=8), eb_gammas, any_proxy)
def test_batched_select_equals_per_example(sm, gamma, proxy):
    _check_batched_select(sm, gamma, proxy)


@pytest.mark.slow
@settings(max_examples=100)
@given(masked_marginals(), eb_gammas, any_proxy)
def test_eb_is_largest_valid_prefix_many(sm, gamma, proxy):
    _check_largest_valid_prefix(sm, gamma, proxy)


@pytest.mark.slow
@settings(max_examples=40)
@given(masked_marginals(max_batch=8), eb_gammas, any_proxy)
def test_batched_select_equals_per_example_many(sm, gamma, proxy):
    _check_batched_select(sm, gamma, proxy)


@given(masked_marginals(), any_proxy)
def test_gamma_zero_one_positive_entropy_token(sm, proxy):
    states, marg = sm
    V = marg.shape[-1]
    pol = policies.EntropyBounded(0.0, proxy)
    h = _np_entropy(marg.reshape(-1, V)).reshape(states.shape)
    for z, m, hz in zip(states, marg, h):
        sel = np.asarray(_select(pol, jax.random.PRNGKey(0), jnp.asarray(z), jnp.asarray(m)))
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
        sel = np.asarray(_select(pol, jax.random.PRNGKey(0), jnp.asarray(z), jnp.asarray(m)))
        np.testing.assert_array_equal(sel, z == V)


@settings(max_examples=3)
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
    """evaluate_sampler_mc (EB on the sparse Sudoku denoiser) vs evaluate_sampler: NFE, accuracy within 4 SE."""
    task = sudoku_task(num_blanks=6, seed=1, min_solutions=2)
    pol = policies.EntropyBounded(0.7, "confidence")
    ex = evaluate_sampler(task, pol)
    assert_close(ex.nfe, exact_law(task.denoiser(), pol).expected_nfe)
    assert ex.n == 0 and ex.nfe_se == 0 and ex.accuracy_se == 0
    assert_close(ex.kl, ex.bound, rtol=1e-10, atol=1e-13)  # deterministic policy: the decomposition is exact
    mc = evaluate_sampler_mc(jax.random.PRNGKey(7), task, pol, num=4000)
    assert mc.n == 4000 and np.isnan(mc.kl)
    assert abs(mc.nfe - ex.nfe) <= 4 * mc.nfe_se + 1e-12
    se = max(mc.accuracy_se, np.sqrt(ex.accuracy * (1 - ex.accuracy) / 4000))
    assert abs(mc.accuracy - ex.accuracy) <= 4 * se + 1e-12


# ---- the experiment script ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eb():
    return load_script("eb_sampler")


@pytest.fixture(scope="module")
def quick(eb, tmp_path_factory):
    """Run ``eb_sampler.py --quick`` once for the module, in-process (no progress bars)."""
    out, (frame, sp) = run_quick(eb, tmp_path_factory)
    return out, frame, sp


EXACT_FIELDS = ["nfe", "accuracy", "kl", "model_error", "dependence", "bound", "entropy_bound"]


def _check_point(row, point, exact_to=1e-10):
    for f in EXACT_FIELDS if point.n == 0 else ["nfe", "nfe_se", "accuracy", "accuracy_se"]:
        assert_close(row[f], getattr(point, f), rtol=exact_to, atol=1e-13, err_msg=f)


def test_quick_files_and_coverage(eb, quick):
    out, frame, sp = quick
    for name in ("eb_sampler.csv", "eb_sampler.png", "eb_sampler.json", "eb_sampler_speedup.csv"):
        assert (out / name).stat().st_size > 0
    meta = json.loads((out / "eb_sampler.json").read_text())
    assert meta["quick"] is True and meta["seed"] == 0 and meta["dtype"] == "float64"
    csv = pd.read_csv(out / "eb_sampler.csv")
    assert list(csv.columns) == list(frame.columns) and len(csv) == len(frame)
    assert_close(csv.select_dtypes("number").to_numpy(), frame.select_dtypes("number").to_numpy(), rtol=1e-11)
    # --quick exercises every code path of the default run: task kinds, methods, policies, proxies, denoisers
    full = [t for t, _, _ in eb.build_tasks(False, 0)]
    assert list(dict.fromkeys(frame.task)) == full
    assert set(frame.method) == {"exact", "mc"}
    assert set(frame.policy) == {"EB", "TopK"}
    assert set(frame.proxy) == set(policies.PROXIES)
    assert list(dict.fromkeys(frame.denoiser)) == ["exact", f"smoothed(eps={eb.EPS})"]
    exact = frame[frame.method == "exact"]
    assert_close(exact.kl.to_numpy(), exact.bound.to_numpy(), rtol=1e-10, atol=1e-13)  # deterministic policies
    one = exact[(exact.policy == "TopK") & (exact.param == 1) & (exact.denoiser == "exact")]
    assert_close(one.accuracy.to_numpy(), np.ones(len(one)), rtol=1e-12)  # one token per step samples q


def test_quick_exact_point_is_the_library(eb, quick):
    """A quick exact point recomputed from scratch: its task built by hand, the library's evaluate_sampler."""
    _, frame, _ = quick
    task = markov_task(jax.random.PRNGKey(0), 3, 4, concentration=0.5, forbid=0.6)
    row = one_row(frame, task="markov", denoiser=f"smoothed(eps={eb.EPS})", policy="EB", param=0.5)
    assert row.task_detail == task.name and row.proxy == "confidence"
    pt = evaluate_sampler(task, policies.EntropyBounded(0.5, "confidence"), smoothed(task.denoiser(), eb.EPS))
    _check_point(row, pt)
    assert row.kl > 0 and row.model_error > 0 and row.dependence > 0  # a point where every term is alive
    # copy pairs (a, a) with gamma = 0: {x0}, then {partner (H = 0), next a}, ...: NFE = L/2 + 1 = 3, exact law q
    cp = one_row(frame, task="copy_pairs", denoiser="exact", policy="EB", param=0.0)
    assert_close(np.array([cp.nfe, cp.accuracy]), np.array([3.0, 1.0]), rtol=1e-12)
    assert abs(cp.kl) < 1e-12


def test_quick_mc_point_is_the_library(eb, quick):
    """A quick Monte-Carlo point recomputed with the same key (point_key(seed, *labels)): identical numbers."""
    _, frame, _ = quick
    cfg = next(c for c in eb.grid(True, 0) if c.method == "mc" and c.policy_name == "EB" and c.param == 0.5)
    row = one_row(frame, task=cfg.task_name, denoiser=cfg.denoiser_name, policy="EB", param=0.5)
    key = eb._common.point_key(0, *cfg.labels)
    pt = evaluate_sampler_mc(key, cfg.task, cfg.policy, cfg.denoiser, num=eb.NUM_QUICK)
    for f in ("nfe", "nfe_se", "accuracy", "accuracy_se", "n"):
        assert row[f] == getattr(pt, f), f


def test_quick_speedups_are_the_library(eb, quick):
    """The written speed-up table = theory.metrics.nfe_speedups of the written CSV; hand-checked entries."""
    out, _, sp = quick
    again = nfe_speedups(pd.read_csv(out / "eb_sampler.csv"), eb.TOLERANCES, by=("task", "denoiser", "proxy"))
    written = pd.read_csv(out / "eb_sampler_speedup.csv")
    pd.testing.assert_frame_equal(written, again, rtol=1e-11, check_dtype=False)
    pd.testing.assert_frame_equal(sp, again, rtol=1e-11, check_dtype=False)
    cp = one_row(written, task="copy_pairs", denoiser="exact", tolerance=0.0, policy="EB")
    assert_close(cp.speedup, 4 / 3)  # L / (L/2 + 1), L = 4
    base = written[written.policy == "TopK"]
    assert_close(base.speedup.to_numpy(), np.ones(len(base)))  # k = 1 is always the best equal-accuracy Top-k here


# ---- the committed figure is what the default run writes ---------------------------------------------------
@pytest.fixture(scope="module")
def committed():
    frame = pd.read_csv(ROOT / "figures" / "eb_sampler.csv")
    meta = json.loads((ROOT / "figures" / "eb_sampler.json").read_text())
    assert meta["quick"] is False
    return frame, meta


def _check_committed(frame, meta, task, name, den, pol):
    eps = meta["smoothing_eps"]
    d = task.denoiser() if den == "exact" else smoothed(task.denoiser(), eps)
    kind = "EB" if isinstance(pol, policies.EntropyBounded) else "TopK"
    param = pol.gamma if kind == "EB" else pol.k
    dname = "exact" if den == "exact" else f"smoothed(eps={eps})"
    row = one_row(frame, task=name, denoiser=dname, policy=kind, proxy=pol.proxy, param=param)
    assert row.task_detail == task.name and row.n == 0
    _check_point(row, evaluate_sampler(task, pol, d))


def test_committed_exact_rows(committed):
    """Committed exact copy-pairs rows recomputed through evaluate_sampler with a hand-built task (1e-10)."""
    frame, meta = committed
    copy = copy_pairs_task(8)
    _check_committed(frame, meta, copy, "copy_pairs", "smoothed", policies.EntropyBounded(1.0, "entropy"))
    _check_committed(frame, meta, copy, "copy_pairs", "smoothed", policies.TopK("confidence", k=2))
    _check_committed(frame, meta, copy, "copy_pairs", "exact", policies.TopK("margin", k=3))


@pytest.mark.slow
def test_committed_exact_rows_large(committed):
    """Committed exact Markov (V = 4, L = 7) and 4x4 Sudoku (8 blanks, 5**8 states) rows recomputed (1e-10)."""
    frame, meta = committed
    seed = meta["seed"]
    markov = markov_task(jax.random.PRNGKey(seed), 4, 7, concentration=0.5, forbid=0.5)
    _check_committed(frame, meta, markov, "markov", "exact", policies.EntropyBounded(0.25, "margin"))
    _check_committed(frame, meta, markov, "markov", "smoothed", policies.TopK("confidence", k=2))
    sudoku = sudoku_task(num_blanks=8, seed=seed, min_solutions=3)
    _check_committed(frame, meta, sudoku, "sudoku", "smoothed", policies.EntropyBounded(0.5, "margin"))


def test_committed_mc_row(eb, committed):
    """One committed Monte-Carlo row (empty 4x4 Sudoku, n = 2000) recomputed with its key: identical as written."""
    frame, meta = committed
    seed = meta["seed"]
    task, pol = sudoku_task(np.full(16, -1)), policies.EntropyBounded(0.5, "margin")
    cfg = next(
        c for c in eb.grid(False, seed) if (c.method, c.denoiser_name, c.policy) == ("mc", "exact", pol)
    )  # the script's key labels of this point
    row = one_row(frame, task=cfg.task_name, denoiser="exact", policy="EB", proxy="margin", param=0.5)
    assert row.task_detail == task.name
    pt = evaluate_sampler_mc(eb._common.point_key(seed, *cfg.labels), task, pol, num=meta["mc_samples"])
    assert row.n == pt.n == 2000
    for f in ("nfe", "nfe_se", "accuracy", "accuracy_se"):  # the CSV holds 12 significant digits
        assert float(eb._common.CSV_FLOAT % getattr(pt, f)) == row[f], f


def test_committed_speedups(eb, committed):
    """The committed speed-up table = nfe_speedups of the committed CSV."""
    frame, _ = committed
    again = nfe_speedups(frame, eb.TOLERANCES, by=("task", "denoiser", "proxy"))
    written = pd.read_csv(ROOT / "figures" / "eb_sampler_speedup.csv")
    pd.testing.assert_frame_equal(written, again, rtol=1e-11, check_dtype=False)


def test_eb_gamma_zero_counts_tiny_entropies_exactly():
    """gamma = 0 admits one positive-entropy token per step, however small the others' entropies: with
    entropies (0.0222, 1.3e-23) in proxy order the float excess cumsum - cummax is 0, yet only 1 token may
    go (the excess sum_U H - max_U H is 1.3e-23 exactly, not the float cumsum - cummax = 0). Zero-entropy
    tokens still ride along: (0, 0.3, 0) reveals all 3."""
    from theory.policies import eb_count

    ok = jnp.ones(3, bool)
    assert int(eb_count(jnp.array([0.0222, 1.3e-23, 0.0]), ok, 0.0)) == 1
    assert int(eb_count(jnp.array([0.0, 0.3, 0.0]), ok, 0.0)) == 3
    assert int(eb_count(jnp.array([0.0222, 1.3e-23, 0.0]), ok, 1e-30)) == 1  # excess 1.3e-23 > gamma
    assert int(eb_count(jnp.array([0.0222, 1.3e-23, 0.0]), ok, 1e-22)) == 3
