"""First-order Markov chain: the next item is scored by how often it followed the last clicked item.

``score(j) = #(i -> j)`` over consecutive clicks of the training sessions, ``i`` the prefix's last click
(session-rec's ``baselines/markov.py`` up to a per-row normalisation that does not change a ranking).
It is `SequentialRules` with ``steps=1, weighting="same", pruning=0``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._item_to_item import last_item_scores
from hiersrec.models.base import FittedModel, check_is_fitted


class Markov(FittedModel):
    """Transition counts from the last clicked item."""

    name: ClassVar[str] = "markov"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    def fit(self, train: SessionData, catalog: ItemCatalog) -> Markov:
        """Count the transitions between consecutive clicks of each session."""
        n_columns = catalog.n_items + 1
        starts = train.session_starts()
        same_session = starts[1:] == starts[:-1]
        current, following = train.items[:-1][same_session], train.items[1:][same_session]
        self.transitions_ = sp.csr_matrix(
            (np.ones(current.size, dtype=np.float32), (current, following)), shape=(n_columns, n_columns)
        )
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 transition counts from each prefix's last click; column 0 = -inf."""
        check_is_fitted(self, "transitions_")
        return last_item_scores(self.transitions_, batch)
