"""Batches of session prefixes as tensors, built with vectorised gathers from `SessionData`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData


@dataclass(frozen=True)
class SessionBatch:
    """A batch of session prefixes, left-padded with 0.

    Sessions longer than ``T`` keep their most recent ``T`` clicks.

    Attributes:
        items: (B, T) int64 item_idx, 0 = padding, the most recent click in the last column.
        categories: (B, T) int64 category_idx of each item, 0 = padding.
        lengths: (B,) int64 number of real clicks per row (0 <= length <= T).
        target_items: (B,) int64 next item_idx, or None at inference.
        target_categories: (B,) int64 next category_idx, or None at inference.
    """

    items: torch.Tensor
    categories: torch.Tensor
    lengths: torch.Tensor
    target_items: torch.Tensor | None = None
    target_categories: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.items.shape[0]

    def to(self, device: torch.device | str) -> SessionBatch:
        """The same batch on ``device``."""
        moved = {
            name: (None if value is None else value.to(device, non_blocking=True)) for name, value in vars(self).items()
        }
        return replace(self, **moved)


def last_clicks(batch: SessionBatch, max_len: int) -> SessionBatch:
    """Each row's most recent ``max_len`` clicks (what every model is given; left padding kept)."""
    if batch.items.shape[1] <= max_len:
        return batch
    return replace(
        batch,
        items=batch.items[:, -max_len:],
        categories=batch.categories[:, -max_len:],
        lengths=batch.lengths.clamp(max=max_len),
    )


def left_pad(sessions: list[np.ndarray] | list[list[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad variable-length item-index lists into a (B, T) array, keeping the most recent clicks.

    Returns:
        (items (B, T) int64, lengths (B,) int64) with ``T = min(max_len, longest)`` (at least 1).
    """
    lengths = np.array([min(len(s), max_len) for s in sessions], dtype=np.int64)
    width = max(1, int(lengths.max(initial=0)))
    items = np.zeros((len(sessions), width), dtype=np.int64)
    for row, (session, length) in enumerate(zip(sessions, lengths, strict=True)):
        if length:
            items[row, width - length :] = np.asarray(session[-length:], dtype=np.int64)
    return items, lengths


def make_batch(
    items: np.ndarray,
    lengths: np.ndarray,
    catalog: ItemCatalog,
    target_items: np.ndarray | None = None,
) -> SessionBatch:
    """Wrap left-padded item indices (and optional targets) into a `SessionBatch` with categories."""
    categories = catalog.item_category[items]
    target_categories = None if target_items is None else catalog.item_category[target_items]
    as_tensor = torch.from_numpy
    return SessionBatch(
        items=as_tensor(np.ascontiguousarray(items, dtype=np.int64)),
        categories=as_tensor(np.ascontiguousarray(categories, dtype=np.int64)),
        lengths=as_tensor(np.ascontiguousarray(lengths, dtype=np.int64)),
        target_items=None if target_items is None else as_tensor(target_items.astype(np.int64)),
        target_categories=None if target_categories is None else as_tensor(target_categories.astype(np.int64)),
    )


def prefix_batch(sessions: SessionData, catalog: ItemCatalog, targets: np.ndarray, max_len: int) -> SessionBatch:
    """The batch of (prefix, target) cases for the flat click positions ``targets``.

    The prefix of position ``p`` is the clicks of its session before ``p``, truncated to the most recent
    ``max_len``; built with one gather, no Python loop over rows.

    Args:
        sessions: the sessions the positions index into.
        catalog: item attributes (for the category columns).
        targets: (B,) int64 flat positions into ``sessions.items``, none at a session start.
        max_len: longest prefix kept.
    """
    starts = sessions.session_starts()[targets]
    lengths = np.minimum(targets - starts, max_len)
    assert (lengths >= 1).all(), "a target at a session start has no prefix"
    width = int(lengths.max(initial=1))
    columns = np.arange(-width, 0, dtype=np.int64)
    gather = targets[:, None] + columns[None, :]  # (B, T) positions, the last column is p - 1
    valid = columns[None, :] >= -lengths[:, None]
    items = np.where(valid, sessions.items[np.where(valid, gather, 0)], 0)
    return make_batch(items, lengths, catalog, sessions.items[targets])


def iter_prefix_batches(
    sessions: SessionData,
    catalog: ItemCatalog,
    targets: np.ndarray,
    batch_size: int,
    max_len: int,
) -> Iterator[SessionBatch]:
    """`prefix_batch` over consecutive chunks of ``targets``."""
    for start in range(0, targets.size, batch_size):
        yield prefix_batch(sessions, catalog, targets[start : start + batch_size], max_len)
