"""mdm-theory: exact masked diffusion models over small vocabularies (JAX, float64).

The library never switches JAX to 64-bit itself; call ``jax.config.update("jax_enable_x64", True)``
at program start (exact functions refuse float32 with a TypeError that says so).

Modules: ``joint`` and ``states`` (tables over V**L, partial states over (V+1)**L), ``language`` (the
Language protocol every world follows), ``denoiser`` (exact and imperfect conditionals),
``schedules``, ``policies``, ``sampling`` (the exact law and THE Monte-Carlo sampler), ``metrics``,
``dependence`` (BenHamu2025's error decomposition), ``elbo`` (the MDM loss, ELBO, eps_learning),
``bounds`` (the papers' closed forms), ``validation`` (the validators every module uses),
``reference`` (a plain-Python law for cross-checks), ``samplers`` (the registry of published samplers) and
``check`` (``check_sampler``: is a black-box sampler's output law the one it claims?). The paper modules
(``energy``, ``orders``, ``variance``, ``estimators``, ``anyprocess``), ``exact_layers`` and ``distributed``
are imported by name.
"""

from . import (
    bounds,
    check,
    denoiser,
    dependence,
    elbo,
    joint,
    language,
    metrics,
    policies,
    reference,
    samplers,
    sampling,
    schedules,
    states,
    validation,
)
from .check import CheckReport, Reference, check_sampler
from .denoiser import Denoiser, ExactDenoiser, FunctionDenoiser, TabularDenoiser, smoothed, tempered
from .dependence import ErrorDecomposition, error_decomposition
from .joint import Joint
from .language import Enumerable, Language, Resizable, entropy_mc
from .metrics import Estimate, kl, log_ter, sample_metrics, sequence_error_rate, tv
from .policies import EntropyBounded, FixedOrder, LeftToRight, RandomOrder, TopK
from .samplers import Sampler, get_sampler, list_samplers
from .sampling import Law, Samples, batch_sharding, exact_law, sample
from .schedules import PerPosition, Schedule

__all__ = [
    # modules
    "bounds", "check", "denoiser", "dependence", "elbo", "joint", "language", "metrics", "policies", "reference",
    "samplers", "sampling", "schedules", "states", "validation",
    # objects
    "CheckReport", "Denoiser", "EntropyBounded", "Enumerable", "ErrorDecomposition", "Estimate", "ExactDenoiser",
    "FixedOrder", "FunctionDenoiser", "Joint", "Language", "Law", "LeftToRight", "PerPosition", "RandomOrder",
    "Reference", "Resizable", "Sampler", "Samples", "Schedule", "TabularDenoiser", "TopK",
    # functions
    "batch_sharding", "check_sampler", "entropy_mc", "error_decomposition", "exact_law", "get_sampler", "kl",
    "list_samplers", "log_ter", "sample", "sample_metrics", "sequence_error_rate", "smoothed", "tempered", "tv",
]  # fmt: skip
__version__ = "0.1.0"
