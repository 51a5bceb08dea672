"""Popularity baselines: POP (global click counts) and S-POP (clicks in the current session first).

S-POP ranks the items of the current prefix by how often they were clicked in it, ties (and all other
items) by their global popularity: session-rec's ``baselines/spop.py`` scores ``count_in_session +
clicks / (clicks + 1)``; here the same order is kept exactly with integer keys (see `SessionPop.score`)
rather than a fraction that float32 cannot resolve for popular items.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models.base import FittedModel, check_is_fitted, mask_padding


class Pop(FittedModel):
    """Every prefix gets the same ranking: items by their number of clicks in training."""

    name: ClassVar[str] = "pop"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    def fit(self, train: SessionData, catalog: ItemCatalog) -> Pop:
        """Count the clicks of every item."""
        self.item_clicks_ = train.item_counts(catalog.n_items).astype(np.float32)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 training click counts, the same for every row; column 0 = -inf."""
        check_is_fitted(self, "item_clicks_")
        counts = torch.from_numpy(self.item_clicks_)
        return mask_padding(counts.expand(len(batch), -1).clone())


class SessionPop(FittedModel):
    """S-POP: the prefix's items by their click count in the prefix, then all items by global popularity."""

    name: ClassVar[str] = "spop"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    def fit(self, train: SessionData, catalog: ItemCatalog) -> SessionPop:
        """Rank the items by training clicks (dense rank: equal counts share a rank, 0 = fewest)."""
        _, rank = np.unique(train.item_counts(catalog.n_items), return_inverse=True)
        self.popularity_rank_ = rank.astype(np.int64)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 ``count_in_prefix * R + popularity_rank``; column 0 = -inf.

        ``R`` exceeds every popularity rank, so the prefix count decides and popularity breaks ties; the
        integers stay below 2**24, where float32 is exact, for prefixes of up to 2**24 / R clicks.
        """
        check_is_fitted(self, "popularity_rank_")
        items = batch.items.numpy()
        n_columns = self.popularity_rank_.size
        radix = float(self.popularity_rank_.max() + 1)
        scores = np.tile(self.popularity_rank_.astype(np.float32), (items.shape[0], 1))
        rows, columns = np.nonzero(items)  # real clicks (0 = padding)
        np.add.at(scores.reshape(-1), rows * n_columns + items[rows, columns], radix)
        return mask_padding(torch.from_numpy(scores))
