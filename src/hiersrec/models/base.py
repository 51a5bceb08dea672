"""The small contracts every recommender meets, and helpers shared by all models."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import NotFittedError


@runtime_checkable
class SessionRecommender(Protocol):
    """All that ranking, evaluation and serving need from a model."""

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 scores of every item index for each prefix; column 0 (padding) is -inf."""
        ...


@runtime_checkable
class CategoryPredictor(Protocol):
    """A model that also (or only) predicts the next category."""

    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        """(B, C) float32 scores of every category index; column 0 (padding) is -inf."""
        ...


@runtime_checkable
class FittableRecommender(Protocol):
    """A non-neural model: hyperparameters in ``__init__``, learned state set by ``fit``."""

    def fit(self, train: SessionData, catalog: ItemCatalog) -> FittableRecommender:
        """Learn from the training sessions and return ``self``."""
        ...

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        ...


def check_is_fitted(model: object, attribute: str) -> None:
    """Raise `NotFittedError` when ``model`` lacks the fitted ``attribute`` (set by ``fit``)."""
    if getattr(model, attribute, None) is None:
        name = type(model).__name__
        raise NotFittedError(f"{name} is not fitted yet; call {name}(...).fit(train, catalog) first")


def mask_padding(scores: torch.Tensor) -> torch.Tensor:
    """Set column 0 (padding) to -inf in place and return ``scores``."""
    scores[:, 0] = float("-inf")
    return scores
