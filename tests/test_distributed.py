"""Issue 14, target 5: the sampler sharded over devices (shard_map on a mesh) and processes (jax.distributed)
gives the same tokens and the same Monte-Carlo estimate as the single-device run, bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthetic import chain_exact, languages
from theory import distributed, policies
from theory.sampling import sample

ROOT = Path(__file__).resolve().parent.parent
LANG = languages.random_markov(jax.random.PRNGKey(0), 3, 12, 1.0)
KEY = jax.random.PRNGKey(5)
TINY = languages.random_markov(jax.random.PRNGKey(1), 2, 3, 1.0)


def _stat(lang):
    return partial(chain_exact.markov_log_prob, jnp.asarray(lang.init), jnp.asarray(lang.trans))


def test_sharded_sample_in_process_equals_sample():
    """The shard_map path on this process's mesh (1 device in the default run) gives sample()'s tokens
    (a tiny table: two compilations of the loop)."""
    d = TINY.joint().denoiser()  # the exact table: cheaper to compile than the chain oracle
    a = sample(KEY, d, policies.RandomOrder(), 2, num=13)
    b = distributed.sharded_sample(KEY, d, policies.RandomOrder(), 2, num=13)
    np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(a.tokens))
    np.testing.assert_array_equal(np.asarray(b.nfe), np.asarray(a.nfe))


@pytest.mark.slow  # one more compilation (the loop with the statistic); the subprocess tests check it too
def test_sharded_mc_mean_in_process():
    d = LANG.denoiser()
    a = sample(KEY, d, policies.RandomOrder(), 3, num=13)
    n = jax.device_count()
    r = distributed.sharded_mc_mean(KEY, d, _stat(LANG), policies.RandomOrder(), 3, num=13, chunk=8 * n)
    want = np.asarray(_stat(LANG)(a.tokens))
    assert r.num == 13 and r.tokens == 13 * LANG.length
    assert r.mean == np.sum(want) / 13  # same numbers, same host-side order: exact
    assert r.se == pytest.approx(np.std(want, ddof=1) / np.sqrt(13), rel=1e-12)


def test_initialize_arguments(monkeypatch):
    for name in distributed.ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() == 1  # nothing set: one process, no-op
    assert distributed.initialize("localhost:1", 1, 0) == 1
    with pytest.raises(ValueError, match="all three"):
        distributed.initialize("localhost:1")
    monkeypatch.setenv("MDM_NUM_PROCESSES", "2")
    monkeypatch.setenv("MDM_PROCESS_ID", "2")
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("localhost:1")
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        distributed.batch_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="multiple of the device count"):
        distributed.sharded_mc_mean(KEY, LANG.denoiser(), _stat(LANG), None, 3, num=4, chunk=0)
    with pytest.raises(TypeError, match="raw key"):
        distributed.sharded_sample(jax.random.key(0), LANG.denoiser(), None, 3, num=4)


# ---- two devices, two processes (subprocesses: XLA_FLAGS and jax.distributed act before JAX starts) -------------
_CHILD = """
import sys, numpy as np, jax
from theory import distributed
distributed.initialize()
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import test_distributed as T
from theory import policies
out = {}
d = T.LANG.denoiser()
pols = {"random": policies.RandomOrder(), "topk": policies.TopK("margin"), "eb": policies.EntropyBounded(0.4),
        "l2r": policies.LeftToRight()}
for name, pol in pols.items():
    s = distributed.sharded_sample(T.KEY, d, pol, 3, num=13, reveal="bernoulli")
    out[name] = np.asarray(s.tokens)
r = distributed.sharded_mc_mean(T.KEY, d, T._stat(T.LANG), None, 3, num=50, chunk=16)
out["mean"], out["se"] = np.float64(r.mean), np.float64(r.se)
out["devices"] = np.int64(r.devices)
if jax.process_index() == 0:
    np.savez(sys.argv[2], **out)
print("child ok", jax.process_count(), jax.device_count())
"""


def _reference():
    d = LANG.denoiser()
    pols = {"random": policies.RandomOrder(), "topk": policies.TopK("margin"), "eb": policies.EntropyBounded(0.4),
            "l2r": policies.LeftToRight()}  # fmt: skip
    want = {name: np.asarray(sample(KEY, d, pol, 3, num=13, reveal="bernoulli").tokens) for name, pol in pols.items()}
    x = np.asarray(_stat(LANG)(sample(KEY, d, None, 3, num=50).tokens))
    return want, np.sum(x) / x.size, np.std(x, ddof=1) / np.sqrt(x.size)


def _check(path, devices):
    got = np.load(path)
    want, mean, se = _reference()
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)
    assert float(got["mean"]) == mean
    assert float(got["se"]) == pytest.approx(se, rel=1e-12)
    assert int(got["devices"]) == devices


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)
    return env


@pytest.mark.slow  # its own JAX start and compilations (~10 s)
def test_two_devices_equal_one(tmp_path):
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "tests"), str(tmp_path / "o.npz")], env=env,
                       capture_output=True, text=True, cwd=str(ROOT), timeout=600)  # fmt: skip
    assert r.returncode == 0 and "child ok 1 2" in r.stdout, r.stderr[-3000:]
    _check(tmp_path / "o.npz", 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes joined by jax.distributed (gloo collectives on CPU), ~15 s
def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(ROOT / "tests"), str(tmp_path / "o.npz")],
            env=_env(MDM_COORDINATOR=f"localhost:{port}", MDM_NUM_PROCESSES="2", MDM_PROCESS_ID=str(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "child ok 2 2" in out, err[-3000:]
    _check(tmp_path / "o.npz", 2)
