"""Yang2025: AP-MDM controllers built from exact conditionals or programmed by hand (no training).

Each controller has the two faces of :mod:`theory.anyprocess` (``branches`` for the exact law, ``step``
for the jitted Monte-Carlo sampler) and is run with :func:`theory.anyprocess.exact_law` / ``sample``.

* :class:`SelfCorrecting` (issue 13 (a)) — a plain MDM draft (RandomOrder, N steps, the language's exact
  conditionals), then correction steps: **remask** the clean tokens that are inconsistent under q and
  **refill** every mask in parallel from the exact conditionals of the filtered state. Two filters:

  - ``"prefix"``: keep a clean token iff its conditional given the tokens kept to its left is > tau
    (tau = 0: iff it is consistent with them, q(kept_<i, z_i) > 0), scanning left to right; the rest is
    remasked. The kept state is possible, and for the deterministic worst cases (copy pairs, the
    additive n-gram) every mask is then determined, so one refill is exact.
  - ``"factor"`` (block languages): remask every clean token of a block whose visible part is
    impossible (both tokens of a bad copy pair). The refill redraws whole blocks in parallel, so a block
    can fail again (probability ½ for copy pairs).

  Closed forms for copy pairs with a Bernoulli draft: :func:`copy_pairs_draft_nfe`,
  :func:`copy_pairs_prefix_nfe`, :func:`copy_pairs_factor_rounds`, :func:`copy_pairs_factor_nfe`.
* :class:`ParityElimination` (issue 13 (b)) — deletion-based parity: remove 0s and pairs of 1s.
  ``"sequential"`` acts on the first two tokens only (a rule learnable from length-2 examples, exact at
  every length): 2 (n - 1) NFE. ``"tree"`` reduces the pairs (2j, 2j+1) all at once: 2 ceil(log2 n) NFE.
* :class:`DyckGenerator` (issue 13 (c)) — insertions of a bracket and its inverse at a random gap; its
  support is the two-sided Dyck-k language (:func:`two_sided_dyck`) up to a length.
* :class:`Circuit`, :class:`CircuitController` (issue 13 (d)) — an MDM with a *programmed* denoiser on a
  scratchpad: a cell's conditional is one-hot once the cells it depends on are visible (one circuit layer
  per call, as a constant-depth network computes), and the controller reveals every such cell per step
  (``"parallel"``: parallel time = circuit depth, ceil(log2 n) for :func:`parity_tree` and
  :func:`prefix_sums`) or the leftmost one (``"sequential"``: one token per step, autoregressive).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from theory.anyprocess import DELETE, INSERT, REMASK, MDMController, mdm_controller
from theory.bounds import copy_pairs_ser_bernoulli, unconditional_reveal_probs
from theory.joint import Joint
from theory.pytree import register_dataclass
from theory.schedules import Schedule

from .languages import NGram
from .worst_case import BlockLanguage

FILTERS = ("prefix", "factor")


def _onehot_np(idx: np.ndarray, n: int) -> np.ndarray:
    return (np.asarray(idx)[..., None] == np.arange(n)).astype(np.float64)


# ================================ (a) self-correction =================================================
def prefix_filter_joint(joint: Joint, states, tau: float = 0.0) -> np.ndarray:
    """Reference (numpy, any Joint): the clean positions the ``"prefix"`` filter remasks, (K, L) bool.

    Left to right, keep a clean token z_i iff q(x_i = z_i | kept tokens left of i) > tau, i.e.
    C[kept + z_i] > tau * C[kept] with C the cylinder sums of q; a token not kept is flagged.
    """
    V, L = joint.vocab_size, joint.length
    cyl = np.asarray(joint.denoiser().cyl)
    st = (V + 1) ** np.arange(L - 1, -1, -1, dtype=np.int64)
    z = np.asarray(states, dtype=np.int64)
    K = z.shape[0]
    kept = np.full(K, V * st.sum(), dtype=np.int64)  # the all-mask state
    flags = np.zeros(z.shape, bool)
    for i in range(L):
        clean = z[:, i] != V
        cand = kept + (z[:, i] - V) * st[i]
        ok = clean & (cyl[np.where(clean, cand, kept)] > tau * cyl[kept])
        flags[:, i] = clean & ~ok
        kept = np.where(ok, cand, kept)
    return flags


def _block_prefix_flags(block_cyl, states, V: int, b: int, tau, factor):
    """Flags (B, L) of the block filters on a block language (JAX): per block, greedy over its b tokens
    ("prefix"), or every clean token of an impossible block ("factor"); ``factor`` is a (traced) bool, so
    both filters share one compilation."""
    B, L = states.shape
    m = L // b
    blocks = states.reshape(B * m, b)
    st_np = (V + 1) ** np.arange(b - 1, -1, -1, dtype=np.int64)
    st = jnp.asarray(st_np)
    impossible = block_cyl[blocks.astype(jnp.int64) @ st] <= 0  # (B m,)
    factor_flags = (impossible[:, None] & (blocks != V)).reshape(B, L)
    kept = jnp.full((B * m,), V * int(st_np.sum()), jnp.int64)
    flags = []
    for j in range(b):
        clean = blocks[:, j] != V
        cand = kept + (blocks[:, j].astype(jnp.int64) - V) * st[j]
        ok = clean & (block_cyl[jnp.where(clean, cand, kept)] > tau * block_cyl[kept])
        flags.append(clean & ~ok)
        kept = jnp.where(ok, cand, kept)
    return jnp.where(factor, factor_flags, jnp.stack(flags, axis=1).reshape(B, L))


def _ngram_prefix_flags(init, cond, states, V: int, n: int, tau):
    """Flags (B, L) of the prefix filter on an order-n n-gram: a normalised forward pass over (n-1)-tuples
    that only absorbs the kept tokens; z_i is kept iff q(x_i = z_i | kept tokens left of i) > tau."""
    B, L = states.shape
    S = V ** (n - 1)
    digits = (np.arange(S)[None, :] // (V ** np.arange(n - 2, -1, -1))[:, None]) % V  # (n-1, S)
    alpha = jnp.broadcast_to(init, (B, S))
    flags = []

    def absorb(alpha, tok_digit, z):
        """(alpha (B, S), digit of the tuple each state holds at this position (S,), tokens (B,))."""
        p = alpha / jnp.sum(alpha, axis=1, keepdims=True)
        match = tok_digit[None, :] == z[:, None]  # (B, S)
        pz = jnp.sum(jnp.where(match, p, 0.0), axis=1)  # q(x_i = z_i | kept)
        clean = z != V
        ok = clean & (pz > tau)
        return jnp.where(ok[:, None], jnp.where(match, p, 0.0), p), clean & ~ok

    for i in range(min(n - 1, L)):  # the first n-1 tokens: digits of the initial tuple
        alpha, f = absorb(alpha, jnp.asarray(digits[i]), states[:, i])
        flags.append(f)
    if L <= n - 1:
        return jnp.stack(flags, axis=1)
    cond3 = cond.reshape(V, V ** (n - 2), V)  # (first a, middle c, next b)
    last = jnp.asarray(digits[-1])

    def scan(alpha, z):
        a = alpha.reshape(B, V, -1)
        pred = jnp.einsum("bac,acv->bcv", a, cond3).reshape(B, S)  # tuple (c, v)
        pred = pred / jnp.sum(pred, axis=1, keepdims=True)
        return absorb(pred, last, z)

    _, rest = jax.lax.scan(scan, alpha, states[:, n - 1 :].T)  # (L-n+1, B)
    return jnp.concatenate([jnp.stack(flags, axis=1), rest.T], axis=1)


@register_dataclass(data_fields=("block",))
@dataclass(frozen=True, eq=False)
class LocalBlockDenoiser:
    """A block language's exact conditionals computed block by block, each block with its own impossible-state
    convention (1/V at the masked positions of an impossible *block* only).

    Equal to q's conditionals (:class:`synthetic.worst_case.BlockDenoiser`) on every possible state. On an
    impossible state q's conditionals are undefined and the toolkit's global convention answers 1/V at every
    masked position; here the good blocks keep copying. So a plain-MDM run has the same law on q's support
    (same SER) with either, while the number of bad blocks after a draft — what a factor-wise corrector must
    repair — is the product of independent block laws (the closed forms below assume this).
    """

    block: object  # the block's ExactDenoiser
    num_blocks: int
    vocab_size: int
    length: int

    def marginals(self, states):
        states = jnp.asarray(states)
        B = states.shape[0]
        blocks = states.reshape(B * self.num_blocks, self.block.length)
        return self.block.marginals(blocks).reshape(B, self.length, self.vocab_size)


def local_block_denoiser(lang: BlockLanguage) -> LocalBlockDenoiser:
    """The block-local exact conditionals of a block language (:class:`LocalBlockDenoiser`)."""
    return LocalBlockDenoiser(lang.block.denoiser(), lang.num_blocks, lang.vocab_size, lang.length)


@register_dataclass(data_fields=("mdm", "denoiser", "block_cyl", "init", "cond", "tau", "factor"))
@dataclass(frozen=True, eq=False)
class SelfCorrecting:
    """Plain-MDM draft, then remask-and-refill with exact conditionals (module docstring; build with
    :func:`self_correcting`).

    Step n on state z: while z has masks and n < N, the draft step of :class:`theory.anyprocess.MDMController`
    (no remask). Otherwise a correction step: F = the filter's flagged clean tokens; z' = z with F masked;
    remask F and unmask every mask of z with the exact conditionals at z' (values drawn independently).
    A clean state the filter accepts is a fixed point: generation stops there.
    """

    mdm: MDMController
    denoiser: object
    block_cyl: jax.Array
    init: jax.Array
    cond: jax.Array
    tau: float
    factor: jax.Array  # bool (): the "factor" filter (else "prefix"); traced, so both share a compilation
    kind: str  # "block" | "ngram"
    block_length: int
    order: int
    vocab_size: int
    length: int

    @property
    def num_steps(self) -> int:
        return self.mdm.num_steps

    @property
    def filter(self) -> str:
        """ "factor" or "prefix" (host side only)."""
        return "factor" if bool(self.factor) else "prefix"

    def flags(self, states):
        """Clean positions the filter remasks: (B, L) int states -> (B, L) bool (JAX)."""
        states = jnp.asarray(states)
        if self.kind == "block":
            return _block_prefix_flags(
                self.block_cyl, states, self.vocab_size, self.block_length, self.tau, self.factor
            )
        return _ngram_prefix_flags(self.init, self.cond, states, self.vocab_size, self.order, self.tau)

    def _correction(self, tokens):
        V = self.vocab_size
        flags = self.flags(tokens)
        filtered = jnp.where(flags, V, tokens)
        marg = self.denoiser.marginals(filtered)  # (B, L, V)
        full = jnp.concatenate([marg, jnp.zeros(marg.shape[:-1] + (1,))], axis=-1)
        tp = jnp.where((tokens == V)[..., None], full, jax.nn.one_hot(V, V + 1, dtype=jnp.float64))
        bp = jnp.zeros(tokens.shape + (3,)).at[..., REMASK].set(flags.astype(jnp.float64))
        return tp, bp

    def branches(self, states, n):
        states = np.asarray(states, dtype=np.int64)
        K = states.shape[0]
        V = self.vocab_size
        draft = (states == V).any(1) & (n < self.num_steps)
        par, ws, tps, bps = [], [], [], []
        d_idx = np.nonzero(draft)[0]
        if d_idx.size:
            p, w, tp, bp = self.mdm.branches(states[d_idx], n)
            par.append(d_idx[p]), ws.append(w), tps.append(tp), bps.append(bp)
        c_idx = np.nonzero(~draft)[0]
        if c_idx.size:
            b = max(8, 1 << (c_idx.size - 1).bit_length())  # padded to a power of two: few compilations
            padded = np.full((b, states.shape[1]), V, np.int32)
            padded[: c_idx.size] = states[c_idx]
            tp, bp = _correction_jit(self, jnp.asarray(padded))
            par.append(c_idx), ws.append(np.ones(c_idx.size))
            tps.append(np.asarray(tp)[: c_idx.size]), bps.append(np.asarray(bp)[: c_idx.size])
        del K
        return np.concatenate(par), np.concatenate(ws), np.concatenate(tps), np.concatenate(bps)

    def step(self, keys, tokens, lengths, n):
        V = self.vocab_size
        tp_d, bp_d = self.mdm.step(keys, tokens, lengths, n)
        tp_c, bp_c = self._correction(tokens)
        draft = jnp.any(tokens == V, axis=1) & (n < self.num_steps)
        return jnp.where(draft[:, None, None], tp_d, tp_c), jnp.where(draft[:, None, None], bp_d, bp_c)


_correction_jit = jax.jit(lambda c, t: c._correction(t))


def self_correcting(
    lang,
    steps: int,
    *,
    reveal: str = "bernoulli",
    schedule: Schedule | None = None,
    filter: str = "prefix",
    tau: float = 0.0,
) -> SelfCorrecting:
    """A :class:`SelfCorrecting` controller for a :class:`~synthetic.worst_case.BlockLanguage` (copy pairs)
    or an :class:`~synthetic.languages.NGram` (the additive n-gram), with an N-step RandomOrder draft.

    ``filter``: "prefix" (both kinds) or "factor" (block languages only: on an n-gram, remasking whole
    violated windows leaves visible tokens that no sequence extends, and the exact conditionals of an
    impossible state carry no information). ``tau`` in [0, 1): the prefix filter's threshold on
    q(z_i | kept tokens left of i) (0: remask exactly the inconsistent tokens).
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}.")
    if not 0 <= tau < 1:
        raise ValueError(f"tau must be in [0, 1), got {tau}.")
    den = local_block_denoiser(lang) if isinstance(lang, BlockLanguage) else lang.denoiser()
    mdm = mdm_controller(den, None, steps, reveal=reveal, schedule=schedule)
    V, L = lang.vocab_size, lang.length
    z1 = jnp.zeros(1)
    if isinstance(lang, BlockLanguage):
        cyl = lang.block.denoiser().cyl
        fac = jnp.asarray(filter == "factor")
        return SelfCorrecting(mdm, den, cyl, z1, z1, float(tau), fac, "block", lang.block_length, 0, V, L)
    if isinstance(lang, NGram):
        if filter == "factor":
            raise ValueError(
                "filter='factor' needs a block language: on an n-gram, use filter='prefix' (remasking whole "
                "violated windows can leave an impossible visible state, where the exact conditionals are uniform)."
            )
        return SelfCorrecting(
            mdm, den, z1, jnp.asarray(lang.init), jnp.asarray(lang.cond), float(tau), jnp.asarray(False), "ngram", 0,
            lang.order, V, L,
        )  # fmt: skip
    raise TypeError(f"self_correcting needs a BlockLanguage or an NGram, got {type(lang).__name__}.")


# ---- closed forms for copy pairs (Bernoulli draft) [ours] --------------------------------------------------------
def _pi(reveal_probs) -> np.ndarray:
    return unconditional_reveal_probs(reveal_probs)


def copy_pairs_draft_nfe(length: int, reveal_probs) -> float:
    """[ours] E[NFE] of the plain-MDM Bernoulli draft (RandomOrder) at length L: sum_s [1 - (1 - pi_s)^L].

    Each token's reveal step is independent with law pi (:func:`theory.bounds.unconditional_reveal_probs`);
    step s is an NFE iff at least one of the L tokens is revealed at s. (Any language: only the reveal
    times matter.)
    """
    pi = _pi(reveal_probs)
    none = np.where(pi < 1, np.exp(int(length) * np.log1p(-np.minimum(pi, 0.5))), 0.0)  # (1 - pi_s)^L
    none = np.where((pi > 0.5) & (pi < 1), (1 - pi) ** int(length), none)
    return float(np.sum(1.0 - none))


def copy_pairs_prefix_nfe(length: int, reveal_probs) -> float:
    """[ours; Yang2025 remasking vs Feng2025's SER bound] Copy pairs, Bernoulli draft + ``"prefix"`` filter:
    E[NFE] = E[draft NFE] + 2 SER_MDM, and the final SER is 0.

    After the draft, a bad block (a, b != a) has its second token remasked (one correction step) and
    refilled by copying a (one more step); every bad block is fixed in the same two steps, so NFE = draft
    NFE + 2 * 1{draft has a bad block}, and P(bad block) = SER_MDM = 1 - (1 - ½ Σ pi_s²)^{L/2}
    (:func:`theory.bounds.copy_pairs_ser_bernoulli`). The final law is q exactly (a good block keeps its
    uniform a; a bad block keeps its uniform first token). Bounded by draft NFE + 2 at every L.
    """
    return copy_pairs_draft_nfe(length, reveal_probs) + 2.0 * copy_pairs_ser_bernoulli(length, reveal_probs)


def copy_pairs_factor_rounds_cdf(length: int, reveal_probs, rounds) -> np.ndarray:
    """[ours] Copy pairs, ``"factor"`` filter: P(R <= r) = (1 - p 2^{-r})^{L/2}, p = ½ Σ_s pi_s².

    R = number of remask-and-refill rounds until every block is right. A block is bad after the draft with
    probability p (both tokens revealed at one step and the independent uniform draws disagree), and
    each round remasks both tokens of every bad block and redraws them independently (uniform), failing
    again with probability ½; blocks are independent, so R = max over L/2 blocks of independent
    K_b with P(K_b > r) = p 2^{-r}.
    """
    pi = _pi(reveal_probs)
    p = 0.5 * float(np.sum(pi**2))
    r = np.asarray(rounds, dtype=np.float64)
    return np.exp((int(length) // 2) * np.log1p(-p * 2.0**-r))


def copy_pairs_factor_nfe(length: int, reveal_probs, tol: float = 1e-16) -> float:
    """[ours] E[NFE] of the ``"factor"`` filter on copy pairs: E[draft NFE] + 2 E[R],
    E[R] = Σ_{r >= 0} (1 - P(R <= r)) (:func:`copy_pairs_factor_rounds_cdf`); grows like 2 log2(L p / 2)."""
    total, r = 0.0, 0
    while True:
        tail = 1.0 - float(copy_pairs_factor_rounds_cdf(length, reveal_probs, r))
        total += tail
        r += 1
        if tail < tol or r > 4000:
            break
    return copy_pairs_draft_nfe(length, reveal_probs) + 2.0 * total


# ================================ (b) parity by elimination ===========================================
PARITY_MODES = ("sequential", "tree")
_M2 = 2  # the mask token of the binary vocabulary


def _parity_seq_np(z: np.ndarray):
    """Predictions (K, L) and bits (K, L, 3) of the sequential rule on the first two tokens (numpy)."""
    K, L = z.shape
    y = np.full((K, L), _M2, np.int64)
    bits = np.zeros((K, L, 3), bool)
    if L < 2:
        return y, bits
    a, b = z[:, 0], z[:, 1]
    am, bm = a == _M2, b == _M2
    bits[:, 0, DELETE] = am  # (M, .) -> drop the first mask
    y[:, 1] = np.where(am & bm, 0, _M2)  # (M, M) -> 0 (a pair of 1s)
    bits[:, 1, DELETE] = ~am & bm  # (1, M) -> drop the second mask
    clean = ~am & ~bm
    bits[:, 0, REMASK] = clean & ((a == 0) | ((a == 1) & (b == 1)))
    bits[:, 1, REMASK] = clean & (a == 1)
    return y, bits


def _parity_tree_np(z: np.ndarray):
    """The tree rule on the pairs (2j, 2j+1) at once (numpy)."""
    K, L = z.shape
    y = np.full((K, L), _M2, np.int64)
    bits = np.zeros((K, L, 3), bool)
    P = L // 2
    if P == 0:
        return y, bits
    a, b = z[:, 0 : 2 * P : 2], z[:, 1 : 2 * P : 2]  # (K, P)
    am, bm = a == _M2, b == _M2
    phase2 = (z == _M2).any(1, keepdims=True)  # masks present: the deletion half of a round
    bits[:, 0 : 2 * P : 2, DELETE] = phase2 & am
    y[:, 1 : 2 * P : 2] = np.where(phase2 & am & bm, 0, _M2)
    bits[:, 1 : 2 * P : 2, DELETE] = phase2 & ~am & bm
    bits[:, 0 : 2 * P : 2, REMASK] = ~phase2 & ((a == 0) | ((a == 1) & (b == 1)))
    bits[:, 1 : 2 * P : 2, REMASK] = ~phase2 & (a == 1)
    return y, bits


def _parity_seq_jax(tokens, lengths):
    B, Lmax = tokens.shape
    y = jnp.full((B, Lmax), _M2, jnp.int32)
    bits = jnp.zeros((B, Lmax, 3), bool)
    if Lmax < 2:
        return y, bits
    a, b = tokens[:, 0], tokens[:, 1]
    ok = lengths >= 2
    am, bm = a == _M2, b == _M2
    y = y.at[:, 1].set(jnp.where(ok & am & bm, 0, _M2))
    bits = bits.at[:, 0, DELETE].set(ok & am)
    bits = bits.at[:, 1, DELETE].set(ok & ~am & bm)
    clean = ok & ~am & ~bm
    bits = bits.at[:, 0, REMASK].set(clean & ((a == 0) | ((a == 1) & (b == 1))))
    bits = bits.at[:, 1, REMASK].set(clean & (a == 1))
    return y, bits


def _parity_tree_jax(tokens, lengths):
    B, Lmax = tokens.shape
    pos = jnp.arange(Lmax)
    pair = pos // 2
    first = pos % 2 == 0
    in_pair = (2 * pair + 1)[None, :] < lengths[:, None]  # both members inside the sequence
    partner = jnp.where(first, pos + 1, pos - 1)
    partner = jnp.clip(partner, 0, Lmax - 1)
    a = jnp.where(first[None, :], tokens, tokens[:, partner])  # the pair's first token, at both members
    b = jnp.where(first[None, :], tokens[:, partner], tokens)
    live = pos[None, :] < lengths[:, None]
    phase2 = jnp.any(live & (tokens == _M2), axis=1, keepdims=True)
    am, bm = a == _M2, b == _M2
    y = jnp.where(in_pair & ~first[None, :] & phase2 & am & bm, 0, _M2).astype(jnp.int32)
    delete = in_pair & phase2 & jnp.where(first[None, :], am, ~am & bm)
    remask = in_pair & ~phase2 & jnp.where(first[None, :], (a == 0) | ((a == 1) & (b == 1)), a == 1)
    bits = jnp.stack([remask, jnp.zeros_like(remask), delete], axis=-1)
    return y, bits


def _controls_to_probs_np(y, bits, V):
    return _onehot_np(y, V + 1), bits.astype(np.float64)


@dataclass(frozen=True, eq=False)
class ParityElimination:
    """Deletion-based parity on {0, 1} (mask = 2): remove 0s, turn pairs of 1s into a 0, until one token
    remains (the parity; a mask-free fixed point). Deterministic; ``mode`` "sequential" or "tree".

    Sequential (the first two tokens (a, b) only): (0, b) -> (M, b) -> (b); (1, 0) -> (1, M) -> (1);
    (1, 1) -> (M, M) -> (0). Each reduction is a remask step and a delete step: NFE = 2 (n - 1),
    model calls = 2 (n - 1) + 1 (the last call sees the fixed point). The same rule on every pair
    (2j, 2j+1) at once ("tree") halves the length every two steps: NFE = 2 ceil(log2 n).

    A pytree whose only leaf is the mode flag, so both modes share one Monte-Carlo compilation.
    """

    mode: str = "sequential"
    vocab_size: int = 2

    def __post_init__(self):
        if self.mode not in PARITY_MODES:
            raise ValueError(f"mode must be one of {PARITY_MODES}, got {self.mode!r}.")
        if self.vocab_size != 2:
            raise ValueError("ParityElimination works on bits: vocab_size must be 2.")

    def expected_nfe(self, n: int) -> int:
        """2 (n - 1) (sequential) or 2 ceil(log2 n) (tree)."""
        return 2 * (n - 1) if self.mode == "sequential" else 2 * math.ceil(math.log2(n)) if n > 1 else 0

    def branches(self, states, n):
        z = np.asarray(states, dtype=np.int64)
        y, bits = (_parity_seq_np if self.mode == "sequential" else _parity_tree_np)(z)
        tp, bp = _controls_to_probs_np(y, bits, 2)
        return np.arange(z.shape[0]), np.ones(z.shape[0]), tp, bp

    def step(self, keys, tokens, lengths, n):
        return _parity_step(jnp.asarray(self.mode == "tree"), tokens, lengths)


def _parity_step(tree_flag, tokens, lengths):
    y1, b1 = _parity_seq_jax(tokens, lengths)
    y2, b2 = _parity_tree_jax(tokens, lengths)
    y, bits = jnp.where(tree_flag, y2, y1), jnp.where(tree_flag, b2, b1)
    return jax.nn.one_hot(y, 3, dtype=jnp.float64), bits.astype(jnp.float64)


@dataclass(frozen=True, eq=False)
class _TracedParity:
    """What a ParityElimination becomes inside ``jit``: the mode as a traced flag."""

    tree_flag: jax.Array
    vocab_size: int = 2

    def step(self, keys, tokens, lengths, n):
        return _parity_step(self.tree_flag, tokens, lengths)


def _traced_parity(_, children) -> Any:
    return _TracedParity(children[0])


jax.tree_util.register_pytree_node(
    ParityElimination, lambda p: ((jnp.asarray(p.mode == "tree"),), None), _traced_parity
)
jax.tree_util.register_pytree_node(_TracedParity, lambda p: ((p.tree_flag,), None), lambda _, c: _TracedParity(c[0]))


# ================================ (c) two-sided Dyck-k ================================================
def dyck_inverse(token):
    """Bracket 2i and 2i+1 are inverse to each other (a and a^{-1})."""
    return token ^ 1


def reduces_to_empty(word) -> bool:
    """Free reduction (cancel any adjacent t, t^{-1} in either order) leaves the empty word."""
    stack: list = []
    for t in word:
        if stack and stack[-1] == dyck_inverse(int(t)):
            stack.pop()
        else:
            stack.append(int(t))
    return not stack


def two_sided_dyck(k: int, max_length: int) -> set:
    """The two-sided Dyck-k words (tuples over 0..2k-1) of length <= ``max_length``, by brute force:
    every word over the 2k brackets that reduces to the empty word when both t t^{-1} and t^{-1} t cancel
    (the words equal to 1 in the free group on k generators)."""
    out = set()
    for ell in range(0, int(max_length) + 1, 2):
        if (2 * k) ** ell > 5_000_000:
            raise ValueError(f"enumerating (2k)^{ell} = {(2 * k) ** ell} words is too many; lower max_length.")
        for w in np.ndindex(*([2 * k] * ell)) if ell else [()]:
            if reduces_to_empty(w):
                out.add(tuple(int(t) for t in w))
    return out


@dataclass(frozen=True, eq=False)
class DyckGenerator:
    """Generate two-sided Dyck-k words by insertions (vocabulary: brackets 0..2k-1, BOS = 2k; mask 2k+1).

    Start from (BOS,). On a mask-free sequence (BOS, w) with |w| < 2 max_pairs: stop with probability
    ``stop_prob`` (change nothing: a fixed point), else insert a mask after a uniformly chosen position
    (one of the |w| + 1 gaps). A mask with an even number of brackets around it is the first of a new
    pair: unmask it to a uniform bracket t and insert a mask after it; a mask with an odd number is the
    second: unmask it to t^{-1} (the bracket on its left). Three NFE per pair. Every reachable word reduces
    to the empty word, and every such word is reachable (remove a cancelling adjacent pair, induct), so
    with 0 < stop_prob < 1 the support is the two-sided Dyck-k set up to length 2 max_pairs.
    """

    k: int
    max_pairs: int
    stop_prob: float = 0.25

    def __post_init__(self):
        if not (isinstance(self.k, int) and self.k >= 1 and isinstance(self.max_pairs, int) and self.max_pairs >= 0):
            raise ValueError(f"k >= 1 and max_pairs >= 0 must be ints, got {self.k!r}, {self.max_pairs!r}.")
        if not 0 <= self.stop_prob < 1:
            raise ValueError(f"stop_prob must be in [0, 1), got {self.stop_prob}.")

    @property
    def vocab_size(self) -> int:
        return 2 * self.k + 1

    @property
    def bos(self) -> int:
        return 2 * self.k

    @property
    def max_length(self) -> int:
        return 1 + 2 * self.max_pairs

    def budget(self) -> int:
        """Model calls that always suffice: 3 per pair plus the final fixed-point call."""
        return 3 * self.max_pairs + 1

    def branches(self, states, n):
        z = np.asarray(states, dtype=np.int64)
        K, L = z.shape
        V, M = self.vocab_size, self.vocab_size
        par, ws, tps, bps = [], [], [], []
        brackets = np.zeros(V + 1)
        brackets[: 2 * self.k] = 1.0 / (2 * self.k)
        for i in range(K):
            tp = np.zeros((L, V + 1))
            tp[:, M] = 1.0
            masks = np.nonzero(z[i] == M)[0]
            if masks.size:
                j = int(masks[0])
                bp = np.zeros((L, 3))
                if (L - 2) % 2 == 0:  # first of a pair
                    tp[j] = brackets
                    bp[j, INSERT] = 1.0
                else:
                    tp[j] = _onehot_np(dyck_inverse(int(z[i, j - 1])), V + 1)
                par.append(i), ws.append(1.0), tps.append(tp), bps.append(bp)
                continue
            if L - 1 >= 2 * self.max_pairs:
                par.append(i), ws.append(1.0), tps.append(tp), bps.append(np.zeros((L, 3)))
                continue
            if self.stop_prob > 0:
                par.append(i), ws.append(self.stop_prob), tps.append(tp), bps.append(np.zeros((L, 3)))
            for g in range(L):
                bp = np.zeros((L, 3))
                bp[g, INSERT] = 1.0
                par.append(i), ws.append((1 - self.stop_prob) / L), tps.append(tp), bps.append(bp)
        return np.array(par, np.int64), np.array(ws), np.stack(tps), np.stack(bps)

    def step(self, keys, tokens, lengths, n):
        B, Lmax = tokens.shape
        V, M = self.vocab_size, self.vocab_size
        pos = jnp.arange(Lmax)
        live = pos[None, :] < lengths[:, None]
        ismask = live & (tokens == M)
        has_mask = jnp.any(ismask, axis=1)
        j = jnp.argmax(ismask, axis=1)  # the mask (if any)
        first = (lengths - 2) % 2 == 0
        leftok = jnp.take_along_axis(tokens, jnp.maximum(j - 1, 0)[:, None], axis=1)[:, 0]
        uniform = jnp.zeros(V + 1).at[: 2 * self.k].set(1.0 / (2 * self.k))
        inv = jax.nn.one_hot(dyck_inverse(jnp.clip(leftok, 0, 2 * self.k - 1)), V + 1, dtype=jnp.float64)
        at_j = pos[None, :] == j[:, None]
        mask_tp = jnp.where(first[:, None], uniform[None, :], inv)  # (B, V+1)
        keep = jax.nn.one_hot(M, V + 1, dtype=jnp.float64)
        tp = jnp.where((at_j & has_mask[:, None])[..., None], mask_tp[:, None, :], keep)
        u = jax.vmap(lambda k: jax.random.uniform(k, dtype=jnp.float64))(keys)
        full = lengths - 1 >= 2 * self.max_pairs
        grow = ~has_mask & ~full & (u >= self.stop_prob)
        g = jnp.minimum(((u - self.stop_prob) / (1 - self.stop_prob) * lengths).astype(jnp.int32), lengths - 1)
        ins = (grow[:, None] & (pos[None, :] == g[:, None])) | (has_mask & first)[:, None] & at_j
        bp = jnp.zeros((B, Lmax, 3)).at[..., INSERT].set(ins.astype(jnp.float64))
        return tp, bp


# ================================ (d) parallel time: circuits on a scratchpad ==========================
@dataclass(frozen=True, eq=False)
class Circuit:
    """A scratchpad program: positions 0..n-1 are the inputs, each later position a cell whose value is
    (sum of its dependencies' values) mod V (XOR for V = 2; one dependency = a copy). ``deps`` (L, 2) int,
    -1 = none (inputs have none); cells come after their dependencies. ``outputs``: positions of the result."""

    name: str
    num_inputs: int
    deps: np.ndarray
    outputs: tuple
    vocab_size: int = 2

    @property
    def length(self) -> int:
        return int(self.deps.shape[0])

    def depth(self) -> int:
        """Longest dependency chain (inputs have depth 0)."""
        d = np.zeros(self.length, np.int64)
        for i in range(self.num_inputs, self.length):
            d[i] = 1 + max(d[j] for j in self.deps[i] if j >= 0)
        return int(d.max()) if self.length else 0

    def evaluate(self, inputs) -> np.ndarray:
        """Values of every position (L,) for an input vector (n,) (numpy reference)."""
        x = np.asarray(inputs, dtype=np.int64)
        if x.shape != (self.num_inputs,):
            raise ValueError(f"inputs must have shape ({self.num_inputs},), got {x.shape}.")
        v = np.zeros(self.length, np.int64)
        v[: self.num_inputs] = x
        for i in range(self.num_inputs, self.length):
            v[i] = sum(v[j] for j in self.deps[i] if j >= 0) % self.vocab_size
        return v


def _circuit(name, n, cells, outputs, V):
    deps = np.full((n + len(cells), 2), -1, np.int64)
    for c, (a, b) in enumerate(cells):
        deps[n + c] = (a, b)
    return Circuit(name, n, deps, tuple(int(o) for o in outputs), V)


def parity_tree(n: int) -> Circuit:
    """Parity of n bits by a balanced binary tree of XOR cells: n - 1 cells, depth ceil(log2 n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    level, cells = list(range(n)), []
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            cells.append((level[i], level[i + 1]))
            nxt.append(n + len(cells) - 1)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return _circuit("parity_tree", n, cells, level, 2)


def prefix_sums(n: int, vocab_size: int = 2) -> Circuit:
    """All prefix sums mod V by the Hillis–Steele scan: level t adds the value 2^{t-1} to the left;
    ceil(log2 n) levels (depth), n log n cells at most; the outputs are the n prefix sums."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    cur, cells, t = list(range(n)), [], 1
    while t < n:
        nxt = list(cur)
        for i in range(t, n):
            cells.append((cur[i], cur[i - t]))
            nxt[i] = n + len(cells) - 1
        cur, t = nxt, 2 * t
    return _circuit("prefix_sums", n, cells, cur, vocab_size)


def running_sum(n: int, vocab_size: int = 2) -> Circuit:
    """The left-to-right scratchpad s_i = s_{i-1} + x_i (s_0 = x_0): n - 1 cells, depth n - 1 (its last
    cell is the parity for V = 2, the cells are the prefix sums)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    cells, prev = [], 0
    for i in range(1, n):
        cells.append((prev, i))
        prev = n + len(cells) - 1
    return _circuit("running_sum", n, cells, [0] + [n + c for c in range(n - 1)], vocab_size)


CIRCUIT_MODES = ("parallel", "sequential")


@register_dataclass(data_fields=("deps",))
@dataclass(frozen=True, eq=False)
class CircuitDenoiser:
    """The programmed denoiser of a :class:`Circuit`: at a masked cell whose dependencies are all visible,
    the one-hot of its value; at any other masked position (an input, or a cell waiting for its inputs)
    the uniform 1/V. One circuit layer per call — what a constant-depth network computes — unlike the
    exact conditionals of the scratchpad language, which are one-hot everywhere once the inputs are
    visible (an unbounded-depth computation in one call)."""

    deps: jax.Array  # (L, 2)
    vocab_size: int
    length: int

    def ready(self, states):
        """(B, L) bool: masked positions whose dependencies are all visible (inputs: always)."""
        V = self.vocab_size
        d = self.deps
        vis = states != V
        dv = jnp.where(d[None] >= 0, vis[:, jnp.maximum(d, 0)], True)  # (B, L, 2)
        return (states == V) & jnp.all(dv, axis=-1)

    def marginals(self, states):
        states = jnp.asarray(states)
        V = self.vocab_size
        d = self.deps
        vals = jnp.where(d[None] >= 0, states[:, jnp.maximum(d, 0)], 0)  # (B, L, 2)
        f = jnp.sum(vals, axis=-1) % V
        is_cell = jnp.any(d >= 0, axis=-1)[None, :]
        computed = self.ready(states) & is_cell
        out = jnp.where(computed[..., None], jax.nn.one_hot(f, V, dtype=jnp.float64), 1.0 / V)
        return jnp.where(
            (states == V)[..., None], out, jax.nn.one_hot(jnp.clip(states, 0, V - 1), V, dtype=jnp.float64)
        )


@register_dataclass(data_fields=("denoiser",))
@dataclass(frozen=True, eq=False)
class CircuitController:
    """MDM on a circuit's scratchpad: unmask the ready positions (dependencies visible) with the
    programmed denoiser — all of them per step ("parallel": steps = depth, +1 if the inputs are generated
    too) or the leftmost one ("sequential": one token per step, the autoregressive order). Fixed length;
    run with ``stop_when_clean=True``."""

    denoiser: CircuitDenoiser
    mode: str
    vocab_size: int
    length: int

    def _reveal(self, states):
        ready = self.denoiser.ready(states)
        if self.mode == "parallel":
            return ready
        first = jnp.argmax(ready, axis=1)
        return ready & (jnp.arange(states.shape[1])[None, :] == first[:, None])

    def _probs(self, states):
        V = self.vocab_size
        states = jnp.asarray(states)
        marg = self.denoiser.marginals(states)
        full = jnp.concatenate([marg, jnp.zeros(marg.shape[:-1] + (1,))], axis=-1)
        tp = jnp.where(self._reveal(states)[..., None], full, jax.nn.one_hot(V, V + 1, dtype=jnp.float64))
        return tp, jnp.zeros(states.shape + (3,))

    def branches(self, states, n):
        z = np.asarray(states, dtype=np.int64)
        K, L = z.shape
        V = self.vocab_size
        d = np.asarray(self.denoiser.deps)
        vis = z != V
        has = d >= 0
        dv = np.where(has[None], vis[:, np.maximum(d, 0)], True)  # (K, L, 2)
        ready = (z == V) & dv.all(-1)
        if self.mode == "sequential":
            first = ready.argmax(1)
            ready &= np.arange(L)[None, :] == first[:, None]
        vals = np.where(has[None], z[:, np.maximum(d, 0)], 0).sum(-1) % V  # (K, L)
        is_cell = has.any(-1)[None, :]
        tp = np.zeros((K, L, V + 1))
        tp[..., V] = 1.0
        cell = ready & is_cell
        tp[cell] = _onehot_np(vals[cell], V + 1)
        src = ready & ~is_cell
        tp[src] = np.concatenate([np.full(V, 1.0 / V), [0.0]])
        return np.arange(K), np.ones(K), tp, np.zeros((K, L, 3))

    def step(self, keys, tokens, lengths, n):
        return self._probs(tokens)


def circuit_controller(circuit: Circuit, mode: str = "parallel") -> CircuitController:
    """A :class:`CircuitController` for ``circuit``."""
    if mode not in CIRCUIT_MODES:
        raise ValueError(f"mode must be one of {CIRCUIT_MODES}, got {mode!r}.")
    den = CircuitDenoiser(jnp.asarray(circuit.deps, dtype=jnp.int32), circuit.vocab_size, circuit.length)
    return CircuitController(den, mode, circuit.vocab_size, circuit.length)


def circuit_prompt(circuit: Circuit, inputs) -> np.ndarray:
    """The initial state with the inputs visible and every cell masked, (L,)."""
    x = np.asarray(inputs, dtype=np.int64)
    if x.shape != (circuit.num_inputs,):
        raise ValueError(f"inputs must have shape ({circuit.num_inputs},), got {x.shape}.")
    return np.concatenate([x, np.full(circuit.length - circuit.num_inputs, circuit.vocab_size)])


# ================================ (b) a tiny parity model trained on length-2 examples ==================
#: Head features: the first token a in {0, 1, M} times the second b in {0, 1, M, none} (length 1).
PARITY_HEAD_FEATURES = 12
#: Head outputs (logits): token at position 0 (3: 0, 1, M), token at position 1 (3), bits of position 0
#: (remask, insert, delete), bits of position 1.
PARITY_HEAD_OUTPUTS = 12


def parity_head_index(tokens, lengths):
    """Feature index a * 4 + b of each sequence's head (a = tokens[0], b = tokens[1] or 3 if length 1).

    numpy or JAX arrays: tokens (B, Lmax) over {0, 1, 2 = M}, lengths (B,) >= 1."""
    xp = jnp if isinstance(tokens, jax.Array) else np
    a = xp.clip(tokens[:, 0], 0, 2)
    b = xp.where(lengths >= 2, xp.clip(tokens[:, 1], 0, 2), 3) if tokens.shape[1] >= 2 else xp.full_like(a, 3)
    return a * 4 + b


def parity_length2_transitions():
    """The supervised state-transition tuples of the sequential elimination rule on every length-2 input
    (Yang2025's training data for parity): every state reached from (a, b) in {0, 1}^2, plus the final
    length-1 states. Returns (features (S,), token labels (S, 2) in {0, 1, M}, bit labels (S, 6) float)."""
    states = set()
    for x in itertools.product((0, 1), repeat=2):
        z = np.array(x)
        while True:
            states.add(tuple(int(t) for t in z))
            y, bits = _parity_seq_np(z[None])
            nz = np.asarray(_apply_np(z, y[0], bits[0]))
            if nz.tolist() == z.tolist():
                break
            z = nz
    feats, toks, bits_out = [], [], []
    for s in sorted(states):
        z = np.array(s)[None]
        y, bits = _parity_seq_np(np.pad(z, ((0, 0), (0, 2 - z.shape[1])), constant_values=_M2))
        if z.shape[1] == 1:  # a length-1 state: the rule does nothing (the fixed point)
            y, bits = np.full((1, 2), _M2), np.zeros((1, 2, 3), bool)
        feats.append(int(parity_head_index(z, np.array([z.shape[1]]))[0]))
        toks.append(y[0, :2])
        bits_out.append(bits[0, :2].reshape(6))
    return np.array(feats), np.array(toks), np.array(bits_out, dtype=np.float64)


def _apply_np(z, y, bits):
    from theory.anyprocess import apply_transition

    return apply_transition(z, y, bits, 2)


@register_dataclass(data_fields=("weights", "greedy"))
@dataclass(frozen=True, eq=False)
class ParityHeadModel:
    """A tiny AP-MDM for parity: a softmax / logistic regression from the head features
    (:func:`parity_head_index`, 12 one-hot) to the controls of the first two positions; every later
    position predicts M with no bits (architecture: the model reads and writes the head only, as the
    elimination rule needs). ``weights`` (12, 12); ``greedy``: argmax tokens and bits > 1/2 instead of
    sampling from the model's probabilities. Train with :func:`train_parity_head`.

    Length generalisation is partly built in: the head states of a long run are the head states of a
    length-2 run, so a model right on the length-2 states is right at every length (greedy); sampled,
    each of the ~2n decisions errs with the model's residual probability.
    """

    weights: jax.Array
    greedy: Any = True  # bool, traced inside jit: both decodings share one compilation
    vocab_size: int = 2

    def _probs(self, idx, xp):
        logits = xp.asarray(self.weights)[idx]  # (B, 12)
        t0, t1, b = logits[:, 0:3], logits[:, 3:6], logits[:, 6:12]
        hard_t = xp.stack([_onehot_xp(t0.argmax(-1), 3, xp), _onehot_xp(t1.argmax(-1), 3, xp)], axis=1)
        hard_b = (b > 0).astype(xp.float64)
        sm = jax.nn.softmax if xp is jnp else _softmax_np
        soft_t = xp.stack([sm(t0, axis=-1), sm(t1, axis=-1)], axis=1)
        soft_b = 1.0 / (1.0 + xp.exp(-b))
        g = xp.asarray(self.greedy)
        return xp.where(g, hard_t, soft_t), xp.where(g, hard_b, soft_b).reshape(-1, 2, 3)  # (B, 2, 3) each

    def branches(self, states, n):
        z = np.asarray(states, dtype=np.int64)
        K, L = z.shape
        tph, bph = self._probs(parity_head_index(z, np.full(K, L)), np)
        tp, bp = _mask_onehot_np((K, L), 3), np.zeros((K, L, 3))
        h = min(L, 2)
        tp[:, :h], bp[:, :h] = np.asarray(tph)[:, :h], np.asarray(bph)[:, :h]
        return np.arange(K), np.ones(K), tp, bp

    def step(self, keys, tokens, lengths, n):
        B, Lmax = tokens.shape
        tph, bph = self._probs(parity_head_index(tokens, lengths), jnp)
        h = min(Lmax, 2)
        live = (jnp.arange(h)[None, :] < lengths[:, None])[..., None]
        tp = jnp.zeros((B, Lmax, 3)).at[..., 2].set(1.0).at[:, :h].set(jnp.where(live, tph[:, :h], jnp.eye(3)[2]))
        bp = jnp.zeros((B, Lmax, 3)).at[:, :h].set(jnp.where(live, bph[:, :h], 0.0))
        return tp, bp


def _onehot_xp(idx, n, xp):
    return (idx[..., None] == xp.arange(n)).astype(xp.float64)


def _softmax_np(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _mask_onehot_np(shape, V1):
    tp = np.zeros(shape + (V1,))
    tp[..., V1 - 1] = 1.0
    return tp


def parity_head_loss(weights, feats, toks, bits):
    """Yang2025's supervised loss on transition tuples: token cross-entropy (positions 0 and 1) plus one
    binary cross-entropy per control bit, averaged over the tuples."""
    logits = weights[feats]
    ce = 0.0
    for j in range(2):
        lp = jax.nn.log_softmax(logits[:, 3 * j : 3 * j + 3], axis=-1)
        ce = ce - jnp.take_along_axis(lp, toks[:, j : j + 1], axis=1)[:, 0]
    b = logits[:, 6:12]
    bce = jnp.sum(jnp.logaddexp(0.0, b) - bits * b, axis=-1)  # -log sigmoid(+-b)
    return jnp.mean(ce + bce)


def train_parity_head(key, *, steps: int = 500, learning_rate: float = 0.5) -> tuple:
    """Train :class:`ParityHeadModel` weights with Adam on :func:`parity_length2_transitions` (full batch,
    init N(0, 0.01^2)). Returns (weights (12, 12), final loss)."""
    import optax

    feats, toks, bits = (jnp.asarray(a) for a in parity_length2_transitions())
    w = 0.01 * jax.random.normal(key, (PARITY_HEAD_FEATURES, PARITY_HEAD_OUTPUTS), dtype=jnp.float64)
    opt = optax.adam(learning_rate)
    state = opt.init(w)

    def update(_, carry):
        w, state = carry
        upd, state = opt.update(jax.grad(parity_head_loss)(w, feats, toks, bits), state, w)
        return optax.apply_updates(w, upd), state

    w, state = jax.jit(lambda c: jax.lax.fori_loop(0, int(steps), update, c))((w, state))
    return w, float(parity_head_loss(w, feats, toks, bits))


# ================================ measurements for experiments/any_process.py ==========================
def ser_estimate(ok) -> dict:
    """Monte-Carlo SER from a boolean vector "sample i lies in q's support" (Feng2025: SER = mass outside
    the support): estimate, binomial standard error, and the two-sided 95% Clopper–Pearson upper end
    (meaningful when no error is seen: SER = 0 measured means SER <= ser_upper95 at 95%)."""
    from scipy.stats import beta

    ok = np.asarray(ok, bool)
    n, k = ok.size, int((~ok).sum())
    p = k / n
    upper = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return {"ser": p, "ser_se": math.sqrt(p * (1 - p) / n), "ser_upper95": upper}


def in_support(lang, tokens) -> np.ndarray:
    """(num,) bool: q(x) > 0 for each generated sequence (a leftover mask is not in the support)."""
    t = np.asarray(tokens)
    clean = (t >= 0) & (t < lang.vocab_size)
    return np.isfinite(np.asarray(lang.log_prob(jnp.asarray(np.where(clean, t, 0))))) & clean.all(1)


def _nfe_stats(nfe) -> dict:
    x = np.asarray(nfe, dtype=np.float64)
    return {"nfe": float(x.mean()), "nfe_se": float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0}


def plain_mdm_point(lang, steps: int, *, key, num: int) -> dict:
    """Feng2025's sampler (RandomOrder, Bernoulli reveal, linear schedule, exact conditionals) by the core
    Monte-Carlo sampler: {ser, ser_se, ser_upper95, nfe, nfe_se, num}."""
    from theory.policies import RandomOrder
    from theory.sampling import sample as core_sample

    s = core_sample(key, lang.denoiser(), RandomOrder(), int(steps), num=int(num), reveal="bernoulli")
    return {**ser_estimate(in_support(lang, s.tokens)), **_nfe_stats(s.nfe), "num": int(num), "unfinished": 0.0}


def self_correction_point(lang, steps: int, *, filter: str, key, num: int, max_rounds: int) -> dict:
    """An N-step plain-MDM draft then remask-and-refill (:func:`self_correcting`) by the AP-MDM Monte-Carlo
    sampler, at most N + 2 max_rounds model calls: {ser, ser_se, ser_upper95, nfe, nfe_se, num, unfinished}.
    Unfinished runs (budget spent) are scored as they are (with masks they count as errors)."""
    from theory.anyprocess import sample as ap_sample

    sc = self_correcting(lang, int(steps), filter=filter)
    V, L = lang.vocab_size, lang.length
    s = ap_sample(key, sc, [V] * L, num=int(num), max_steps=int(steps) + 2 * int(max_rounds), max_length=L)
    unf = ~np.asarray(s.finished)
    ok = in_support(lang, s.tokens) & ~unf
    return {**ser_estimate(ok), **_nfe_stats(s.nfe), "num": int(num), "unfinished": float(unf.mean())}


def copy_pairs_closed_forms(length: int, steps: int, max_rounds: int | None = None) -> dict:
    """[ours] The copy-pairs closed forms at (L, N), linear Bernoulli draft: plain-MDM SER (Feng2025,
    :func:`theory.bounds.copy_pairs_ser_bernoulli`) and E[NFE] (:func:`copy_pairs_draft_nfe`); remasking
    with the prefix filter (SER 0, :func:`copy_pairs_prefix_nfe`) and the factor filter (SER = P(more than
    ``max_rounds`` rounds) = 1 - :func:`copy_pairs_factor_rounds_cdf`, E[NFE] :func:`copy_pairs_factor_nfe`
    for an unlimited budget)."""
    from theory.schedules import linear, reveal_probs

    rp = reveal_probs(linear(), int(steps))
    factor_ser = 0.0 if max_rounds is None else 1.0 - float(copy_pairs_factor_rounds_cdf(length, rp, max_rounds))
    return {
        "plain MDM": (copy_pairs_ser_bernoulli(length, rp), copy_pairs_draft_nfe(length, rp)),
        "remask (prefix)": (0.0, copy_pairs_prefix_nfe(length, rp)),
        "remask (factor)": (factor_ser, copy_pairs_factor_nfe(length, rp)),
    }


def nfe_for_ser(length: int, delta: float) -> dict:
    """[ours] NFE each method needs on copy pairs to reach SER <= delta (linear Bernoulli schedule):
    plain MDM: the smallest N of :func:`theory.bounds.copy_pairs_min_steps_linear` and its E[NFE]
    (Theta(L), Feng2025); remasking after a one-step draft (N = 1): E[NFE] of the prefix filter (<= 3 at
    every L) and of the factor filter (~ 2 log2 L; SER -> 0 with the number of rounds)."""
    from theory.bounds import copy_pairs_min_steps_linear
    from theory.schedules import linear, reveal_probs

    N = copy_pairs_min_steps_linear(length, delta)
    rp1 = reveal_probs(linear(), 1)
    return {
        "plain_mdm_steps": N,
        "plain MDM": copy_pairs_draft_nfe(length, reveal_probs(linear(), N)),
        "remask (prefix)": copy_pairs_prefix_nfe(length, rp1),
        "remask (factor)": copy_pairs_factor_nfe(length, rp1),
    }


def parity_run(x, mode: str) -> dict:
    """Exact run of :class:`ParityElimination` on one input: {output, correct, nfe, calls, expected_nfe}."""
    from theory.anyprocess import exact_law

    x = np.asarray(x, dtype=np.int64)
    n = x.size
    pe = ParityElimination(mode)
    law = exact_law(pe, x, max_steps=2 * n + 2, max_length=n)
    ((seq, _),) = law.probs.items()
    return {
        "output": int(seq[0]) if len(seq) == 1 else -1,
        "correct": len(seq) == 1 and int(seq[0]) == int(x.sum() % 2),
        "nfe": float(law.expected_nfe),
        "calls": float(law.expected_calls),
        "expected_nfe": pe.expected_nfe(n),
    }


def circuit_run(circuit: Circuit, x, mode: str) -> dict:
    """Exact run of :func:`circuit_controller` on the prompt of input ``x``: {correct, nfe, depth}."""
    from theory.anyprocess import exact_law

    cc = circuit_controller(circuit, mode)
    law = exact_law(cc, circuit_prompt(circuit, x), max_steps=circuit.length + 1, max_length=circuit.length,
                    stop_when_clean=True)  # fmt: skip
    ((seq, _),) = law.probs.items()
    return {
        "correct": bool((np.array(seq) == circuit.evaluate(x)).all()),
        "nfe": float(law.expected_nfe),
        "depth": circuit.depth(),
    }
