"""Test configuration: float64 JAX, hypothesis profile, shared helpers."""

import os

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "mdm",
    deadline=None,  # JAX compiles on the first example
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # CI runs are reproducible; run with --hypothesis-profile=explore to search afresh
)
settings.register_profile("explore", parent=settings.get_profile("mdm"), derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mdm"))


def assert_close(actual, desired, rtol=1e-10, atol=0.0, err_msg=""):
    """assert_allclose that also requires matching shapes."""
    a, d = np.asarray(actual), np.asarray(desired)
    assert a.shape == d.shape, f"shape mismatch {a.shape} vs {d.shape} {err_msg}"
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=err_msg)
