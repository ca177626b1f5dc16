"""Small learnable MDM denoisers in JAX (equinox + optax), pluggable wherever a Denoiser is accepted.

Two families, both *time-independent* (the MDM "subs" parameterisation: the clean-token posterior
given a partial state does not depend on t) and both predicting logits over the V clean tokens only
(never the mask):

* ``"transformer"`` — a small bidirectional (no causal mask) pre-LayerNorm transformer: a token
  embedding over V + 1 symbols (the extra one is the mask token, id V), a learned position
  embedding, ``num_layers`` blocks of multi-head self-attention + GELU MLP, a final LayerNorm and a
  linear head to V logits per position.
* ``"tabular"`` — one free logit vector per (partial state, position): parameters of shape
  ((V+1)**L, L, V), initialised at 0 (the uniform denoiser). It can represent the exact denoiser, so
  its only error is optimisation/estimation error. For tiny instances only.
* ``"lowrank"`` — the tabular model with a rank-r factorisation: logits[z] = U[z] @ W + b, with
  U ((V+1)**L, r), W (r, L*V), b (L*V,).

Networks are trained in float32 (see :mod:`synthetic.train`). A trained network is wrapped as a
:class:`LearnedDenoiser` — a frozen dataclass with ``vocab_size``, ``length`` and a JAX-traceable
``marginals(states (B, L) int) -> (B, L, V)`` float64 (softmax of the float32 logits computed in
float64, one-hot at visible positions: carry-over unmasking), so it plugs into
``theory.sampling.sample``, ``theory.sampling.exact_law(..., denoiser=)``, the policies and the
metrics exactly like ``theory.denoiser.joint.denoiser()``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from theory.states import strides
from theory.validation import check_size, check_vocab_length, require_x64

MODEL_KINDS = ("transformer", "tabular", "lowrank")
PARAM_DTYPE = jnp.float32  # training precision

#: Largest tabular parameter table (entries (V+1)**L * L * V) built without an explicit max_bytes.
TABULAR_MAX_BYTES = 2**30


# ================================ configuration =======================================================
@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network's structure (the parameters are stored separately).

    ``kind``: one of ``MODEL_KINDS``. Transformer sizes: ``d_model``, ``num_layers``, ``num_heads``,
    ``d_ff``; low-rank: ``rank``. The defaults are the toolkit's default small model (about 70k
    parameters for V = 8, L = 16), which trains (1000 steps of batch 128) in about a minute on 2 CPU
    cores (see benchmarks/train.py).
    """

    kind: str
    vocab_size: int
    length: int
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128
    rank: int = 16

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}.")
        check_vocab_length(self.vocab_size, self.length)
        for name in ("d_model", "num_layers", "num_heads", "d_ff", "rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {v!r}.")
        if self.kind == "transformer" and self.d_model % self.num_heads:
            raise ValueError(f"d_model = {self.d_model} must be divisible by num_heads = {self.num_heads}.")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        d = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)} in checkpoint.")
        return cls(**d)

    @property
    def num_states(self) -> int:
        return (self.vocab_size + 1) ** self.length


# ================================ networks ============================================================
class _SelfAttention(eqx.Module):
    """Multi-head self-attention over all positions (no causal mask, no dropout)."""

    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, d_model, num_heads, key):
        k1, k2 = jax.random.split(key)
        self.qkv = eqx.nn.Linear(d_model, 3 * d_model, dtype=PARAM_DTYPE, key=k1)
        self.out = eqx.nn.Linear(d_model, d_model, dtype=PARAM_DTYPE, key=k2)
        self.num_heads = num_heads

    def __call__(self, h):  # (L, d) -> (L, d)
        L, d = h.shape
        H = self.num_heads
        q, k, v = jnp.split(jax.vmap(self.qkv)(h).reshape(L, 3, H, d // H), 3, axis=1)  # each (L, 1, H, dh)
        q, k, v = q[:, 0], k[:, 0], v[:, 0]  # (L, H, dh)
        w = jax.nn.softmax(jnp.einsum("qhc,khc->hqk", q, k) / np.sqrt(d // H).astype(np.float32), axis=-1)
        return jax.vmap(self.out)(jnp.einsum("hqk,khc->qhc", w, v).reshape(L, d))


class _Block(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: _SelfAttention
    ln2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, d_model, num_heads, d_ff, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1 = eqx.nn.LayerNorm(d_model, dtype=PARAM_DTYPE)
        self.attn = _SelfAttention(d_model, num_heads, k1)
        self.ln2 = eqx.nn.LayerNorm(d_model, dtype=PARAM_DTYPE)
        self.fc1 = eqx.nn.Linear(d_model, d_ff, dtype=PARAM_DTYPE, key=k2)
        self.fc2 = eqx.nn.Linear(d_ff, d_model, dtype=PARAM_DTYPE, key=k3)

    def __call__(self, h):  # h: (L, d)
        a = jax.vmap(self.ln1)(h)
        h = h + self.attn(a)  # bidirectional: every position attends to every position
        a = jax.vmap(self.ln2)(h)
        return h + jax.vmap(self.fc2)(jax.nn.gelu(jax.vmap(self.fc1)(a)))


class TransformerNet(eqx.Module):
    """Bidirectional transformer: state (L,) ints in 0..V -> logits (L, V) over the clean tokens."""

    tok_embed: eqx.nn.Embedding
    pos_embed: jax.Array
    blocks: tuple
    ln_f: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, config: ModelConfig, key):
        V, L, d = config.vocab_size, config.length, config.d_model
        keys = jax.random.split(key, config.num_layers + 3)
        self.tok_embed = eqx.nn.Embedding(V + 1, d, dtype=PARAM_DTYPE, key=keys[0])  # V + 1: mask token V
        # unit-scale position embedding, like the token embedding: with a small (0.02) one the model is slow
        # to localise the nearest visible neighbours (eps_learning plateaued at 0.15 nats on an 8-token
        # Markov chain of length 16, against 0.013 with unit scale after 600 steps)
        self.pos_embed = jax.random.normal(keys[1], (L, d), dtype=PARAM_DTYPE)
        self.blocks = tuple(_Block(d, config.num_heads, config.d_ff, k) for k in keys[3:])
        self.ln_f = eqx.nn.LayerNorm(d, dtype=PARAM_DTYPE)
        self.head = eqx.nn.Linear(d, V, dtype=PARAM_DTYPE, key=keys[2])

    def __call__(self, state):
        h = jax.vmap(self.tok_embed)(state) + self.pos_embed  # (L, d)
        for blk in self.blocks:
            h = blk(h)
        return jax.vmap(self.head)(jax.vmap(self.ln_f)(h))  # (L, V)


class TabularNet(eqx.Module):
    """Free logits per (partial state, position): ``logits`` ((V+1)**L, L, V), zero-initialised (uniform)."""

    logits: jax.Array
    vocab_size: int = eqx.field(static=True)
    length: int = eqx.field(static=True)

    def __init__(self, config: ModelConfig, key=None):
        V, L = config.vocab_size, config.length
        self.logits = jnp.zeros((config.num_states, L, V), dtype=PARAM_DTYPE)
        self.vocab_size, self.length = V, L

    def __call__(self, state):
        idx = state.astype(jnp.int32) @ jnp.asarray(strides(self.vocab_size + 1, self.length), dtype=jnp.int32)
        return self.logits[idx]  # (L, V)


class LowRankNet(eqx.Module):
    """Rank-r tabular logits: U[z] @ W + b with U ((V+1)**L, r), W (r, L*V), b (L*V,)."""

    U: jax.Array
    W: jax.Array
    b: jax.Array
    vocab_size: int = eqx.field(static=True)
    length: int = eqx.field(static=True)

    def __init__(self, config: ModelConfig, key):
        V, L, r = config.vocab_size, config.length, config.rank
        k1, k2 = jax.random.split(key)
        self.U = jax.random.normal(k1, (config.num_states, r), dtype=PARAM_DTYPE) / float(np.sqrt(r))
        self.W = 0.01 * jax.random.normal(k2, (r, L * V), dtype=PARAM_DTYPE)
        self.b = jnp.zeros((L * V,), dtype=PARAM_DTYPE)
        self.vocab_size, self.length = V, L

    def __call__(self, state):
        idx = state.astype(jnp.int32) @ jnp.asarray(strides(self.vocab_size + 1, self.length), dtype=jnp.int32)
        return (self.U[idx] @ self.W + self.b).reshape(self.length, self.vocab_size)


def init_network(config: ModelConfig, key, max_bytes: float | None = None) -> eqx.Module:
    """Build a freshly initialised network for ``config`` (float32 parameters) from a PRNG key."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"init_network needs a ModelConfig, got {type(config).__name__}.")
    if config.kind in ("tabular", "lowrank"):
        width = config.length * config.vocab_size if config.kind == "tabular" else config.rank
        check_size(
            4 * config.num_states * width,
            f"A {config.kind} model over (V+1)**L = {config.vocab_size + 1}**{config.length} states",
            TABULAR_MAX_BYTES if max_bytes is None else max_bytes,
            "Use model='transformer' for larger instances",
        )
    if config.kind == "transformer":
        return TransformerNet(config, key)
    if config.kind == "tabular":
        return TabularNet(config, key)
    return LowRankNet(config, key)


def num_parameters(net) -> int:
    """Number of trainable scalars in a network."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))))


def network_logits(net, states):
    """Batched float32 logits (B, L, V) of a network on int states (B, L)."""
    return jax.vmap(net)(states.astype(jnp.int32))


# ================================ the Denoiser wrapper ================================================
def _check_states_static(states, vocab_size: int, length: int):
    """Checks that work on traced arrays (shape, dtype) and, for concrete arrays, on the value range."""
    shape = np.shape(states)
    if len(shape) != 2 or shape[1] != length:
        raise ValueError(
            f"states must have shape (B, L) = (B, {length}) for this denoiser (length {length}); got {shape}. "
            f"A learned denoiser is trained for one length: train another for length {shape[-1] if shape else '?'}."
        )
    dt = np.dtype(states.dtype)
    if dt.kind not in "iu":
        raise TypeError(f"states must be integers in 0..{vocab_size} (mask = {vocab_size}), got dtype {dt}.")
    if not isinstance(states, jax.core.Tracer):
        arr = np.asarray(states)
        if arr.size and (arr.min() < 0 or arr.max() > vocab_size):
            raise ValueError(
                f"states must have entries in 0..{vocab_size} (vocab_size {vocab_size}, mask = {vocab_size}); "
                f"got range [{arr.min()}, {arr.max()}]. Is this denoiser trained for another vocabulary?"
            )


@partial(jax.jit, static_argnums=(2,))
def _marginals_impl(net, states, vocab_size):
    logits = network_logits(net, states).astype(jnp.float64)  # (B, L, V): float32 net, float64 softmax
    probs = jax.nn.softmax(logits, axis=-1)
    masked = states == vocab_size
    onehot = jax.nn.one_hot(jnp.where(masked, 0, states), vocab_size, dtype=jnp.float64)
    return jnp.where(masked[..., None], probs, onehot)


@dataclass(frozen=True, eq=False)
class LearnedDenoiser:
    """A trained network as a core Denoiser (see theory/denoiser.py for the protocol).

    ``marginals(states (B, L) int) -> (B, L, V)`` float64, one-hot at visible positions; JAX-traceable.
    Needs JAX's 64-bit mode (raises TypeError otherwise). ``net`` holds float32 parameters;
    ``config`` rebuilds its structure (used by checkpoints).
    """

    net: eqx.Module
    config: ModelConfig
    vocab_size: int
    length: int

    def __init__(self, net, config: ModelConfig):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"LearnedDenoiser needs a ModelConfig, got {type(config).__name__}.")
        if not isinstance(net, eqx.Module):
            raise TypeError(f"LearnedDenoiser needs an equinox network, got {type(net).__name__}.")
        object.__setattr__(self, "net", net)
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "vocab_size", int(config.vocab_size))
        object.__setattr__(self, "length", int(config.length))

    def logits(self, states) -> jax.Array:
        """Raw float32 logits (B, L, V) over the clean tokens (no carry-over)."""
        states = jnp.asarray(states) if not isinstance(states, jax.core.Tracer) else states
        _check_states_static(states, self.vocab_size, self.length)
        return network_logits(self.net, states)

    def marginals(self, states) -> jax.Array:
        """(B, L) partial states -> (B, L, V) float64 conditionals (one-hot at visible positions)."""
        require_x64("LearnedDenoiser.marginals")
        states = jnp.asarray(states) if not isinstance(states, jax.core.Tracer) else states
        _check_states_static(states, self.vocab_size, self.length)
        return _marginals_impl(self.net, states, self.vocab_size)

    @property
    def num_parameters(self) -> int:
        return num_parameters(self.net)

    def __repr__(self) -> str:
        return (
            f"LearnedDenoiser({self.config.kind}, V={self.vocab_size}, L={self.length}, {self.num_parameters} params)"
        )


def init_denoiser(kind: str, vocab_size: int, length: int, *, key, max_bytes=None, **sizes) -> LearnedDenoiser:
    """An untrained :class:`LearnedDenoiser` of the given kind and sizes (``d_model``, ``num_layers``, ...)."""
    config = ModelConfig(kind, vocab_size, length, **sizes)
    return LearnedDenoiser(init_network(config, key, max_bytes), config)
