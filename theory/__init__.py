"""mdm-theory: exact masked diffusion models over small vocabularies (JAX, float64).

The library never switches JAX to 64-bit itself; call ``jax.config.update("jax_enable_x64", True)``
at program start. Modules: joint, states, denoiser, schedules, policies, sampling, metrics, bounds.
"""
from . import denoiser, joint, metrics, policies, sampling, schedules, states
from .denoiser import Denoiser, ExactDenoiser, FunctionDenoiser, TabularDenoiser, exact_denoiser
from .joint import Joint
from .sampling import Law, Samples, exact_law, sample

__all__ = [
    "Denoiser", "ExactDenoiser", "FunctionDenoiser", "Joint", "Law", "Samples", "TabularDenoiser",
    "denoiser", "exact_denoiser", "exact_law", "joint", "metrics", "policies", "sample", "sampling",
    "schedules", "states",
]
__version__ = "0.1.0"
