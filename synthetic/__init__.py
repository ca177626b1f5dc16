"""Synthetic worlds for the theory: languages (tables, Markov, n-gram, HMM) and their engines."""
from . import languages

__all__ = ["languages"]
