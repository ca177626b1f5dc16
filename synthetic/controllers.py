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


def _block_prefix_flags(block_cyl, states, V: int, b: int, tau, factor: bool):
    """Flags (B, L) of the block filters on a block language (JAX): per block, greedy over its b tokens."""
    B, L = states.shape
    m = L // b
    blocks = states.reshape(B * m, b)
    st_np = (V + 1) ** np.arange(b - 1, -1, -1, dtype=np.int64)
    st = jnp.asarray(st_np)
    if factor:
        impossible = block_cyl[blocks.astype(jnp.int64) @ st] <= 0  # (B m,)
        return (impossible[:, None] & (blocks != V)).reshape(B, L)
    kept = jnp.full((B * m,), V * int(st_np.sum()), jnp.int64)
    flags = []
    for j in range(b):
        clean = blocks[:, j] != V
        cand = kept + (blocks[:, j].astype(jnp.int64) - V) * st[j]
        ok = clean & (block_cyl[jnp.where(clean, cand, kept)] > tau * block_cyl[kept])
        flags.append(clean & ~ok)
        kept = jnp.where(ok, cand, kept)
    return jnp.stack(flags, axis=1).reshape(B, L)


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


@register_dataclass(data_fields=("mdm", "denoiser", "block_cyl", "init", "cond", "tau"))
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
    kind: str  # "block" | "ngram"
    filter: str
    block_length: int
    order: int
    vocab_size: int
    length: int

    @property
    def num_steps(self) -> int:
        return self.mdm.num_steps

    def flags(self, states):
        """Clean positions the filter remasks: (B, L) int states -> (B, L) bool (JAX)."""
        states = jnp.asarray(states)
        if self.kind == "block":
            return _block_prefix_flags(
                self.block_cyl, states, self.vocab_size, self.block_length, self.tau, self.filter == "factor"
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
        return SelfCorrecting(mdm, den, cyl, z1, z1, float(tau), "block", filter, lang.block_length, 0, V, L)
    if isinstance(lang, NGram):
        if filter == "factor":
            raise ValueError(
                "filter='factor' needs a block language: on an n-gram, use filter='prefix' (remasking whole "
                "violated windows can leave an impossible visible state, where the exact conditionals are uniform)."
            )
        return SelfCorrecting(
            mdm, den, z1, jnp.asarray(lang.init), jnp.asarray(lang.cond), float(tau), "ngram", filter, 0,
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
