"""Yang2025: any-process generation (AP-MDM) — remask, insert and delete on variable-length sequences.

An AP-MDM step (Yang2025, Sec. "Any-process generation" [paper code]) reads the current sequence
z = (z_0 .. z_{L-1}) over {0..V-1} ∪ {M} (M = V, the mask token; L varies) and gives, per position i,
a token prediction y_i in {0..V} (y_i = M: "stay masked") and three control bits
(remask r_i, insert s_i, delete d_i). The next sequence is built position by position, with the
priorities fixed by the paper:

* **delete only a mask**: if z_i = M and d_i, position i disappears (its insert bit is dropped too);
  ``delete`` on a clean token is ignored (the bit refers to the *input* state: a clean token with
  delete and remask set becomes M and stays);
* otherwise the output token is  M if r_i  (remask overrides unmask),  else y_i if z_i = M (unmask;
  y_i = M keeps the mask),  else z_i (keep: a clean token is never rewritten directly — rewriting is
  remask, then unmask at a later step);
* **insert** appends a new M right after the position's output.

So the new length is L - #{i: z_i = M, d_i} + #{i: s_i, not (z_i = M and d_i)} (:func:`apply_transition`,
and its padded JAX twin :func:`transition_padded`).

**Controllers.** The model is a *controller* with two faces that describe the same step law:

* ``branches(states (K, L) int, n) -> (parent (R,), weights (R,), token_probs (R, L, V+1), bit_probs (R, L, 3))``
  (numpy, exact): from state ``parent[r]`` the step is, with probability ``weights[r]``, the *product*
  law where y_i ~ token_probs[r, i] and each bit ~ Bernoulli(bit_probs[r, i, b]) independently (bit order
  :data:`REMASK`, :data:`INSERT`, :data:`DELETE`). A mixture of products covers both the AP-MDM model
  (one product) and MDM policies that reveal a random subset of a fixed size (one product per subset).
  Predictions and bits at positions where the rule ignores them (a clean token's prediction, the
  delete bit of a clean token) may hold anything.
* ``step(keys (B,), tokens (B, Lmax) int32, lengths (B,), n) -> (token_probs (B, Lmax, V+1), bit_probs (B, Lmax, 3))``
  (JAX, traceable): the same law for a padded batch (positions >= length hold :data:`PAD`), the mixture
  component drawn with the per-sample key.
  ``n`` is the step index (0, 1, ...), traced.

Controllers are frozen dataclasses with ``vocab_size``; registered pytrees whose leaves are all arrays
(:func:`theory.pytree.traceable`) are passed to ``jit`` as traced arguments (one compilation serves every
controller of the same structure), others as static arguments (hashed by identity).

**Generation** from an initial sequence, at most ``max_steps`` steps (the budget), stops when

1. the sequence contains ``eos`` (if given), or, with ``stop_when_clean=True``, has no mask left
   (the plain MDM convention) — checked before every step, including the first;
2. a step leaves a **mask-free** sequence unchanged (a fixed point: the model's "done"; that step is a
   model call but not an NFE). A step that changes nothing on a sequence with masks does not stop the
   run (e.g. a Bernoulli step that reveals nothing);
3. the budget is spent: the sequence is returned as it is and counted as ``unfinished``.

**NFE** counts the steps that change the sequence, as :mod:`theory.sampling` counts the steps that
reveal at least one token (a step that changes nothing needs no denoiser output); ``calls`` counts every
step run. With remasking, insertion and deletion switched off (:class:`MDMController`), AP-MDM is the
plain MDM sampler: same law, same expected NFE (tests/test_anyprocess.py checks this against
:func:`theory.sampling.exact_law`).

**Engines.** :func:`exact_law` propagates the distribution over sequences (a dict keyed by tuples,
lengths up to ``max_length``; for tiny instances, or deterministic controllers at any size: a row whose
every outcome has probability 1 takes a vectorised path). :func:`sample` is the jitted Monte-Carlo
sampler on sequences padded to ``max_length``. A sequence that would grow beyond ``max_length`` is an
error in both (ValueError), never a silent truncation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .denoiser import check_denoiser
from .policies import RandomOrder, check_policy
from .pytree import register_dataclass, traceable
from .sampling import batched_marginals, binomial_inverse_cdf, binomial_reveal_rows, inverse_cdf, make_plan
from .schedules import Schedule
from .validation import require_x64

REMASK, INSERT, DELETE = 0, 1, 2
BITS = ("remask", "insert", "delete")
#: Padding value of positions beyond a sequence's length (Monte-Carlo arrays).
PAD = -1
_TOL = 1e-9


# ================================ the transition rule ================================================
def _as_int_vector(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one entry per position), got shape {a.shape}.")
    if a.size and a.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}.")
    return a.astype(np.int64)


def check_controls(tokens, predictions, bits, vocab_size: int):
    """Validate one step's inputs: tokens (L,) in 0..V, predictions (L,) in 0..V, bits (L, 3) in {0, 1}.

    Returns them as numpy (int64, int64, bool). Raises ValueError with the expected shapes otherwise.
    """
    V = int(vocab_size)
    z = _as_int_vector(tokens, "tokens")
    L = z.size
    y = _as_int_vector(predictions, "predictions")
    b = np.asarray(bits)
    if y.shape != (L,):
        raise ValueError(f"predictions must have shape (L,) = ({L},) like tokens, got {y.shape}.")
    if b.shape != (L, 3):
        raise ValueError(
            f"bits must have shape (L, 3) = ({L}, 3): one (remask, insert, delete) triple per position, got {b.shape}."
        )
    if L and (z.min() < 0 or z.max() > V):
        raise ValueError(f"tokens must lie in 0..V = 0..{V} (V is the mask), got {z.min()}..{z.max()}.")
    if L and (y.min() < 0 or y.max() > V):
        raise ValueError(f"predictions must lie in 0..V = 0..{V} (V = stay masked), got {y.min()}..{y.max()}.")
    if b.size and not np.isin(b, (0, 1)).all():
        raise ValueError("bits must be 0/1 (or bool).")
    return z, y, b.astype(bool)


def apply_transition(tokens, predictions, bits, vocab_size: int) -> np.ndarray:
    """The AP-MDM transition of one sequence (numpy): returns the next sequence (L',) int64.

    tokens (L,) in 0..V (V = mask), predictions (L,) in 0..V, bits (L, 3) = (remask, insert, delete).
    Rule (module docstring): a mask with delete disappears (insert dropped); else the output is M if
    remask, the prediction if the input is a mask, the input token otherwise; insert appends M after it.
    """
    V = int(vocab_size)
    z, y, b = check_controls(tokens, predictions, bits, V)
    masked = z == V
    deleted = masked & b[:, DELETE]
    out = np.where(b[:, REMASK], V, np.where(masked, y, z))
    keep = ~deleted
    add = keep & b[:, INSERT]
    emit = keep.astype(np.int64) + add
    start = np.cumsum(emit) - emit
    new = np.empty(int(emit.sum()), dtype=np.int64)
    new[start[keep]] = out[keep]
    new[start[add] + 1] = V
    return new


def transition_padded(tokens, length, predictions, bits, vocab_size: int):
    """JAX twin of :func:`apply_transition` for one padded sequence (traceable, vmap it for a batch).

    tokens (Lmax,) int (positions >= length are ignored), length (), predictions (Lmax,), bits (Lmax, 3)
    bool. Returns (new_tokens (Lmax,) with :data:`PAD` beyond the new length, new_length (), overflow ()
    = the new length exceeds Lmax; the tokens beyond Lmax are then dropped).
    """
    V = int(vocab_size)
    Lmax = tokens.shape[-1]
    live = jnp.arange(Lmax) < length
    masked = tokens == V
    deleted = live & masked & bits[:, DELETE]
    out = jnp.where(bits[:, REMASK], V, jnp.where(masked, predictions, tokens)).astype(jnp.int32)
    keep = live & ~deleted
    add = keep & bits[:, INSERT]
    emit = keep.astype(jnp.int32) + add.astype(jnp.int32)
    start = jnp.cumsum(emit) - emit
    new_len = jnp.sum(emit)
    new = jnp.full((Lmax,), PAD, jnp.int32)
    new = new.at[jnp.where(keep, start, Lmax)].set(out, mode="drop")
    new = new.at[jnp.where(add, start + 1, Lmax)].set(jnp.int32(V), mode="drop")
    return new, new_len.astype(jnp.int32), new_len > Lmax


# ================================ exact law ==========================================================
@dataclass(frozen=True)
class AnyLaw:
    """Exact law of the generated sequence.

    ``probs``: {sequence tuple: probability} (sequences may hold masks if the budget ran out);
    ``expected_nfe``: E[# steps that changed the sequence]; ``expected_calls``: E[# steps run];
    ``unfinished``: P(budget spent before a stop); ``steps_run``: steps of the longest path.
    """

    probs: dict
    vocab_size: int
    expected_nfe: float
    expected_calls: float
    unfinished: float
    steps_run: int

    def support(self, tol: float = 0.0) -> set:
        """Sequences with probability > tol."""
        return {s for s, p in self.probs.items() if p > tol}

    def lengths(self) -> dict:
        """{length: probability}."""
        out: dict = {}
        for s, p in self.probs.items():
            out[len(s)] = out.get(len(s), 0.0) + p
        return out

    def table(self, length: int) -> np.ndarray:
        """The law as a table over V**length (row-major), for laws on clean sequences of one length.

        Raises ValueError if any mass sits on another length or on a sequence with masks.
        """
        V, L = self.vocab_size, int(length)
        out = np.zeros(V**L)
        w = V ** np.arange(L - 1, -1, -1, dtype=np.int64)
        for s, p in self.probs.items():
            if len(s) != L or any(t >= V for t in s):
                if p > 0:
                    raise ValueError(
                        f"the law puts mass {p:.3g} on {s}, not a clean sequence of length {L}; use .probs."
                    )
                continue
            out[int(np.dot(s, w))] += p
        return out


def _check_init(init, vocab_size: int, max_length: int, name: str = "init") -> tuple:
    z = _as_int_vector(init, name)
    if z.size and (z.min() < 0 or z.max() > vocab_size):
        raise ValueError(f"{name} tokens must lie in 0..V = 0..{vocab_size} (V is the mask).")
    if z.size > max_length:
        raise ValueError(f"{name} has length {z.size} > max_length = {max_length}; raise max_length.")
    return tuple(int(t) for t in z)


def _check_budget(max_steps, max_length):
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise TypeError(f"max_steps (the step budget) must be an int >= 1, got {type(max_steps).__name__}.")
    if max_steps < 1:
        raise ValueError(f"max_steps (the step budget) must be >= 1, got {max_steps}.")
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError(f"max_length must be a positive int (the longest sequence allowed), got {max_length!r}.")
    return int(max_steps), int(max_length)


def _stops(seq: tuple, V: int, stop_when_clean: bool, eos) -> bool:
    if eos is not None and eos in seq:
        return True
    return bool(stop_when_clean) and V not in seq


def _check_branches(out, states: np.ndarray, V: int, who: str):
    """Validate a controller's ``branches`` output for K states of length L."""
    if not isinstance(out, tuple) or len(out) != 4:
        raise TypeError(f"{who}.branches must return (parent, weights, token_probs, bit_probs).")
    parent, weights, tp, bp = (np.asarray(a) for a in out)
    K, L = states.shape
    R = parent.shape[0] if parent.ndim == 1 else -1
    if parent.ndim != 1 or weights.shape != (R,):
        raise ValueError(f"{who}.branches: parent and weights must be 1-D of one length, got {parent.shape}, "
                         f"{weights.shape}.")  # fmt: skip
    if tp.shape != (R, L, V + 1):
        raise ValueError(f"{who}.branches: token_probs must have shape (R, L, V+1) = {(R, L, V + 1)}, got {tp.shape}.")
    if bp.shape != (R, L, 3):
        raise ValueError(f"{who}.branches: bit_probs must have shape (R, L, 3) = {(R, L, 3)}, got {bp.shape}.")
    if R and (parent.min() < 0 or parent.max() >= K):
        raise ValueError(f"{who}.branches: parent indices must lie in 0..K-1 = 0..{K - 1}.")
    if np.any(weights < 0) or np.any(tp < 0) or np.any(bp < 0) or np.any(bp > 1):
        raise ValueError(f"{who}.branches: weights, token_probs and bit_probs must be probabilities.")
    tot = np.bincount(parent, weights=weights, minlength=K)
    if np.any(np.abs(tot - 1.0) > _TOL):
        raise ValueError(
            f"{who}.branches: the weights of each state must sum to 1 (got {tot.min():.6g}..{tot.max():.6g})."
        )
    if L and np.any(np.abs(tp.sum(-1) - 1.0) > _TOL):
        raise ValueError(f"{who}.branches: every token_probs row must sum to 1 over the V+1 predictions.")
    return parent.astype(np.int64), weights.astype(np.float64), tp.astype(np.float64), bp.astype(np.float64)


def _outcomes(z: int, tp: np.ndarray, bp: np.ndarray, V: int) -> list:
    """[(emitted tokens tuple, probability)] of one position (the rule, as a distribution)."""
    r, s, d = float(bp[REMASK]), float(bp[INSERT]), float(bp[DELETE])
    res: dict = {}
    if z == V:
        if d > 0:
            res[()] = d
        keep = 1.0 - d
        dist = {V: r + (1.0 - r) * float(tp[V])}
        for v in range(V):
            dist[v] = (1.0 - r) * float(tp[v])
    else:
        keep = 1.0
        dist = {V: r, z: 1.0 - r}
    for o, po in dist.items():
        pk = keep * po
        if pk <= 0:
            continue
        if s < 1:
            res[(o,)] = res.get((o,), 0.0) + pk * (1.0 - s)
        if s > 0:
            res[(o, V)] = res.get((o, V), 0.0) + pk * s
    return list(res.items())


def _deterministic(z: np.ndarray, tp: np.ndarray, bp: np.ndarray, V: int):
    """If every position of a row has one outcome with probability 1, its (predictions, bits); else None."""
    if not np.all((bp == 0) | (bp == 1)):
        return None
    masked = z == V
    needs_token = masked & (bp[:, DELETE] == 0) & (bp[:, REMASK] == 0)
    if not np.all(tp[needs_token].max(-1) == 1.0):
        return None
    return tp.argmax(-1), bp == 1


def _row_children(z: np.ndarray, tp: np.ndarray, bp: np.ndarray, V: int) -> list:
    """[(next sequence tuple, probability)] of one product-law row."""
    det = _deterministic(z, tp, bp, V)
    if det is not None:
        return [(tuple(int(t) for t in apply_transition(z, det[0], det[1], V)), 1.0)]
    per = [_outcomes(int(z[i]), tp[i], bp[i], V) for i in range(z.size)]
    out: dict = {}
    for combo in itertools.product(*per):
        p = 1.0
        seq: tuple = ()
        for emitted, q in combo:
            p *= q
            seq += emitted
        if p > 0:
            out[seq] = out.get(seq, 0.0) + p
    return list(out.items())


def exact_law(
    controller,
    init,
    *,
    max_steps: int,
    max_length: int,
    stop_when_clean: bool = False,
    eos: int | None = None,
    max_states: int = 1_000_000,
) -> AnyLaw:
    """Exact law of AP-MDM generation from ``init`` (a sequence over 0..V) with ``controller``.

    Propagates {sequence: probability} step by step (stopping rules and NFE in the module docstring).
    Raises ValueError if a reachable sequence is longer than ``max_length`` or the frontier exceeds
    ``max_states`` sequences (use :func:`sample`, the Monte-Carlo engine, for larger instances).
    """
    require_x64("anyprocess.exact_law")
    V = int(controller.vocab_size)
    max_steps, max_length = _check_budget(max_steps, max_length)
    start = _check_init(init, V, max_length)
    who = type(controller).__name__
    final: dict = {}
    frontier: dict = {}
    (final if _stops(start, V, stop_when_clean, eos) else frontier)[start] = 1.0
    nfe = calls = 0.0
    n = 0
    while frontier and n < max_steps:
        calls += sum(frontier.values())
        new: dict = {}
        by_len: dict = {}
        for s in frontier:
            by_len.setdefault(len(s), []).append(s)
        for L, seqs in sorted(by_len.items()):
            states = np.array(seqs, dtype=np.int64).reshape(len(seqs), L)
            parent, weights, tp, bp = _check_branches(controller.branches(states, n), states, V, who)
            for r in range(parent.size):
                w = weights[r]
                if w <= 0:
                    continue
                s = seqs[parent[r]]
                mass0 = frontier[s] * w
                fixed_ok = V not in s
                for child, c in _row_children(states[parent[r]], tp[r], bp[r], V):
                    mass = mass0 * c
                    if len(child) > max_length:
                        raise ValueError(
                            f"step {n} reaches a sequence of length {len(child)} > max_length = {max_length} "
                            f"(from {s}); raise max_length or bound the controller's insertions."
                        )
                    if child == s:
                        if fixed_ok:  # a mask-free fixed point: the run stops here
                            final[s] = final.get(s, 0.0) + mass
                            continue
                    else:
                        nfe += mass
                    if _stops(child, V, stop_when_clean, eos):
                        final[child] = final.get(child, 0.0) + mass
                    else:
                        new[child] = new.get(child, 0.0) + mass
        if len(new) > max_states:
            raise ValueError(
                f"the exact law's frontier holds {len(new)} sequences at step {n + 1} (> max_states = {max_states}); "
                "use theory.anyprocess.sample (Monte Carlo) or pass a larger max_states."
            )
        frontier = new
        n += 1
    unfinished = float(sum(frontier.values()))
    for s, p in frontier.items():
        final[s] = final.get(s, 0.0) + p
    return AnyLaw(final, V, float(nfe), float(calls), unfinished, n)


# ================================ Monte Carlo ========================================================
@dataclass(frozen=True)
class AnySamples:
    """Monte-Carlo samples: ``tokens`` (num, max_length) with :data:`PAD` beyond ``lengths`` (num,);
    ``nfe`` (num,) steps that changed the sequence; ``calls`` (num,) steps run; ``finished`` (num,) False
    where the budget ran out first."""

    tokens: np.ndarray
    lengths: np.ndarray
    nfe: np.ndarray
    calls: np.ndarray
    finished: np.ndarray

    def sequences(self) -> list:
        """The samples as tuples (variable length)."""
        return [tuple(int(t) for t in row[:n]) for row, n in zip(self.tokens, self.lengths)]


def _stopped_batch(tokens, lengths, V: int, stop_when_clean: bool, eos):
    live = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    out = jnp.zeros(tokens.shape[0], bool)
    if eos is not None:
        out = out | jnp.any(live & (tokens == eos), axis=1)
    if stop_when_clean:
        out = out | ~jnp.any(live & (tokens == V), axis=1)
    return out


def _run(keys, tokens, lengths, max_steps, controller, V, stop_when_clean, eos):
    B, Lmax = tokens.shape
    live0 = jnp.arange(Lmax)[None, :] < lengths[:, None]

    def cond(c):
        n, _, _, done, *_ = c
        return (n < max_steps) & ~jnp.all(done)

    def body(c):
        n, toks, lens, done, nfe, calls, over = c
        skeys = jax.vmap(lambda k: jax.random.fold_in(k, n))(keys)
        ckeys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(skeys)
        tkeys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(skeys)
        bkeys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(skeys)
        tp, bp = controller.step(ckeys, toks, lens, n)
        if tp.shape != (B, Lmax, V + 1) or bp.shape != (B, Lmax, 3):
            raise ValueError(
                f"{type(controller).__name__}.step must return token_probs (B, Lmax, V+1) = {(B, Lmax, V + 1)} and "
                f"bit_probs (B, Lmax, 3) = {(B, Lmax, 3)}, got {tp.shape} and {bp.shape}."
            )
        u = jax.vmap(lambda k: jax.random.uniform(k, (Lmax,), dtype=jnp.float64))(tkeys)
        pred = inverse_cdf(tp, u).astype(jnp.int32)
        ub = jax.vmap(lambda k: jax.random.uniform(k, (Lmax, 3), dtype=jnp.float64))(bkeys)
        bits = ub < bp
        new, new_len, ov = jax.vmap(lambda t, ln, y, b: transition_padded(t, ln, y, b, V))(toks, lens, pred, bits)
        live = jnp.arange(Lmax)[None, :] < lens[:, None]
        changed = (new_len != lens) | jnp.any(new != jnp.where(live, toks, PAD), axis=1)
        had_mask = jnp.any(live & (toks == V), axis=1)
        active = ~done
        upd = active & changed & ~ov
        toks = jnp.where(upd[:, None], new, toks)
        lens = jnp.where(upd, new_len, lens)
        fixed = ~changed & ~had_mask
        stop = fixed | _stopped_batch(toks, lens, V, stop_when_clean, eos) | ov
        return (
            n + 1,
            toks,
            lens,
            done | (active & stop),
            nfe + (active & changed).astype(jnp.int32),
            calls + active.astype(jnp.int32),
            over | (active & ov),
        )

    toks0 = jnp.where(live0, tokens, PAD).astype(jnp.int32)
    done0 = _stopped_batch(toks0, lengths, V, stop_when_clean, eos)
    zeros = jnp.zeros(B, jnp.int32)
    init = (jnp.int32(0), toks0, lengths.astype(jnp.int32), done0, zeros, zeros, jnp.zeros(B, bool))
    _, toks, lens, done, nfe, calls, over = jax.lax.while_loop(cond, body, init)
    return toks, lens, done, nfe, calls, over


_JITTED: dict = {}


def _jitted(controller_traced: bool):
    if controller_traced not in _JITTED:
        static = ("V", "stop_when_clean", "eos") + (() if controller_traced else ("controller",))
        _JITTED[controller_traced] = jax.jit(_run, static_argnames=static)
    return _JITTED[controller_traced]


def _init_batch(init, num: int, V: int, max_length: int):
    """init: one sequence (L0,), a batch (num, L0), or a list of num sequences -> padded (num, Lmax), lengths."""
    if isinstance(init, (list, tuple)) and len(init) and isinstance(init[0], (list, tuple, np.ndarray)):
        seqs = [_check_init(s, V, max_length, "init[i]") for s in init]
    else:
        a = np.asarray(init)
        if a.ndim == 2:
            seqs = [_check_init(row, V, max_length, "init[i]") for row in a]
        else:
            seqs = [_check_init(a, V, max_length)] * num
    if len(seqs) != num:
        raise ValueError(f"init holds {len(seqs)} sequences but num = {num}; pass one sequence or num of them.")
    toks = np.full((num, max_length), PAD, np.int32)
    lens = np.zeros(num, np.int32)
    for i, s in enumerate(seqs):
        toks[i, : len(s)] = s
        lens[i] = len(s)
    return toks, lens


def sample(
    key,
    controller,
    init,
    *,
    num: int,
    max_steps: int,
    max_length: int,
    stop_when_clean: bool = False,
    eos: int | None = None,
    batch_size: int | None = None,
) -> AnySamples:
    """Draw ``num`` AP-MDM generations (jit + vmap, float64, sequences padded to ``max_length``).

    ``init``: one sequence (every sample starts from it), an array (num, L0), or a list of ``num``
    sequences of any lengths. Key schedule: sample i uses ``fold_in(key, i)``, step n ``fold_in(., n)``
    (so samples do not depend on ``batch_size``). Raises ValueError if any sample grows beyond
    ``max_length``.
    """
    require_x64("anyprocess.sample")
    V = int(controller.vocab_size)
    max_steps, max_length = _check_budget(max_steps, max_length)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    toks, lens = _init_batch(init, int(num), V, max_length)
    bs = int(num) if batch_size is None else min(int(batch_size), int(num))
    bs = max(8, 1 << (bs - 1).bit_length())  # padded to a power of two: few compiled shapes
    run = _jitted(traceable(controller))
    outs = []
    for a in range(0, num, bs):
        idx = np.arange(a, a + bs)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(idx))
        t = np.full((bs, max_length), PAD, np.int32)
        ln = np.zeros(bs, np.int32)
        m = min(bs, num - a)
        t[:m], ln[:m] = toks[a : a + m], lens[a : a + m]
        t[m:], ln[m:] = toks[a], lens[a]  # padding rows repeat a real start (dropped below)
        res = run(
            keys, jnp.asarray(t), jnp.asarray(ln), jnp.int32(max_steps),
            controller=controller, V=V, stop_when_clean=bool(stop_when_clean), eos=eos,
        )  # fmt: skip
        outs.append([np.asarray(x)[:m] for x in res])
    tk, ln, done, nfe, calls, over = (np.concatenate(c) for c in zip(*outs))
    if over.any():
        raise ValueError(
            f"{int(over.sum())} sample(s) grew beyond max_length = {max_length}; raise max_length or bound the "
            "controller's insertions."
        )
    return AnySamples(tk, ln, nfe, calls, done)


# ================================ controllers =========================================================
def _mask_onehot(shape, V: int) -> np.ndarray:
    tp = np.zeros(shape + (V + 1,))
    tp[..., V] = 1.0
    return tp


@register_dataclass(data_fields=("token_table", "bit_table"))
@dataclass(frozen=True, eq=False)
class TableController:
    """A tiny random AP-MDM: each position's prediction and bits depend on (left neighbour, own token).

    ``token_table`` (V+2, V+1, V+1) and ``bit_table`` (V+2, V+1, 3), indexed by [left, own]; left = V+1
    at position 0 (no neighbour). Used to test the engines on instances where every rule fires.
    """

    token_table: jax.Array
    bit_table: jax.Array
    vocab_size: int

    def _index(self, states):
        V = self.vocab_size
        own = np.clip(states, 0, V)
        left = np.concatenate([np.full(states.shape[:-1] + (1,), V + 1), own[..., :-1]], axis=-1)
        return left, own

    def branches(self, states, n):
        states = np.asarray(states)
        K = states.shape[0]
        left, own = self._index(states)
        tt, bt = np.asarray(self.token_table), np.asarray(self.bit_table)
        return np.arange(K), np.ones(K), tt[left, own], bt[left, own]

    def step(self, keys, tokens, lengths, n):
        V = self.vocab_size
        own = jnp.clip(tokens, 0, V)
        left = jnp.concatenate([jnp.full((tokens.shape[0], 1), V + 1, own.dtype), own[:, :-1]], axis=1)
        return self.token_table[left, own], self.bit_table[left, own]


def random_table_controller(seed: int, vocab_size: int, *, remask: float = 0.3, insert: float = 0.2,
                            delete: float = 0.3, keep_masked: float = 0.3) -> TableController:  # fmt: skip
    """A random :class:`TableController` (numpy ``seed``): bit probabilities uniform in [0, 2 x the given
    rate] (clipped to [0, 1]) and token predictions Dirichlet(1) with extra mass ``keep_masked`` on M."""
    V = int(vocab_size)
    rng = np.random.default_rng(seed)
    tt = rng.dirichlet(np.ones(V + 1), size=(V + 2, V + 1))
    tt[..., V] += keep_masked
    tt /= tt.sum(-1, keepdims=True)
    rates = np.array([remask, insert, delete])
    bt = np.clip(rng.uniform(0, 2, size=(V + 2, V + 1, 3)) * rates, 0.0, 1.0)
    return TableController(jnp.asarray(tt), jnp.asarray(bt), V)


@register_dataclass(data_fields=("denoiser", "policy", "plan_values", "num_steps"))
@dataclass(frozen=True, eq=False)
class MDMController:
    """Plain MDM sampling as an AP-MDM controller: remask, insert and delete are never set.

    At step n the ``policy`` picks the masked positions to reveal (count from the plan: fixed k_n,
    Binomial(#masked, p_n), or the policy's own for adaptive ones — :func:`theory.sampling.make_plan`)
    and their predictions are the ``denoiser``'s conditionals; every other mask predicts M (stays
    masked). Run with ``stop_when_clean=True`` and ``max_steps = num_steps`` it is the sampler of
    :mod:`theory.sampling`. Build with :func:`mdm_controller`.
    """

    denoiser: Any
    policy: Any
    plan_values: jax.Array
    mode: str
    num_steps: int
    vocab_size: int
    length: int

    def _value(self, n):
        v = np.asarray(self.plan_values)
        return float(v[n]) if n < v.size else 0.0

    def reveal_rows(self, states: np.ndarray, marg: np.ndarray, n: int):
        """(parent, subsets, weights) of step n: the policy's reveal sets (exact)."""
        V = self.vocab_size
        K = states.shape[0]
        k = (states == V).sum(1)
        if self.mode == "fixed":
            c = np.minimum(int(round(self._value(n))), k)
            return self.policy.reveal_distribution(states, marg, c)
        if self.mode == "adaptive":
            return self.policy.reveal_distribution(states, marg, np.zeros(K, dtype=np.int64))
        return binomial_reveal_rows(self.policy, states, marg, k, self._value(n))

    def branches(self, states, n):
        states = np.asarray(states)
        V = self.vocab_size
        marg = batched_marginals(self.denoiser, states)  # (K, L, V)
        parent, subsets, weights = self.reveal_rows(states, marg, n)
        subsets = np.asarray(subsets, bool) & (states[parent] == V)
        tp = _mask_onehot(subsets.shape, V)  # (R, L, V+1)
        m = marg[parent]
        tp[subsets] = np.concatenate([m[subsets], np.zeros((int(subsets.sum()), 1))], axis=-1)
        return parent, weights, tp, np.zeros(subsets.shape + (3,))

    def step(self, keys, tokens, lengths, n):
        V, L = self.vocab_size, self.length
        marg = self.denoiser.marginals(tokens)  # (B, L, V)
        masked = tokens == V
        left = masked.sum(1).astype(jnp.int32)
        P = self.plan_values.shape[0]
        val = jnp.where(n < P, self.plan_values[jnp.minimum(n, P - 1)], 0.0)
        if self.mode == "fixed":
            count = jnp.minimum(jnp.round(val).astype(jnp.int32), left)
        elif self.mode == "bernoulli":
            ukeys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            u = jax.vmap(lambda k: jax.random.uniform(k, dtype=jnp.float64))(ukeys)
            count = jax.vmap(lambda uu, lf: binomial_inverse_cdf(uu, lf, val, L))(u, left)
        else:
            count = jnp.zeros_like(left)
        skeys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
        reveal = jax.vmap(self.policy.select)(skeys, tokens, marg, count) & masked  # (B, L)
        full = jnp.concatenate([marg, jnp.zeros(marg.shape[:-1] + (1,))], axis=-1)
        tp = jnp.where(reveal[..., None], full, jax.nn.one_hot(V, V + 1, dtype=jnp.float64))
        return tp, jnp.zeros(tokens.shape + (3,))


def mdm_controller(
    denoiser, policy=None, steps=None, *, reveal: str = "fixed", schedule: Schedule | None = None, counts=None
) -> MDMController:
    """Plain MDM (``theory.sampling``'s process) as an AP-MDM controller; same arguments as ``exact_law``."""
    check_denoiser(denoiser)
    policy = RandomOrder() if policy is None else policy
    check_policy(policy)
    plan = make_plan(policy, denoiser.length, steps, reveal=reveal, schedule=schedule, counts=counts)
    vals = np.zeros(max(8, 1 << (max(plan.values.size, 1) - 1).bit_length()))  # padded: few compiled shapes
    vals[: plan.values.size] = plan.values  # steps beyond the plan reveal nothing
    return MDMController(
        denoiser, policy, jnp.asarray(vals), plan.mode, int(plan.max_steps), denoiser.vocab_size, denoiser.length
    )
