"""The n-gram / HMM forward–backward (synthetic.forward_backward): the one-scan, unrolled implementation and
its marginals_at against the two-scan implementation it replaced (kept here as the oracle), to 1e-12, on
drawn n-grams and HMMs with sparse tables, deterministic chains and impossible partial states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from synthetic import forward_backward as fb
from synthetic import languages
from synthetic.chain_oracle import safe_log

from conftest import assert_close
from strategies import chain_partial_states, fb_languages, seeds

B8 = 8


@jax.jit(static_argnames=("kind", "order"))
def reference_fb(init, emit, trans, states, kind, order):
    """The previous implementation: a forward and a backward lax.scan, conditionals at every position."""
    V, L = emit.shape[2], states.shape[1]
    d = fb.ChainDenoiser(V, L, kind, order, init, emit, trans)
    K = emit.shape[0]
    B = states.shape[0]
    vis = states != V
    tok = jnp.where(vis, states, 0)
    emit_idx = jnp.minimum(jnp.arange(L), K - 1)
    ev = jnp.where(vis.T[..., None], jnp.swapaxes(emit, 1, 2)[emit_idx[:, None], tok.T], 1.0)  # (L, B, S)

    def fwd(carry, e):
        pred, i = carry
        filt, c = fb._norm(pred * e)
        nxt, _ = fb._norm(fb._fwd_step(d, filt, i))
        return (nxt, i + 1), (pred, c)

    pred0 = jnp.broadcast_to(init, (B, init.shape[0]))
    _, (preds, cs) = jax.lax.scan(fwd, (pred0, jnp.int32(0)), ev)

    def bwd(beta, xs):
        e, i = xs
        prev, _ = fb._norm(fb._bwd_step(d, beta * e, i - 1))
        return prev, beta

    _, betas = jax.lax.scan(bwd, jnp.ones_like(pred0), (ev, jnp.arange(L)), reverse=True)
    gamma = jnp.swapaxes(preds * betas, 0, 1)  # (B, L, S)
    num = jnp.einsum("bls,lsv->blv", gamma, emit[emit_idx])
    ok = jnp.all(cs > 0, axis=0)
    den = jnp.sum(num, axis=-1, keepdims=True)
    good = ok[:, None, None] & (den > 0)
    cond = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0 / V)
    marg = jnp.where(vis[..., None], jax.nn.one_hot(tok, V, dtype=jnp.float64), cond)
    return marg, jnp.sum(safe_log(cs), axis=0)


def _check(lang, seed, batch=B8):
    d = lang.denoiser()
    st = jnp.asarray(chain_partial_states(lang, seed, batch), jnp.int32)
    ref, ref_lz = reference_fb(d.init, d.emit, d.trans, st, d.kind, d.order)
    assert_close(d.marginals(st), ref, rtol=0, atol=1e-12)
    L = lang.length
    pos = jnp.asarray(np.random.default_rng(seed).integers(0, L, size=(batch, L)), jnp.int32)  # duplicates too
    assert_close(
        d.marginals_at(st, pos), np.take_along_axis(np.asarray(ref), np.asarray(pos)[..., None], 1), atol=1e-12
    )
    lz, ref_lz = np.asarray(d.log_marginal(st)), np.asarray(ref_lz)
    assert np.array_equal(np.isinf(lz), np.isinf(ref_lz))
    assert_close(lz[np.isfinite(lz)], ref_lz[np.isfinite(lz)], rtol=1e-12, atol=1e-12)


@given(fb_languages(kinds=("hmm",)), seeds)
def test_one_scan_forward_backward_equals_two_scan_reference(lang, seed):
    """HMMs by default (the n-gram path is checked against the enumerated engine in tests/test_chains.py by
    default, and against this reference in the slow twin): one compilation per variant."""
    _check(lang, seed)


@pytest.mark.slow
@settings(max_examples=60)
@given(fb_languages(), seeds)
def test_one_scan_forward_backward_equals_two_scan_reference_many(lang, seed):
    _check(lang, seed)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hmm", "ngram"])
def test_long_sequences_equal_reference(kind):
    """L = 300 (several unrolled blocks and a remainder), V = H = 8 / a V = 4 trigram, 30% masked."""
    key = jax.random.PRNGKey(7)
    lang = languages.random_hmm(key, 8, 8, 300, 0.5) if kind == "hmm" else languages.random_ngram(key, 4, 3, 300, 0.5)
    _check(lang, 3, batch=16)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hmm", "sparse_chain"])
def test_fast_path_sampler_law_chi_square(kind):
    """The core sampler's static-order fast path through the new marginals_at (HMM; the sparse-row chain with
    a teleport) draws from the exact law: chi-square at level 1e-4 over V**L = 8 cells, RandomOrder, 2 steps."""
    from scipy import stats

    from synthetic.sparse_chain import random_sparse_chain
    from theory import metrics, policies, sampling

    key = jax.random.PRNGKey(11)
    if kind == "hmm":
        lang = languages.random_hmm(key, 2, 2, 3, 0.5)
    else:
        lang = random_sparse_chain(key, 2, 1, 3, eps=0.2)
    J = lang.joint()
    pol = policies.RandomOrder()
    law = np.asarray(sampling.exact_law(J, pol, 2).probs)
    s = sampling.sample(jax.random.PRNGKey(4), lang.denoiser(), pol, 2, num=30000)
    emp = np.round(metrics.empirical_law(s.tokens, 2) * 30000)
    keep = law > 0
    assert emp[~keep].sum() == 0
    assert stats.chisquare(emp[keep], law[keep] * 30000).pvalue > 1e-4
