"""Monte Carlo beyond one device and one host: the core sampler sharded with JAX's own sharding.

The unit of work is THE Monte-Carlo sampler (:func:`theory.sampling.sample`): sample i is a function of
``fold_in(key, i)`` only, so a run can be cut along the sample axis anywhere and the tokens do not move.
This module cuts it over a 1-D device mesh ``("batch",)`` with ``jax.shard_map`` — every device runs the
sampler's jitted loop on its own block of sample keys — and over several processes (hosts) with
``jax.distributed``: each process builds only the keys of its own devices, the global arrays are
assembled by ``jax.make_array_from_process_local_data``, and results come back to every process with
``multihost_utils.process_allgather``.

* :func:`initialize` — ``jax.distributed.initialize`` from arguments or the environment
  (``MDM_COORDINATOR``, ``MDM_NUM_PROCESSES``, ``MDM_PROCESS_ID``); a no-op for one process.
* :func:`batch_mesh` — the mesh over every device of every process.
* :func:`sharded_sample` — same ``Samples`` as ``sample(key, ...)``, bit for bit, computed on the mesh.
* :func:`sharded_mc_mean` — a per-sample statistic (e.g. log q(x)) averaged over ``num`` samples in
  chunks (tokens never leave the devices), with its standard error; the sum runs on the host in sample
  order, so the estimate is the same number on 1 device, 2 devices or 2 hosts.

Launch (2 local processes on a CPU machine; on 2 hosts use host 0's address and run one command per host)::

    MDM_COORDINATOR=localhost:12355 MDM_NUM_PROCESSES=2 MDM_PROCESS_ID=0 python -m theory.distributed --tokens 1e8 &
    MDM_COORDINATOR=localhost:12355 MDM_NUM_PROCESSES=2 MDM_PROCESS_ID=1 python -m theory.distributed --tokens 1e8

One process, 2 CPU devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m theory.distributed --tokens 1e8
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .sampling import (
    MODES,
    Samples,
    _plan_rows,
    _run,
    _run_ordered,
    _run_ranked,
    is_ranked,
    loop_compiler_options,
    make_plan,
    rank_width,
    step_widths,
)
from .validation import require_x64

ENV = ("MDM_COORDINATOR", "MDM_NUM_PROCESSES", "MDM_PROCESS_ID")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """Start ``jax.distributed`` (call before any other JAX work); returns the number of processes.

    Arguments override the environment variables ``MDM_COORDINATOR`` (host:port of process 0),
    ``MDM_NUM_PROCESSES`` and ``MDM_PROCESS_ID``. With one process (nothing set) this does nothing. On CPU
    the cross-process collectives use gloo (``jax_cpu_collectives_implementation``).
    """
    addr = coordinator_address or os.environ.get(ENV[0])
    n = num_processes if num_processes is not None else os.environ.get(ENV[1])
    pid = process_id if process_id is not None else os.environ.get(ENV[2])
    if addr is None and n is None and pid is None:
        return 1
    if addr is None or n is None or pid is None:
        raise ValueError(
            "jax.distributed needs all three of coordinator address, number of processes and process id "
            f"(arguments or the environment variables {', '.join(ENV)}); got {addr!r}, {n!r}, {pid!r}."
        )
    n, pid = int(n), int(pid)
    if n < 1 or not 0 <= pid < n:
        raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, got {n} and {pid}.")
    if n == 1:
        return 1
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # pragma: no cover - older / newer JAX without the option
        pass
    jax.distributed.initialize(coordinator_address=addr, num_processes=n, process_id=pid)
    return n


def batch_mesh(num_devices: int | None = None):
    """A 1-D ``Mesh`` with axis "batch" over the first ``num_devices`` global devices (default: all of them,
    across every process). On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (set before JAX
    starts) gives D devices per process."""
    from jax.sharding import Mesh

    devs = jax.devices()
    if num_devices is not None:
        if isinstance(num_devices, bool) or not 1 <= int(num_devices) <= len(devs):
            raise ValueError(
                f"num_devices must be in 1..{len(devs)} (the JAX devices); on CPU set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax for more."
            )
        devs = devs[: int(num_devices)]
    return Mesh(np.array(devs), ("batch",))


@dataclass(frozen=True)
class _Setup:
    path: str
    step_ids: jax.Array
    values: jax.Array
    rows: jax.Array
    mode: jax.Array
    widths: tuple
    cands: int | None = None  # the ranked path's candidate width (theory.sampling.rank_width)


def _setup(denoiser, policy, steps, reveal, schedule, counts) -> _Setup:
    from .policies import RandomOrder

    policy = RandomOrder() if policy is None else policy
    L = denoiser.length
    plan = make_plan(policy, L, steps, reveal=reveal, schedule=schedule, counts=counts)
    step_ids, values, rows = _plan_rows(plan, L)
    cands = None
    if callable(getattr(policy, "order", None)) and plan.mode in ("fixed", "bernoulli"):
        path = "ordered"
        widths = step_widths(plan, L) if callable(getattr(denoiser, "marginals_at", None)) else (L,)
    elif is_ranked(policy):
        path, widths = "ranked", (L,)  # the full-sort fallback's one width, as in theory.sampling.sample
        cands = rank_width(plan, policy, L)
    else:
        path, widths = "general", ()
    return _Setup(path, step_ids, values, rows, jnp.int32(MODES[plan.mode]), widths, cands)


def _local_keys(key, mesh, start: int, size: int):
    """The global (size,) array of sample keys fold_in(key, start + i), sharded along "batch"; each process
    computes only the rows of its own devices."""
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    spans = [(s[0].start or 0, size if s[0].stop is None else s[0].stop)
             for s in sharding.addressable_devices_indices_map((size,)).values() if s is not None]  # fmt: skip
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)  # this process's devices hold rows lo..hi-1
    local = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start + lo, start + hi))  # (hi - lo, 2)
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), (size,) + local.shape[1:])


def _check_key(key):
    if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        raise TypeError("pass a raw key (jax.random.PRNGKey(seed), uint32 (2,)), not a typed jax.random.key.")


_RUNNERS: dict = {}


def _runner(mesh, setup: _Setup, policy, denoiser, stat):
    """jit(shard_map(loop)) over the mesh: keys (B, 2) sharded -> tokens, nfe (and stat) sharded."""
    from jax.sharding import PartitionSpec as P

    cache_key = (id(mesh), mesh.devices.shape, setup.path, setup.widths, setup.cands, policy, id(denoiser), stat)
    if cache_key in _RUNNERS:
        return _RUNNERS[cache_key]
    fn = {"general": _run, "ordered": _run_ordered, "ranked": _run_ranked}[setup.path]

    def local(keys, step_ids, values, rows, mode):
        kw = {"widths": setup.widths} if setup.path != "general" else {}
        kw.update({"cands": setup.cands} if setup.path == "ranked" else {})
        toks, nfe = fn(keys, step_ids, values, rows, denoiser, policy, mode, **kw)
        if stat is None:
            return toks, nfe
        return toks, nfe, stat(toks).astype(jnp.float64)

    out = (P("batch"), P("batch")) + ((P("batch"),) if stat is not None else ())
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("batch"), P(), P(), P(), P()), out_specs=out, check_vma=False)
    run = jax.jit(mapped, compiler_options=loop_compiler_options())
    _RUNNERS[cache_key] = run
    return run


def _gather(x) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _padded(num: int, mesh) -> int:
    d = mesh.devices.size
    return -(-int(num) // d) * d


def sharded_sample(
    key, denoiser, policy=None, steps=None, *, num: int, reveal="fixed", schedule=None, counts=None, mesh=None
) -> Samples:
    """:func:`theory.sampling.sample` on a device mesh (default :func:`batch_mesh`), every process taking
    part; the same tokens and NFE as ``sample(key, denoiser, policy, steps, num=num, ...)``, bit for bit,
    returned on every process. ``num`` is padded up to a multiple of the device count (the extra samples
    are drawn and dropped). Keys must be raw ``jax.random.PRNGKey`` arrays (uint32 (2,))."""
    require_x64("sharded_sample")
    _check_key(key)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    mesh = batch_mesh() if mesh is None else mesh
    from .policies import RandomOrder

    policy = RandomOrder() if policy is None else policy
    s = _setup(denoiser, policy, steps, reveal, schedule, counts)
    size = _padded(num, mesh)
    keys = _local_keys(key, mesh, 0, size)
    toks, nfe = _runner(mesh, s, policy, denoiser, None)(keys, s.step_ids, s.values, s.rows, s.mode)
    return Samples(jnp.asarray(_gather(toks)[:num]), jnp.asarray(_gather(nfe)[:num]))


@dataclass(frozen=True)
class MCMean:
    """A Monte-Carlo mean: ``mean``, its standard error ``se`` (sample std / sqrt(num)), ``num`` samples,
    ``tokens`` generated, ``seconds`` of wall time, ``devices`` and ``processes`` it ran on."""

    mean: float
    se: float
    num: int
    tokens: int
    seconds: float
    devices: int
    processes: int


def sharded_mc_mean(
    key,
    denoiser,
    stat: Callable,
    policy=None,
    steps=None,
    *,
    num: int,
    chunk: int = 4096,
    reveal="fixed",
    schedule=None,
    counts=None,
    mesh=None,
    progress: bool = False,
) -> MCMean:
    """Mean of ``stat(tokens (B, L)) -> (B,)`` (a traceable function, e.g. a chain's exact log q(x)) over
    ``num`` samples of the sampler, run in chunks of ``chunk`` samples on the mesh; only the per-sample
    statistics leave the devices. Sample i uses ``fold_in(key, i)`` as in :func:`theory.sampling.sample`,
    and the sum runs on the host in sample order, so the result does not depend on the mesh, the number
    of processes or ``chunk`` (a multiple of the device count)."""
    import time

    require_x64("sharded_mc_mean")
    _check_key(key)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}.")
    mesh = batch_mesh() if mesh is None else mesh
    if int(chunk) < 1 or int(chunk) % mesh.devices.size:
        raise ValueError(f"chunk must be a positive multiple of the device count {mesh.devices.size}, got {chunk}.")
    from .policies import RandomOrder

    policy = RandomOrder() if policy is None else policy
    s = _setup(denoiser, policy, steps, reveal, schedule, counts)
    run = _runner(mesh, s, policy, denoiser, stat)
    vals = []
    starts = range(0, int(num), int(chunk))
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="sharded Monte Carlo", unit="chunk")
    t = time.perf_counter()
    for a in starts:
        keys = _local_keys(key, mesh, a, int(chunk))
        _, _, v = run(keys, s.step_ids, s.values, s.rows, s.mode)
        vals.append(_gather(v)[: min(int(chunk), int(num) - a)])
    x = np.concatenate(vals)
    seconds = time.perf_counter() - t
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return MCMean(float(np.sum(x) / x.size), se, int(x.size), int(x.size) * denoiser.length, seconds,
                  int(mesh.devices.size), jax.process_count())  # fmt: skip


def main(argv=None):
    """``python -m theory.distributed``: a Monte-Carlo run of ``--tokens`` generated tokens on every device of
    every process: a random Markov chain (V = 8, L = 1024 by default), RandomOrder, fixed counts, N steps;
    prints the per-token negative log-likelihood -log q(x) / L of the samples with its standard error,
    next to the chain's exact entropy rate (their difference is Feng2025's TER gap at this N)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0] if main.__doc__ else None)
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coordinator", default=None, help="host:port of process 0 (or MDM_COORDINATOR)")
    ap.add_argument("--num-processes", type=int, default=None, help="(or MDM_NUM_PROCESSES)")
    ap.add_argument("--process-id", type=int, default=None, help="(or MDM_PROCESS_ID)")
    args = ap.parse_args(argv)
    initialize(args.coordinator, args.num_processes, args.process_id)
    jax.config.update("jax_enable_x64", True)
    from functools import partial

    from synthetic import chain_exact, languages

    lang = languages.random_markov(jax.random.PRNGKey(args.seed), args.vocab, args.length, 1.0)
    stat = partial(chain_exact.markov_log_prob, jnp.asarray(lang.init), jnp.asarray(lang.trans))
    num = -(-int(args.tokens) // args.length)
    res = sharded_mc_mean(jax.random.PRNGKey(args.seed + 1), lang.denoiser(), stat, None, args.steps, num=num,
                          chunk=args.chunk, progress=True)  # fmt: skip
    if jax.process_index() == 0:
        print(
            f"processes {res.processes}, devices {res.devices}: {res.tokens:.3g} tokens in {res.seconds:.1f} s "
            f"({res.tokens / res.seconds:.3g} tokens/s); -log q(x)/L = {-res.mean / args.length:.6f} "
            f"± {res.se / args.length:.2g} nats/token; exact H(q)/L = {lang.entropy() / args.length:.6f}"
        )
    return res


if __name__ == "__main__":
    main()
