"""Schedules: pinned values (so a convention slip cannot pass), derivatives, discretisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory import schedules

from conftest import assert_close
from strategies import schedule_list, schedules_st

SQ2 = np.sqrt(2.0)

# (schedule, alpha(1/2), alpha'(1/2)) derived by hand from the closed forms in the docstrings
PINNED = [
    (schedules.linear(), 0.5, -1.0),
    (schedules.cosine(), 1 - SQ2 / 2, -np.pi * SQ2 / 4),
    (schedules.cosine_squared(), 0.5, -np.pi / 2),
    (schedules.polynomial(2.0), 0.75, -1.0),
    (schedules.beta_cdf(1.0, 1.0), 0.5, -1.0),
    (schedules.beta_cdf(2.0, 2.0), 0.5, -1.5),  # Beta(2,2) pdf at 1/2 is 6 * 1/4
    (schedules.sin2_beta(0.5, 0.5), 0.5, -1.0),  # Chen2025: Beta(0.5, 0.5) gives linear
    (schedules.sin2_beta(1.0, 1.0), 0.5, -np.pi / 2),  # Beta(1, 1) gives cos^2(pi t / 2)
]


@pytest.mark.parametrize(
    "sch, a_half, d_half", PINNED, ids=lambda x: repr(x) if isinstance(x, schedules.Schedule) else ""
)
def test_pinned_values(sch, a_half, d_half):
    assert_close(float(sch.alpha(0.0)), 1.0, atol=1e-15)
    assert_close(float(sch.alpha(1.0)), 0.0, atol=1e-15)
    assert_close(float(sch.alpha(0.5)), a_half, rtol=1e-12)
    assert_close(float(sch.dalpha(0.5)), d_half, rtol=1e-10)


def test_sin2_beta_families_match_closed_forms():
    t = np.linspace(0.01, 0.99, 41)
    assert_close(np.asarray(schedules.sin2_beta(0.5, 0.5).alpha(t)), 1 - t, rtol=1e-10)
    assert_close(np.asarray(schedules.sin2_beta(1.0, 1.0).alpha(t)), np.cos(np.pi * t / 2) ** 2, rtol=1e-10)


@given(schedules_st, st.floats(0.02, 0.98))
def test_derivative_matches_autodiff(sch, t):
    g = jax.grad(lambda s: sch.alpha(s))(jnp.float64(t))
    assert_close(float(sch.dalpha(t)), float(g), rtol=1e-8, atol=1e-12)


@given(schedules_st, st.integers(1, 12))
def test_reveal_probs_survival_identity(sch, N):
    """prod_{m<=n} (1 - p_m) = 1 - alpha(t after step n): the chance a token is still masked."""
    p = schedules.reveal_probs(sch, N)
    a = schedules.alphas_on_grid(sch, N)
    surv = np.cumprod(1 - p)
    assert_close(surv, 1 - a[1:], rtol=1e-10, atol=1e-12)
    assert p[-1] == 1.0 and np.all((p >= 0) & (p <= 1))


@given(schedules_st, st.integers(1, 12), st.integers(1, 40))
def test_fixed_counts(sch, N, L):
    k = schedules.fixed_counts(sch, N, L)
    assert k.shape == (N,) and k.sum() == L and np.all(k >= 0)
    a = schedules.alphas_on_grid(sch, N)
    assert np.all(np.abs(np.cumsum(k) - L * a[1:]) <= 0.5 + 1e-9)


def test_linear_counts_example():
    assert schedules.fixed_counts(schedules.linear(), 4, 12).tolist() == [3, 3, 3, 3]
    assert schedules.fixed_counts(schedules.linear(), 3, 4).tolist() == [1, 2, 1]  # round(4/3)=1, round(8/3)=3


def test_bad_schedules():
    with pytest.raises(ValueError, match="non-increasing"):
        schedules.from_function(lambda t: 1 - t + 0.3 * jnp.sin(6 * jnp.pi * t))
    with pytest.raises(ValueError, match="alpha\\(1\\) = 0"):
        schedules.from_function(lambda t: 1 - 0.9 * t)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        schedules.fixed_counts(schedules.linear(), 0, 4)
    with pytest.raises(TypeError, match="steps"):
        schedules.reveal_probs(schedules.linear(), 2.5)
    with pytest.raises(ValueError, match="power"):
        schedules.polynomial(0.0)
    with pytest.raises(ValueError, match="Beta"):
        schedules.beta_cdf(-1.0, 1.0)
    with pytest.raises(ValueError, match="sum to the length"):
        schedules.check_counts([1, 1], 3)


def test_custom_schedule_autodiff_derivative():
    s = schedules.from_function(lambda t: (1 - t) ** 3, name="cubic")
    assert_close(float(s.dalpha(0.5)), -3 * 0.25, rtol=1e-12)


def test_all_builtin_schedules_validate():
    for s in schedule_list():
        schedules.validate(s)
