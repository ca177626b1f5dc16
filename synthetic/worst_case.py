"""Feng2025's worst cases for the sequence error rate, and block-product languages with exact laws.

Languages (issue 4):

* :func:`copy_pairs` — L/2 independent blocks (a, a), a uniform on {0, 1}: every token's marginal is
  uniform (non-degenerate) while the joint is deterministic inside a block. The toolkit's clean worst
  case for SER (papers.md, Feng2025 "[ours]"); closed forms in :mod:`theory.bounds`.
* :func:`noisy_copy_pairs` — blocks (a, b) with b = a with probability 1 - rho: full support, so its
  log TER is finite; used to show an exactly L-flat TER gap.
* :func:`additive_ngram` — the hard-constraint n-gram x_i = x_{i-1} + x_{i-2} mod V after a uniform
  random start (x_0, x_1): an :class:`synthetic.languages.NGram` of order 3 with a deterministic
  ``cond`` table, so the Markov engine (``synthetic.markov``) handles it at any L. Every marginal is
  uniform for V = 2 (x_i = F_{i-1} x_0 + F_i x_1 mod 2 with Fibonacci F, never both even).

A :class:`BlockLanguage` is the product of ``num_blocks`` independent copies of a small block joint.
Its exact denoiser at any L is the block's exact denoiser applied block by block
(:class:`BlockDenoiser`, JAX-traceable, so ``theory.sampling.sample`` runs it at L = 1024 and beyond).

Exact laws at any L (:func:`block_bernoulli_metrics`): with Bernoulli reveal and a value-blind policy
that reveals each masked token independently (RandomOrder with ``reveal="bernoulli"`` — a Binomial
count then a uniform subset is the same as independent coin flips), the tokens' reveal steps are
independent across positions, the exact denoiser of a product language factorises over blocks as long
as the visible tokens are possible, and values are drawn independently per position. Hence on q's
support the generated law is the product of the block laws: p_N(x) = prod_j p_N^block(x_j), where
p_N^block is the exact law of the same sampler run on one block. (A path that reveals an impossible
block — two tokens revealed together that disagree — ends off the support whatever happens next; there
the toolkit's convention, 1/V at every masked position of an impossible state, spreads the mass
differently from the product, which changes neither SER nor log TER = +inf.) So
log TER(p_N) = log TER_block(p_N^block) (per token: exactly flat in L) and SER(p_N) = 1 - (1 - SER_block)^m.
With fixed counts the blocks are *not* independent (the counts couple them); use enumeration, Monte Carlo,
or the closed form of :func:`theory.bounds.copy_pairs_ser_fixed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from theory.denoiser import ExactDenoiser
from theory.joint import Joint
from theory.metrics import log_ter, sequence_error_rate
from theory.policies import RandomOrder
from theory.pytree import register_dataclass
from theory.sampling import exact_law
from theory.validation import check_vocab_length, require_x64

from .languages import NGram


@register_dataclass(data_fields=("block",))
@dataclass(frozen=True, eq=False)
class BlockDenoiser:
    """Exact denoiser of a :class:`BlockLanguage`: the block's exact conditionals, block by block.

    ``marginals(states (B, L)) -> (B, L, V)``; JAX-traceable (a reshape around the block's cylinder-sum
    lookup), hashable by identity so it can be a static argument of ``jit``. A state whose visible tokens
    are impossible in any block (q(visible part) = 0) gets 1/V at every masked position — the toolkit's
    one convention (:mod:`theory.denoiser`), the same answer as the enumerated Joint's exact denoiser.
    """

    block: ExactDenoiser
    num_blocks: int
    vocab_size: int
    length: int

    def marginals(self, states) -> jnp.ndarray:
        states = jnp.asarray(states)
        B = states.shape[0]
        b = self.block.length
        blocks = states.reshape(B * self.num_blocks, b)
        out = self.block.marginals(blocks).reshape(B, self.length, self.vocab_size)  # (B, L, V)
        possible = jnp.all((self.block.state_prob(blocks) > 0).reshape(B, self.num_blocks), axis=1)  # (B,)
        masked = states == self.vocab_size
        return jnp.where(~possible[:, None, None] & masked[..., None], 1.0 / self.vocab_size, out)


@dataclass(frozen=True, eq=False)
class BlockLanguage:
    """q(x) = prod_j q_block(x_{jb : (j+1)b}): ``num_blocks`` i.i.d. blocks of a small joint ``block``.

    ``length = num_blocks * block.length``. A Language (:mod:`theory.language`) at any L: ``denoiser()``,
    ``log_prob``, ``entropy``, ``sample``, ``with_length``; ``joint()`` enumerates (small L only).
    """

    block: Joint
    num_blocks: int
    name: str = "block"

    def __post_init__(self):
        if not isinstance(self.block, Joint):
            raise TypeError(f"block must be a theory.joint.Joint, got {type(self.block).__name__}.")
        if (
            isinstance(self.num_blocks, bool)
            or not isinstance(self.num_blocks, (int, np.integer))
            or self.num_blocks < 1
        ):
            raise ValueError(f"num_blocks must be a positive int, got {self.num_blocks!r}.")
        object.__setattr__(self, "num_blocks", int(self.num_blocks))

    @property
    def vocab_size(self) -> int:
        return self.block.vocab_size

    @property
    def block_length(self) -> int:
        return self.block.length

    @property
    def length(self) -> int:
        return self.num_blocks * self.block.length

    def with_length(self, length: int) -> BlockLanguage:
        b = self.block.length
        if length % b:
            raise ValueError(f"length must be a multiple of the block length {b}, got {length}.")
        return BlockLanguage(self.block, length // b, self.name)

    def entropy(self) -> float:
        """H(q) in nats = num_blocks * H(block)."""
        return self.num_blocks * self.block.entropy()

    def joint(self, max_bytes: float | None = None) -> Joint:
        """Enumerate q over V**L (small L only)."""
        p = np.asarray(self.block.probs)
        out = np.ones(1)
        for _ in range(self.num_blocks):
            out = np.outer(out, p).reshape(-1)
        return Joint(out, self.vocab_size, self.length, max_bytes=max_bytes)

    def denoiser(self) -> BlockDenoiser:
        """The exact conditionals at any L: the block's exact denoiser block by block (built once)."""
        d = self.__dict__.get("_denoiser")
        if d is None:
            d = BlockDenoiser(self.block.denoiser(), self.num_blocks, self.vocab_size, self.length)
            object.__setattr__(self, "_denoiser", d)
        return d

    def sample(self, key, num: int) -> jax.Array:
        """``num`` exact samples (num, L): ``num_blocks`` i.i.d. blocks per sequence."""
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}.")
        return self.block.sample(key, int(num) * self.num_blocks).reshape(int(num), self.length)

    def _block_log_probs(self, tokens) -> np.ndarray:
        t = np.asarray(tokens, dtype=np.int64)
        if t.ndim != 2 or t.shape[1] != self.length:
            raise ValueError(f"tokens must have shape (num, {self.length}), got {t.shape}.")
        blocks = t.reshape(t.shape[0] * self.num_blocks, self.block_length)
        return np.asarray(self.block.log_prob(blocks)).reshape(t.shape[0], self.num_blocks)

    def log_prob(self, tokens) -> np.ndarray:
        """log q(x) for tokens (num, L) -> (num,); -inf outside the support."""
        return self._block_log_probs(tokens).sum(1)


def copy_pairs(length: int) -> BlockLanguage:
    """Feng2025-style worst case [ours]: L/2 blocks (a, a), a ~ uniform{0, 1}. ``length`` must be even."""
    _, L = check_vocab_length(2, length)
    if L % 2:
        raise ValueError(f"copy_pairs needs an even length (blocks of 2), got {L}.")
    block = Joint(np.array([0.5, 0.0, 0.0, 0.5]), 2, 2)  # q(00) = q(11) = 1/2
    return BlockLanguage(block, L // 2, "copy_pairs")


def noisy_copy_pairs(length: int, flip: float = 0.1) -> BlockLanguage:
    """Blocks (a, b): a ~ uniform{0, 1}, b = a w.p. 1 - flip, else 1 - a. Full support for 0 < flip < 1."""
    _, L = check_vocab_length(2, length)
    if L % 2:
        raise ValueError(f"noisy_copy_pairs needs an even length, got {L}.")
    if not 0 < flip < 1:
        raise ValueError(f"flip must be in (0, 1) (full support), got {flip}.")
    f = float(flip)
    block = Joint(np.array([(1 - f) / 2, f / 2, f / 2, (1 - f) / 2]), 2, 2)
    return BlockLanguage(block, L // 2, f"noisy_copy_pairs(flip={f:g})")


def additive_ngram(vocab_size: int, length: int) -> NGram:
    """Hard-constraint n-gram (order 3): (x_0, x_1) uniform on V**2, then x_i = (x_{i-1} + x_{i-2}) mod V.

    The joint is deterministic given the start (H(q) = 2 log V for every L) while single-token marginals
    are non-degenerate: Feng2025's SER worst-case shape (constraints across a window of n = 3 tokens).
    """
    V, L = check_vocab_length(vocab_size, length)
    if L < 3:
        raise ValueError(f"additive_ngram is an order-3 n-gram and needs length >= 3, got {L}.")
    a, b, c = np.meshgrid(np.arange(V), np.arange(V), np.arange(V), indexing="ij")
    cond = (c == (a + b) % V).astype(np.float64)  # (V, V, V)
    return NGram(np.full(V * V, 1.0 / (V * V)), cond, L)


def block_bernoulli_metrics(lang: BlockLanguage, steps: int, *, schedule=None) -> dict:
    """Exact log TER, log TER(q), TER gap and SER of the RandomOrder + Bernoulli sampler at any L.

    Uses the product structure (module docstring): one exact law on a single block. Returns a dict with
    ``log_ter`` (nats/token), ``log_ter_q`` (= H(q)/L), ``ter_gap``, ``ser``, ``block_ser``.
    """
    require_x64("block_bernoulli_metrics")
    law = exact_law(lang.block, RandomOrder(), steps, reveal="bernoulli", schedule=schedule)
    p = np.asarray(law.probs)
    bser = sequence_error_rate(p, lang.block)
    if bser > 0:
        lt = float("inf")
    else:
        lt = log_ter(p, lang.block)
    lq = lang.block.entropy() / lang.block_length
    return {
        "log_ter": lt,
        "log_ter_q": lq,
        "ter_gap": lt - lq,
        "block_ser": bser,
        "ser": float(-np.expm1(lang.num_blocks * np.log1p(-bser))) if bser < 1 else 1.0,
    }
