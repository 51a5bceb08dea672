"""Scoring by the row of the last clicked item in an item-to-item matrix (Markov, SR, item-kNN)."""

from __future__ import annotations

import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.models.base import mask_padding


def last_item_scores(item_to_item: sp.csr_matrix, batch: SessionBatch) -> torch.Tensor:
    """(B, V) float32 rows of ``item_to_item`` (V, V) for each prefix's last click; column 0 = -inf.

    An empty prefix has item 0 (padding) in its last column, whose row is empty: all its scores tie at 0.
    """
    last_items = batch.items[:, -1].numpy()  # left-padded: the most recent click is the last column
    scores = item_to_item[last_items].toarray().astype("float32", copy=False)
    return mask_padding(torch.from_numpy(scores))
