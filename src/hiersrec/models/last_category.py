"""The next-category baseline: predict that the session stays in the category of its last click.

On diginetica 88.5% of next clicks share the last click's category (`shared/data/README.md`), so this is
the bar any next-category predictor must clear. Only the category task is scored (``score_categories``);
categories other than the last one are ranked by their training clicks, so ``cat_acc@5`` means something.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models.base import FittedModel, check_is_fitted, mask_padding


class LastCategory(FittedModel):
    """Repeat the last category; the others follow by popularity."""

    name: ClassVar[str] = "last_category"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    def fit(self, train: SessionData, catalog: ItemCatalog) -> LastCategory:
        """Rank the categories by their clicks in training, scaled into [0, 1)."""
        clicks = np.bincount(catalog.item_category[train.items], minlength=catalog.n_categories + 1)
        _, rank = np.unique(clicks, return_inverse=True)
        self.category_popularity_ = (rank / (rank.max() + 1)).astype(np.float32)
        return self

    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        """(B, C) float32: 1 + popularity for the last click's category, popularity (< 1) for the others.

        Column 0 (padding) is -inf; an empty prefix ranks categories by popularity alone.
        """
        check_is_fitted(self, "category_popularity_")
        last_category = batch.categories[:, -1]  # left-padded: the most recent click is the last column
        scores = torch.from_numpy(self.category_popularity_).expand(len(batch), -1).clone()
        scores[torch.arange(len(batch)), last_category] += 1.0
        return mask_padding(scores)
