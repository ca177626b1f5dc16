"""The Language protocol: every world the theory is tested in, behind one interface.

A Language is a distribution q over V**L that the toolkit can condition, score, sample and measure,
whatever its representation — an enumerated table (:class:`theory.joint.Joint`), a Markov chain, an
n-gram or an HMM (:mod:`synthetic.languages`), a product of blocks (:mod:`synthetic.worst_case`) or a
support list (:class:`synthetic.tasks.SparseJoint`). Metrics, samplers, training and the experiment
scripts use only these members, so none of them dispatches on types:

=====================  ==============================================================================
``vocab_size``         V (tokens 0..V-1; the mask token is V)
``length``             L
``denoiser()``         the exact conditionals q(x_i = v | visible part of z) as a Denoiser
                       (:mod:`theory.denoiser`): the one name for "the exact conditionals"
``log_prob(tokens)``   log q(x) for clean sequences (B, L) -> (B,); -inf outside the support
``entropy()``          H(q) in nats, exact (raises ValueError, pointing to :func:`entropy_mc`, where no
                       exact method exists at this size)
``sample(key, num)``   ``num`` exact samples (num, L) from q
=====================  ==============================================================================

Optional members, each its own protocol: ``with_length(L)`` (:class:`Resizable`: the same law at another
length, e.g. a Markov chain) and ``joint(max_bytes=None)`` (:class:`Enumerable`: the enumerated
:class:`theory.joint.Joint`, for exact laws; raises ValueError when V**L does not fit).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .metrics import Estimate, mean_se

MEMBERS = ("vocab_size", "length", "denoiser", "log_prob", "entropy", "sample")


@runtime_checkable
class Language(Protocol):
    """A distribution q over V**L with exact conditionals, log q, H(q) and exact sampling (see module docstring)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def length(self) -> int: ...

    def denoiser(self): ...

    def log_prob(self, tokens): ...

    def entropy(self) -> float: ...

    def sample(self, key, num: int): ...


@runtime_checkable
class Resizable(Protocol):
    """A language family with a law at every length: ``with_length(L)`` returns it at length L."""

    def with_length(self, length: int): ...


@runtime_checkable
class Enumerable(Protocol):
    """A language that can be enumerated into a :class:`theory.joint.Joint` (small V**L)."""

    def joint(self, max_bytes: float | None = None): ...


def check_language(obj, what: str = "a language") -> None:
    """Raise TypeError unless ``obj`` has every member of the Language protocol (names the missing ones)."""
    missing = [m for m in MEMBERS if not hasattr(obj, m)]
    if missing:
        raise TypeError(
            f"{what} must follow theory.language.Language (members {', '.join(MEMBERS)}); "
            f"{type(obj).__name__} lacks {', '.join(missing)}."
        )


def at_length(lang, length: int | None):
    """``lang`` at ``length`` (``with_length``), or ``lang`` itself when ``length`` is None or already its length."""
    if length is None or length == lang.length:
        return lang
    if not isinstance(lang, Resizable):
        raise ValueError(
            f"{type(lang).__name__} has a fixed length {lang.length}; it cannot be used at length {length}."
        )
    return lang.with_length(length)


def is_correct(lang, tokens) -> np.ndarray:
    """Per-sample correctness as the SER counts it: q(x) > 0, i.e. log q(x) finite. (num, L) -> (num,) bool."""
    return np.isfinite(np.asarray(lang.log_prob(tokens), dtype=np.float64))


def entropy_mc(lang, key, num: int) -> Estimate:
    """Monte-Carlo H(q) = E[-log q(x)] over ``num`` exact samples, with its standard error (any Language)."""
    check_language(lang)
    x = lang.sample(key, num)
    return mean_se(-np.asarray(lang.log_prob(x), dtype=np.float64))
