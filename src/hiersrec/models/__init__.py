"""The model registry: every model by name, and how to build one from its name and parameters.

A model joins by being listed in `MODELS` (its class carries its ``name``). Two kinds exist:

* fitted models (`hiersrec.models.base.FittedModel`: POP, the kNN family, rules...): hyperparameters are the
  constructor's arguments; ``fit(train, catalog)`` learns; ``save`` / ``load`` store the learned arrays;
* neural models (``torch.nn.Module`` with a ``config_class`` dataclass: HierSRec): hyperparameters are the
  config's fields; ``from_config(config, catalog)`` builds, the training loop trains (``forward`` returns
  the loss), the state dict is saved.

Every model scores with ``score(batch) -> (B, V)``; the contract suite (``tests/models/test_contract.py``)
runs over this registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError
from hiersrec.models.core import CORE
from hiersrec.models.gru4rec import GRU4Rec
from hiersrec.models.hiersrec import HierSRec
from hiersrec.models.itemknn import ItemKNN
from hiersrec.models.last_category import LastCategory
from hiersrec.models.markov import Markov
from hiersrec.models.narm import NARM
from hiersrec.models.pop import Pop, SessionPop
from hiersrec.models.sasrec import SASRec
from hiersrec.models.sknn import SKNN
from hiersrec.models.slist import SLIST
from hiersrec.models.sr import SequentialRules
from hiersrec.models.srgnn import SRGNN
from hiersrec.models.stamp import STAMP
from hiersrec.models.stan import STAN
from hiersrec.models.textknn import TextKNN
from hiersrec.models.vsknn import VSKNN
from hiersrec.models.vstan import VSTAN

MODELS: dict[str, type] = {
    cls.name: cls
    for cls in (
        Pop,
        SessionPop,
        Markov,
        SequentialRules,
        ItemKNN,
        SKNN,
        VSKNN,
        STAN,
        VSTAN,
        SLIST,
        TextKNN,
        LastCategory,
        SASRec,
        GRU4Rec,
        NARM,
        STAMP,
        CORE,
        SRGNN,
        HierSRec,
    )
}
"""Name -> class of every model."""

BASELINES: dict[str, type] = {name: cls for name, cls in MODELS.items() if not issubclass(cls, nn.Module)}
"""Name -> class of every fitted (non-neural) model."""

# Filled in from the data when a neural model is built, never by a user.
DATA_FIELDS = ("n_items", "n_categories")


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def model_class(name: str) -> type:
    """The class registered as ``name``; `ConfigError` (with a close match) for an unknown name."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}.{_did_you_mean(name, list(MODELS))}")
    return MODELS[name]


def is_neural(name: str) -> bool:
    """True for models trained by the training loop, False for models fitted in closed form."""
    return issubclass(model_class(name), nn.Module)


def model_name_of(config_class: type) -> str:
    """The registry name of the neural model configured by ``config_class``."""
    for name, cls in MODELS.items():
        if getattr(cls, "config_class", None) is config_class:
            return name
    raise ConfigError(f"no registered model is configured by {config_class.__name__}")


def train_defaults(name: str) -> dict[str, Any]:
    """The ``[train]`` settings model ``name`` trains with where a file or override leaves them unset.

    A neural model's class may carry ``train_defaults`` (e.g. a larger learning rate, chosen on validation, for
    the dot-product baselines that the shared default, made for HierSRec's cosine scores, leaves far from
    converged); the rest take `hiersrec.config.TrainConfig`'s own defaults.
    """
    return dict(getattr(model_class(name), "train_defaults", {}))


def parameter_types(name: str) -> dict[str, Any]:
    """Type of every hyperparameter of model ``name`` (what a config file may set)."""
    cls = model_class(name)
    if is_neural(name):
        hints = typing.get_type_hints(cls.config_class)
        return {field.name: hints[field.name] for field in dataclasses.fields(cls.config_class)}
    hints = typing.get_type_hints(cls.__init__)
    return {key: hints[key] for key in inspect.signature(cls).parameters}


def default_params(name: str) -> dict[str, Any]:
    """The documented default of every hyperparameter of model ``name``."""
    cls = model_class(name)
    if is_neural(name):
        defaults = dataclasses.asdict(cls.config_class())
        return {key: value for key, value in defaults.items() if key not in DATA_FIELDS}
    return {key: p.default for key, p in inspect.signature(cls).parameters.items()}


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """`ConfigError` (with a close match) for a parameter that model ``name`` does not have."""
    accepted = list(default_params(name))
    for key in params:
        if key not in accepted:
            expected = f"its parameters are {accepted}" if accepted else "it takes no parameters"
            raise ConfigError(f"model {name!r} has no parameter {key!r}; {expected}.{_did_you_mean(key, accepted)}")


def make_model(
    name: str,
    params: Mapping[str, Any] | None = None,
    catalog: ItemCatalog | None = None,
    *,
    text_cache_dir: str | Path | None = None,
) -> Any:
    """Build model ``name`` with ``params`` (the others keep their defaults), ready to fit or train.

    Args:
        name: a key of `MODELS`.
        params: hyperparameters (constructor arguments, or the neural model's config fields).
        catalog: the items it will score; needed by neural models (their sizes and item features).
        text_cache_dir: where a neural model caches frozen text embeddings.

    Raises:
        ConfigError: unknown name or parameter (with a close match), or a neural model without a catalogue.
    """
    cls = model_class(name)
    # A neural model's sizes always come from the catalogue (a saved config carries the old ones).
    params = {key: value for key, value in (params or {}).items() if not (is_neural(name) and key in DATA_FIELDS)}
    check_params(name, params)
    if not is_neural(name):
        return cls(**params)
    if catalog is None:
        raise ConfigError(f"model {name!r} is built for a catalogue: pass the dataset's catalog")
    return cls.from_config(cls.config_class(**params), catalog, text_cache_dir)


# -- the non-neural baselines (kept for the tuner and the public API) ------------------------------------------


def baseline_class(name: str) -> type:
    """The class of fitted model ``name``; `ConfigError` for an unknown name or a neural model."""
    if name not in BASELINES:
        raise ConfigError(
            f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}.{_did_you_mean(name, list(BASELINES))}"
        )
    return BASELINES[name]


def make_baseline(name: str, **params: Any) -> Any:
    """Build the fitted model ``name`` with ``params`` (the others keep their documented defaults).

    Raises:
        ConfigError: unknown name or parameter (with a close match when there is one). Values are checked
            by the model's ``fit``.

    Example:
        >>> make_baseline("sknn", k=50).describe()
        {'name': 'sknn', 'k': 50, 'sample_size': 500, 'similarity': 'cosine'}
    """
    baseline_class(name)
    return make_model(name, params)


def search_space(name: str) -> dict[str, tuple]:
    """Values the tuner tries for each hyperparameter of fitted model ``name`` (empty: nothing to tune)."""
    return dict(baseline_class(name).SEARCH_SPACE)


__all__ = [
    "BASELINES",
    "MODELS",
    "CORE",
    "GRU4Rec",
    "HierSRec",
    "ItemKNN",
    "LastCategory",
    "Markov",
    "NARM",
    "Pop",
    "SASRec",
    "SKNN",
    "SLIST",
    "SRGNN",
    "STAMP",
    "STAN",
    "SequentialRules",
    "SessionPop",
    "VSKNN",
    "VSTAN",
    "baseline_class",
    "check_params",
    "default_params",
    "is_neural",
    "make_baseline",
    "make_model",
    "model_class",
    "model_name_of",
    "parameter_types",
    "search_space",
]
