"""Training small MDM denoisers: the optimisation loop, its defaults, and checkpoints.

The loss (MDLM/MD4's ELBO estimator with pluggable t- and mask-samplers and per-position schedules), the
exact and Monte-Carlo ELBO and Feng2025's eps_learning are theory and live in :mod:`theory.elbo`; this
module runs them on the learned networks of :mod:`synthetic.models`. Training data come from any
Language (:mod:`theory.language`: ``sample(key, n)``), and the Monte-Carlo eps_learning is measured
against its exact conditionals (``denoiser()``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from tqdm.auto import tqdm

from theory import schedules as _schedules
from theory.elbo import bernoulli_mask, exact_evaluation, mc_evaluation, mdm_loss, uniform_t
from theory.language import Enumerable, at_length, check_language
from theory.validation import require_x64

from .models import MODEL_KINDS, LearnedDenoiser, ModelConfig, init_network, network_logits

#: Default sizes of the training run of :func:`fit_denoiser` (see benchmarks/train.py for timings).
DEFAULT_STEPS = {"transformer": 1000, "tabular": 1500, "lowrank": 1500}
DEFAULT_LR = {"transformer": 3e-3, "tabular": 5e-2, "lowrank": 1e-2}
DEFAULT_BATCH = 128
#: Largest (V+1)**L * L * V for which evaluation="auto" enumerates all partial states.
EXACT_EVAL_MAX_ENTRIES = 2**22


def _log_probs(net):
    """The network as the loss's model: states (B, L) -> float32 log-probabilities (B, L, V)."""
    return lambda z: jax.nn.log_softmax(network_logits(net, z), axis=-1)


@lru_cache(maxsize=64)
def _default_optimizer(lr: float, steps: int):
    """Adam with linear warm-up over 5% of the steps and cosine decay to 5% of ``lr``."""
    warm = max(1, steps // 20)
    return optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(steps, warm + 1), end_value=lr * 0.05))


@lru_cache(maxsize=64)
def _make_step(optimizer, schedule, vocab_size, t_sampler, mask_sampler):
    """The jitted training step (cached: repeated runs with the same hooks compile once per shape)."""

    def loss_fn(net, tokens, t, w, mask):
        return mdm_loss(_log_probs(net), tokens, t, w, mask, schedule, vocab_size)

    @jax.jit
    def step(net, opt_state, key, tokens):
        kt, km = jax.random.split(key)
        t, w = t_sampler(kt, tokens.shape[0])
        mask = mask_sampler(km, t, tokens.shape)
        if isinstance(mask, tuple):  # (mask, per-example weight): importance-sampled masks (theory.estimators)
            mask, mask_weight = mask
            w = w * mask_weight
        loss, grads = jax.value_and_grad(loss_fn)(net, tokens, t, w, mask)
        updates, opt_state = optimizer.update(grads, opt_state, net)
        return optax.apply_updates(net, updates), opt_state, loss

    return step


# ================================ training loop =======================================================
def train(
    denoiser: LearnedDenoiser,
    data,
    *,
    key,
    steps: int,
    batch_size: int = DEFAULT_BATCH,
    optimizer=None,
    learning_rate: float | None = None,
    schedule=None,
    t_sampler: Callable | None = None,
    mask_sampler: Callable | None = None,
    evaluation: Callable | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    desc: str = "train",
):
    """Train ``denoiser``'s network on ``data`` with the MDM loss; returns (trained denoiser, history DataFrame).

    ``data``: a Language (:mod:`theory.language`, sampled with ``data.sample(key, n)``) or a callable
    ``(key, n) -> (n, L)``. ``optimizer``: an optax
    transformation (default Adam with ``learning_rate``, linear warm-up over 5% of the steps and cosine
    decay). ``evaluation``: a callable denoiser -> dict (e.g. :func:`exact_evaluation`), run at step 0,
    every ``eval_every`` steps and at the end. History: one row per evaluation with ``step``,
    ``train_loss`` (mean of the batch losses since the previous row, NaN at step 0) and the evaluation's
    keys. Hooks (``t_sampler``, ``mask_sampler``): see :mod:`theory.elbo`; a ``mask_sampler`` may also
    return ``(mask (B, L), weight (B,))``, the weight multiplying each example's loss (importance-sampled
    masks, :mod:`theory.estimators`). Randomness: batch n uses ``fold_in(key_data, n)`` and
    ``fold_in(key_loss, n)``, so the same key gives the same parameters.
    """
    if not isinstance(denoiser, LearnedDenoiser):
        raise TypeError(
            f"train needs a LearnedDenoiser (synthetic.models.init_denoiser), got {type(denoiser).__name__}."
        )
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    V, L = denoiser.vocab_size, denoiser.length
    if hasattr(data, "sample") and hasattr(data, "vocab_size"):
        check_language(data, "training data")
        if (data.vocab_size, data.length) != (V, L):
            raise ValueError(
                f"data has (vocab_size, length) = ({data.vocab_size}, {data.length}) but the model was "
                f"built for ({V}, {L})."
            )
        sample_fn = data.sample
    elif callable(data):
        sample_fn = data
    else:
        raise TypeError(
            f"training data must be a Language (theory.language) or a callable (key, n) -> (n, L); "
            f"got {type(data).__name__}."
        )
    schedule = _schedules.linear() if schedule is None else schedule
    t_sampler = uniform_t if t_sampler is None else t_sampler
    mask_sampler = bernoulli_mask(schedule) if mask_sampler is None else mask_sampler
    if optimizer is None:
        optimizer = _default_optimizer(
            float(DEFAULT_LR[denoiser.config.kind] if learning_rate is None else learning_rate), int(steps)
        )
    step_fn = _make_step(optimizer, schedule, V, t_sampler, mask_sampler)
    k_data, k_loss = jax.random.split(key)
    net = denoiser.net
    opt_state = optimizer.init(net)
    config = denoiser.config
    eval_every = steps if not eval_every else int(eval_every)
    rows = []

    def record(n, losses):
        row = {"step": n, "train_loss": float(np.mean([float(x) for x in losses])) if losses else float("nan")}
        if evaluation is not None:
            row.update(evaluation(LearnedDenoiser(net, config)))
        rows.append(row)
        return row

    record(0, [])
    losses = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for n in bar:
        tokens = jnp.asarray(sample_fn(jax.random.fold_in(k_data, n), batch_size)).astype(jnp.int32)
        if tokens.shape != (batch_size, L):
            raise ValueError(f"the data sampler returned shape {tokens.shape}, expected ({batch_size}, {L}).")
        net, opt_state, loss = step_fn(net, opt_state, jax.random.fold_in(k_loss, n), tokens)
        losses.append(loss)
        if n % eval_every == 0 or n == steps:
            row = record(n, losses)
            losses = []
            if progress:
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "eps_learning", "elbo")})
    if not np.isfinite(rows[-1]["train_loss"]) and steps > 0:
        raise FloatingPointError(f"training diverged (train loss {rows[-1]['train_loss']}); lower the learning rate.")
    return LearnedDenoiser(net, config), pd.DataFrame(rows)


def fit_denoiser(
    source,
    *,
    key,
    length: int | None = None,
    steps: int | None = None,
    model: str = "transformer",
    batch_size: int = DEFAULT_BATCH,
    learning_rate: float | None = None,
    optimizer=None,
    schedule=None,
    t_sampler: Callable | None = None,
    mask_sampler: Callable | None = None,
    evaluation: str | Callable = "auto",
    reference=None,
    eval_every: int | None = None,
    eval_num: int = 4096,
    progress: bool = True,
    **model_sizes,
):
    """Train a small denoiser on a language in one call: ``(denoiser, history DataFrame)``.

    ``source``: any Language (``length`` re-sizes a :class:`theory.language.Resizable` one). ``model``:
    "transformer" (default sizes: ModelConfig), "tabular" or "lowrank"; ``model_sizes`` override ModelConfig
    fields. ``evaluation``: "auto" (exact if the language is Enumerable and (V+1)**L * L * V <= 2**22, else
    Monte Carlo on a fixed sample of ``eval_num`` draws, with eps_learning against ``reference``, by default
    the language's exact conditionals ``source.denoiser()``), "exact", "mc", "none", or a callable
    denoiser -> dict. ``eval_every`` defaults to steps // 10. ``key`` seeds everything (initialisation,
    data, masks, evaluation sample).
    """
    require_x64("fit_denoiser (its evaluation is float64)")
    if model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {model!r}.")
    check_language(source, "fit_denoiser's source")
    lang = at_length(source, length)
    V, L = lang.vocab_size, lang.length
    steps = DEFAULT_STEPS[model] if steps is None else steps
    k_init, k_train, k_eval = jax.random.split(key, 3)
    den = LearnedDenoiser(
        init_network(ModelConfig(model, V, L, **model_sizes), k_init), ModelConfig(model, V, L, **model_sizes)
    )
    ev = _resolve_evaluation(evaluation, lang, k_eval, reference, schedule, eval_num)
    return train(
        den,
        lang,
        key=k_train,
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        schedule=schedule,
        t_sampler=t_sampler,
        mask_sampler=mask_sampler,
        evaluation=ev,
        eval_every=eval_every or max(1, steps // 10),
        progress=progress,
        desc=f"fit {model} V={V} L={L}",
    )


def _resolve_evaluation(evaluation, lang, key, reference, schedule, eval_num):
    if callable(evaluation):
        return evaluation
    if evaluation not in ("auto", "exact", "mc", "none"):
        raise ValueError(f"evaluation must be 'auto', 'exact', 'mc', 'none' or a callable, got {evaluation!r}.")
    if evaluation == "none":
        return None
    V, L = lang.vocab_size, lang.length
    small = (V + 1) ** L * L * V <= EXACT_EVAL_MAX_ENTRIES
    if evaluation == "exact" or (evaluation == "auto" and small and isinstance(lang, Enumerable)):
        if not isinstance(lang, Enumerable):
            raise ValueError(
                f"evaluation='exact' needs an enumerable language (joint()); {type(lang).__name__} is not."
            )
        return exact_evaluation(lang.joint(), schedule)
    reference = lang.denoiser() if reference is None else reference
    tokens = lang.sample(jax.random.fold_in(key, 0), eval_num)
    return mc_evaluation(tokens, key=jax.random.fold_in(key, 1), vocab_size=V, reference=reference, schedule=schedule)


# ================================ checkpoints =========================================================
def save_checkpoint(
    path, denoiser: LearnedDenoiser, history: pd.DataFrame | None = None, meta: dict | None = None
) -> str:
    """Save a LearnedDenoiser (config + float32 parameters, bit-exact) and its history to ``path`` (.npz)."""
    if not isinstance(denoiser, LearnedDenoiser):
        raise TypeError(f"save_checkpoint needs a LearnedDenoiser, got {type(denoiser).__name__}.")
    path = str(path)
    if not path.endswith(".npz"):
        raise ValueError(f"checkpoint path must end in .npz, got {path!r}.")
    leaves = jax.tree_util.tree_leaves(denoiser.net)
    arrays = {
        "__format__": np.array("mdm-theory-denoiser-v1"),
        "__config__": np.array(denoiser.config.to_json()),
        "__meta__": np.array(json.dumps(meta or {}, sort_keys=True, default=str)),
    }
    for i, leaf in enumerate(leaves):
        arrays[f"param/{i:04d}"] = np.asarray(leaf)
    cols = [] if history is None else list(history.columns)
    arrays["__history_columns__"] = np.array(json.dumps(cols))
    for c in cols:
        arrays[f"history/{c}"] = history[c].to_numpy()  # type: ignore[index]  # cols is empty when history is None
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path[:-4] + ".tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first **kwarg as bool
    os.replace(tmp, path)
    return path


def load_checkpoint(path) -> tuple[LearnedDenoiser, pd.DataFrame, dict]:
    """Load ``(denoiser, history, meta)`` saved by :func:`save_checkpoint` (parameters bit-exact)."""
    with np.load(str(path), allow_pickle=False) as f:
        if "__format__" not in f or str(f["__format__"]) != "mdm-theory-denoiser-v1":
            raise ValueError(f"{path} is not an mdm-theory denoiser checkpoint (missing or wrong __format__).")
        config = ModelConfig.from_json(str(f["__config__"]))
        meta = json.loads(str(f["__meta__"]))
        skeleton = eqx.filter_eval_shape(init_network, config, jax.random.PRNGKey(0))
        shapes, treedef = jax.tree_util.tree_flatten(skeleton)
        keys = sorted(k for k in f.files if k.startswith("param/"))
        if len(keys) != len(shapes):
            raise ValueError(f"{path}: {len(keys)} parameter arrays but the {config.kind} config needs {len(shapes)}.")
        leaves = []
        for k, s in zip(keys, shapes):
            a = f[k]
            if a.shape != s.shape or a.dtype != s.dtype:
                raise ValueError(f"{path}: {k} has {a.shape} {a.dtype}, the config needs {s.shape} {s.dtype}.")
            leaves.append(jnp.asarray(a))
        net = jax.tree_util.tree_unflatten(treedef, leaves)
        cols = json.loads(str(f["__history_columns__"]))
        history = pd.DataFrame({c: f[f"history/{c}"] for c in cols})
    return LearnedDenoiser(net, config), history, meta


def train_or_load(
    path, source, *, key, length: int | None = None, model: str = "transformer", retrain: bool = False, **fit_kwargs
) -> tuple[LearnedDenoiser, pd.DataFrame]:
    """Load the checkpoint at ``path`` if it exists (and matches V, L, model), else :func:`fit_denoiser` and save.

    A checkpoint for another vocabulary, length or model kind raises ValueError (delete it or pass
    ``retrain=True``). The settings of the run are stored in the checkpoint's ``meta``.
    """
    check_language(source, "train_or_load's source")
    lang = at_length(source, length)
    V, L = lang.vocab_size, lang.length
    if os.path.exists(str(path)) and not retrain:
        den, hist, meta = load_checkpoint(path)
        have = (den.vocab_size, den.length, den.config.kind)
        if have != (V, L, model):
            raise ValueError(
                f"checkpoint {path} holds a model for (V, L, kind) = {have}, not {(V, L, model)}; "
                f"delete it, choose another path, or pass retrain=True."
            )
        return den, hist
    den, hist = fit_denoiser(source, key=key, length=length, model=model, **fit_kwargs)
    meta = {
        "key": np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key).tolist(),
        "length": L,
        "model": model,
        **{k: v for k, v in fit_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    save_checkpoint(path, den, hist, meta)
    return den, hist
