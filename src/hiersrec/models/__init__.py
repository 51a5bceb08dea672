"""Model registry: the non-neural baselines by name, and how to build one from a name and parameters."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from hiersrec.errors import ConfigError
from hiersrec.models.itemknn import ItemKNN
from hiersrec.models.last_category import LastCategory
from hiersrec.models.markov import Markov
from hiersrec.models.pop import Pop, SessionPop
from hiersrec.models.sknn import SKNN
from hiersrec.models.sr import SequentialRules
from hiersrec.models.stan import STAN
from hiersrec.models.vsknn import VSKNN
from hiersrec.models.vstan import VSTAN

BASELINES: dict[str, type] = {
    "pop": Pop,
    "spop": SessionPop,
    "markov": Markov,
    "sr": SequentialRules,
    "itemknn": ItemKNN,
    "sknn": SKNN,
    "vsknn": VSKNN,
    "stan": STAN,
    "vstan": VSTAN,
    "last_category": LastCategory,
}
"""Name -> class of every non-neural baseline (``fit(train, catalog)``, ``score`` / ``score_categories``)."""


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def baseline_class(name: str) -> type:
    """The class registered as ``name``; `ConfigError` (with a close match) for an unknown name."""
    if name not in BASELINES:
        raise ConfigError(
            f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}.{_did_you_mean(name, list(BASELINES))}"
        )
    return BASELINES[name]


def make_baseline(name: str, **params: Any) -> Any:
    """Build the baseline ``name`` with ``params`` (the others keep their documented defaults).

    Raises:
        ConfigError: unknown name or parameter (with a close match when there is one). Values are checked
            by the model's ``fit``.

    Example:
        >>> make_baseline("sknn", k=50).describe()
        {'name': 'sknn', 'k': 50, 'sample_size': 500, 'similarity': 'cosine'}
    """
    cls = baseline_class(name)
    accepted = list(default_params(name))
    for key in params:
        if key not in accepted:
            expected = f"its parameters are {accepted}" if accepted else "it takes no parameters"
            raise ConfigError(f"baseline {name!r} has no parameter {key!r}; {expected}.{_did_you_mean(key, accepted)}")
    return cls(**params)


def default_params(name: str) -> dict[str, Any]:
    """The documented defaults of every hyperparameter of baseline ``name``."""
    return {key: p.default for key, p in inspect.signature(baseline_class(name)).parameters.items()}


def search_space(name: str) -> dict[str, tuple]:
    """Values the tuner tries for each hyperparameter of baseline ``name`` (empty: nothing to tune)."""
    return dict(baseline_class(name).SEARCH_SPACE)


__all__ = [
    "BASELINES",
    "ItemKNN",
    "LastCategory",
    "Markov",
    "Pop",
    "SKNN",
    "STAN",
    "SequentialRules",
    "SessionPop",
    "VSKNN",
    "VSTAN",
    "baseline_class",
    "default_params",
    "make_baseline",
    "search_space",
]
