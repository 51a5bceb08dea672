"""Checks of baseline hyperparameters, run by ``fit`` (``__init__`` only stores them, sklearn style)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from hiersrec.errors import ConfigError

MAX_INT = 1 << 31  # counts (neighbours, sample sizes, steps) beyond any catalogue: typos, and int64 overflow later


def check_positive_int(model: object, name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise `ConfigError` unless ``value`` is an int in [1, 2**31) (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < MAX_INT:
        allowed = f"an int from 1 to {MAX_INT - 1:,}" + (" or None" if allow_none else "")
        raise ConfigError(f"{type(model).__name__}: {name} must be {allowed}, got {value!r}")


def check_non_negative(model: object, name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise `ConfigError` unless ``value`` is a number >= 0 (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        allowed = "a finite number >= 0" + (" or None" if allow_none else "")
        raise ConfigError(f"{type(model).__name__}: {name} must be {allowed}, got {value!r}")


def check_positive(model: object, name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise `ConfigError` unless ``value`` is a number > 0 (or None when ``allow_none``)."""
    check_non_negative(model, name, value, allow_none=allow_none)
    if value is not None and value == 0:
        raise ConfigError(f"{type(model).__name__}: {name} must be > 0, got {value!r}")


def check_choice(model: object, name: str, value: Any, choices: Collection[str]) -> None:
    """Raise `ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{type(model).__name__}: {name} must be one of {sorted(choices)}, got {value!r}")
