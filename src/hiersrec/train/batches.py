"""Training rows of whole sessions (one forward pass covers every prefix) and length-bucketed batches.

A session of n clicks gives the n - 1 (prefix, next item) cases of prefix augmentation. Instead of n - 1
padded copies, the model reads the session once and predicts at every position (`HierSRec.forward`). A
session longer than ``max_len + 1`` clicks cannot be one row: its first ``max_len + 1`` clicks are one row,
and each later target gets its own row holding the ``max_len`` clicks before it, so every case sees
exactly the truncated prefix that evaluation gives it (long sessions are rare: 5 of 186,670 on diginetica).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData

POOL_BATCHES = 50  # batches per pool sorted by length: little padding, still well shuffled


@dataclass(frozen=True)
class SessionWindows:
    """Rows of consecutive clicks; the last ``n_targets`` clicks of each row are training targets.

    Attributes:
        sessions: the sessions the rows index into.
        starts: (W,) int64 flat index of each row's first click.
        lengths: (W,) int64 clicks per row (2 .. max_len + 1).
        n_targets: (W,) int64 targets per row (``lengths - 1`` for a whole session, 1 for the extra rows).
    """

    sessions: SessionData
    starts: np.ndarray
    lengths: np.ndarray
    n_targets: np.ndarray

    @classmethod
    def from_sessions(cls, sessions: SessionData, max_len: int) -> SessionWindows:
        """Rows covering every target of ``sessions`` once (sessions of one click give none)."""
        lengths = sessions.lengths
        keep = lengths >= 2
        first_len = np.minimum(lengths[keep], max_len + 1)
        starts, row_lengths, n_targets = [sessions.offsets[:-1][keep]], [first_len], [first_len - 1]
        extra = np.maximum(lengths - (max_len + 1), 0)  # targets at in-session index > max_len
        if extra.any():
            owner = np.repeat(np.arange(lengths.size), extra)
            rank = np.arange(extra.sum()) - np.repeat(np.cumsum(extra) - extra, extra)  # 0.. within session
            target = sessions.offsets[owner] + max_len + 1 + rank  # flat index of the target click
            starts.append(target - max_len)
            row_lengths.append(np.full(target.size, max_len + 1))
            n_targets.append(np.ones(target.size, dtype=np.int64))
        return cls(
            sessions=sessions,
            starts=np.concatenate(starts).astype(np.int64),
            lengths=np.concatenate(row_lengths).astype(np.int64),
            n_targets=np.concatenate(n_targets).astype(np.int64),
        )

    @classmethod
    def last_items(cls, sessions: SessionData, max_len: int) -> SessionWindows:
        """One row per session of 2+ clicks whose only target is its last click (the "last_item" protocol)."""
        lengths = sessions.lengths
        keep = lengths >= 2
        row_lengths = np.minimum(lengths[keep], max_len + 1)
        return cls(
            sessions=sessions,
            starts=(sessions.offsets[1:][keep] - row_lengths).astype(np.int64),
            lengths=row_lengths.astype(np.int64),
            n_targets=np.ones(row_lengths.size, dtype=np.int64),
        )

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return self.starts.size

    @property
    def n_targets_total(self) -> int:
        """Training cases over all rows (= the number of prefix-augmentation cases)."""
        return int(self.n_targets.sum())

    def target_positions(self) -> np.ndarray:
        """(P,) int64 flat positions of all targets, ascending (equals ``sessions.target_positions()``)."""
        ends = self.starts + self.lengths
        counts = self.n_targets
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.sort(np.repeat(ends - counts, counts) + within)

    def batch(self, rows: np.ndarray, catalog: ItemCatalog) -> tuple[SessionBatch, torch.Tensor]:
        """The LEFT-padded `SessionBatch` of ``rows`` and its (B, T) bool target mask."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        offset = np.arange(width)[None, :] - (width - lengths)[:, None]  # (B, T) index within the row
        valid = offset >= 0
        items = np.where(valid, self.sessions.items[self.starts[rows][:, None] + np.maximum(offset, 0)], 0)
        target_mask = np.arange(width)[None, :] >= (width - self.n_targets[rows])[:, None]
        return make_batch(items, lengths, catalog), torch.from_numpy(target_mask)

    def epoch_batches(self, batch_targets: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Row indices of each batch of one epoch, about ``batch_targets`` training targets per batch.

        Rows are shuffled, sorted by length within pools (little padding), cut into batches of about
        ``batch_targets`` targets (a fixed number of targets, not of rows, keeps every step equally useful:
        a batch of 256 two-click sessions holds only 256 targets), and the batches are shuffled.
        """
        order = rng.permutation(self.n_rows)
        pool = max(1, int(batch_targets * POOL_BATCHES / max(self.n_targets.mean(), 1.0)))
        batches = []
        for start in range(0, order.size, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batch_of_row = (np.cumsum(self.n_targets[chunk]) - 1) // batch_targets
            cuts = np.flatnonzero(np.diff(batch_of_row)) + 1
            batches.extend(np.split(chunk, cuts))
        return [batches[i] for i in rng.permutation(len(batches))]


def iter_epoch(
    batches: list[np.ndarray], windows: SessionWindows, catalog: ItemCatalog
) -> Iterator[tuple[SessionBatch, torch.Tensor]]:
    """(batch, target mask) pairs for the row indices of each batch (from `SessionWindows.epoch_batches`)."""
    for rows in batches:
        yield windows.batch(rows, catalog)
