"""Typed exceptions and warnings raised by hiersrec.

The CLI maps each error class to an exit code in one place (`hiersrec.cli`); library code only raises.
"""

from __future__ import annotations


class HierSRecError(Exception):
    """Base class for errors raised by hiersrec."""


class DataError(HierSRecError, ValueError):
    """Input data does not match the expected schema or content."""


class ConfigError(HierSRecError, ValueError):
    """A configuration value is unknown, mistyped or inconsistent."""


class NotFittedError(HierSRecError, AttributeError):
    """A model was used before it was fitted."""


class ArtifactError(HierSRecError, ValueError):
    """A saved run or prepared dataset is missing, incomplete or of an unknown format version."""


class TrainingDivergedError(HierSRecError, RuntimeError):
    """The training loss became NaN or infinite."""


class HierSRecWarning(UserWarning):
    """A safe conversion or a questionable but allowed input."""
