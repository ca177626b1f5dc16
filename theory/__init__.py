"""mdm-theory: exact masked diffusion models over small vocabularies (JAX, float64).

The library never switches JAX to 64-bit itself; call ``jax.config.update("jax_enable_x64", True)``
at program start (exact functions refuse float32 with a TypeError that says so).

Modules: ``joint`` and ``states`` (tables over V**L, partial states over (V+1)**L), ``language`` (the
Language protocol every world follows), ``denoiser`` (exact and imperfect conditionals),
``schedules``, ``policies``, ``sampling`` (the exact law and THE Monte-Carlo sampler), ``metrics``,
``dependence`` (BenHamu2025's error decomposition), ``elbo`` (the MDM loss, ELBO, eps_learning),
``bounds`` (the papers' closed forms), ``validation`` (the validators every module uses) and
``reference`` (a plain-Python law for cross-checks).
"""

from . import (
    bounds,
    denoiser,
    dependence,
    elbo,
    joint,
    language,
    metrics,
    policies,
    reference,
    sampling,
    schedules,
    states,
    validation,
)
from .denoiser import Denoiser, ExactDenoiser, FunctionDenoiser, TabularDenoiser, smoothed, tempered
from .dependence import ErrorDecomposition, error_decomposition
from .joint import Joint
from .language import Enumerable, Language, Resizable, entropy_mc
from .metrics import Estimate, kl, log_ter, sample_metrics, sequence_error_rate, tv
from .policies import EntropyBounded, FixedOrder, LeftToRight, RandomOrder, TopK
from .sampling import Law, Samples, batch_sharding, exact_law, sample
from .schedules import PerPosition, Schedule

__all__ = [
    # modules
    "bounds", "denoiser", "dependence", "elbo", "joint", "language", "metrics", "policies", "reference",
    "sampling", "schedules", "states", "validation",
    # objects
    "Denoiser", "Enumerable", "EntropyBounded", "ErrorDecomposition", "Estimate", "ExactDenoiser", "FixedOrder",
    "FunctionDenoiser", "Joint", "Language", "Law", "LeftToRight", "PerPosition", "RandomOrder", "Resizable",
    "Samples", "Schedule", "TabularDenoiser", "TopK",
    # functions
    "batch_sharding", "entropy_mc", "error_decomposition", "exact_law", "kl", "log_ter", "sample",
    "sample_metrics", "sequence_error_rate", "smoothed", "tempered", "tv",
]  # fmt: skip
__version__ = "0.1.0"
