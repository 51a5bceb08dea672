"""Range checks of configuration values: every number has a lower and an upper bound, and NaN fails both.

An unbounded size is not a feature: ``max_len = 10**12`` would make the model allocate terabytes before
anything else could say no. The bounds are far past any sensible value, so they only catch typos and hostile
input; the message names the key, the allowed range and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hiersrec.errors import ConfigError


def check_bounds(config: Any, section: str, bounds: Mapping[str, tuple[float, float]]) -> None:
    """Raise `ConfigError` unless every named field of ``config`` lies in its closed ``(low, high)`` range.

    Args:
        config: a dataclass instance (its fields are read by name).
        section: the table name shown in messages (``"model"``, ``"train"``).
        bounds: field name -> (lowest, highest allowed value); NaN is never allowed.
    """
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{section}.{name} must be a number, got {value!r}")
        if not low <= value <= high:  # False for NaN too
            raise ConfigError(f"{section}.{name} must be between {low:g} and {high:g}, got {value!r}")
