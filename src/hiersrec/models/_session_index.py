"""The sparse session-item index shared by the session-kNN family (SKNN, V-SKNN, STAN, VSTAN).

The kNN methods differ in how they weigh similarities and items, not in how they find neighbours, so
this file holds only that common machinery, vectorised over a whole batch of prefixes:

1. `PrefixQuery.from_batch`: the distinct items of each left-padded prefix and the position of each
   item's last click (1 = oldest click, L = most recent);
2. `SessionIndex.candidates`: for each prefix, the training sessions that share at least one item with it
   (the union of the items' posting lists: one sparse product), of those the ``sample_size`` most recent
   (session-rec's ``sampling="recent"``), with the number of shared items and, given weights of the
   prefix items, their weighted sum (a second product): all a similarity needs;
3. `top_k_mask`: the ``k`` most similar candidates of each prefix (the neighbours);
4. `SessionIndex.expand`: one entry per (neighbour, item of the neighbour session), from which each model
   computes its item weights with segment reductions, and `dense_scores`: the (B, V) score matrix summed
   from those entries.

Training sessions are stored in recency order (by the timestamp of their last click, then by position in
the data; by position alone when there are no timestamps, as the SR-GNN files are chronological), so
"most recent" means "largest session index". Sums run in a fixed order per row, so a row scores the
same alone as inside any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.sessions import SessionData
from hiersrec.models.base import mask_padding, register_state_type


def _last_of_each_key(key: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Indices of the largest ``position`` of each distinct ``key`` (a (row, item) pair), by ascending key."""
    order = np.lexsort((position, key))
    is_last = np.ones(order.size, dtype=bool)
    is_last[:-1] = key[order][1:] != key[order][:-1]
    return order[is_last]


@dataclass(frozen=True)
class PrefixQuery:
    """The distinct items of a batch of prefixes, one entry per (row, item), rows then items ascending.

    Attributes:
        lengths: (B,) int64 clicks in each prefix (L).
        rows: (Q,) int64 row of each entry.
        items: (Q,) int64 item index of each entry.
        last_position: (Q,) int64 1-based position of the item's last click in its prefix (L = most recent).
    """

    lengths: np.ndarray
    rows: np.ndarray
    items: np.ndarray
    last_position: np.ndarray

    @classmethod
    def from_batch(cls, batch: SessionBatch) -> PrefixQuery:
        """Read the left-padded ``batch.items``; padding and the width of the batch play no part."""
        items = batch.items.numpy()
        lengths = batch.lengths.numpy().astype(np.int64)
        width = items.shape[1]
        positions = np.arange(1, width + 1)[None, :] - (width - lengths)[:, None]  # (B, T), <= 0 on padding
        rows, columns = np.nonzero(positions >= 1)
        clicked, position = items[rows, columns], positions[rows, columns]
        key = rows * (int(items.max(initial=0)) + 1) + clicked
        keep = _last_of_each_key(key, position)
        return cls(lengths=lengths, rows=rows[keep], items=clicked[keep], last_position=position[keep])

    @property
    def n_rows(self) -> int:
        """Number of prefixes (B)."""
        return self.lengths.size

    def n_distinct(self) -> np.ndarray:
        """(B,) int64 number of distinct items in each prefix."""
        return np.bincount(self.rows, minlength=self.n_rows)

    def positions_of(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Last click position of ``items[j]`` in prefix ``rows[j]``, elementwise; 0 where it was not clicked."""
        # A (B, U + 1) table over the U distinct items of the batch keeps the lookup a plain gather; items
        # absent from the batch map to column -1, the table's all-zero last column.
        batch_items = np.unique(self.items)
        column = np.full(int(max(items.max(initial=0), batch_items.max(initial=0))) + 1, -1, dtype=np.int64)
        column[batch_items] = np.arange(batch_items.size)
        table = np.zeros((self.n_rows, batch_items.size + 1), dtype=np.int64)
        table[self.rows, column[self.items]] = self.last_position
        return table[rows, column[items]]


@dataclass(frozen=True)
class Candidates:
    """Candidate neighbour sessions of a batch of prefixes, one per (prefix, session) pair.

    Attributes:
        rows: (P,) int64 prefix row, ascending.
        sessions: (P,) int64 training session index, ascending within a row (oldest first).
        n_shared: (P,) int64 distinct items the prefix and the session share (>= 1).
        weighted_shared: (P,) float64 summed query weights of the shared items, when weights were given.
    """

    rows: np.ndarray
    sessions: np.ndarray
    n_shared: np.ndarray
    weighted_shared: np.ndarray | None = None


@dataclass(frozen=True)
class Entries:
    """One entry per (candidate pair, distinct item of the candidate session), grouped by pair.

    Attributes:
        pair: (E,) int64 index of the entry's pair, ascending.
        items: (E,) int64 item index.
        positions: (E,) int64 1-based position of the item's last click in the candidate session.
        starts: (P,) int64 first entry of each pair (for ``np.ufunc.reduceat``; every pair has >= 1 entry).
    """

    pair: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    starts: np.ndarray


@register_state_type
@dataclass(frozen=True)
class SessionIndex:
    """Training sessions as a sparse session-item matrix and its item-session transpose, in recency order.

    Attributes:
        session_items: (S, V) CSR, one stored value per distinct item of a session: the 1-based position of
            the item's last click in it; columns sorted.
        item_sessions: (V, S) CSR of ones, the posting list of each item, sessions ascending (oldest first).
        session_time: (S,) float64 timestamp of each session's last click (non-decreasing), or None.
        item_clicks: (V,) int64 clicks of each item in training.
    """

    session_items: sp.csr_matrix
    item_sessions: sp.csr_matrix
    session_time: np.ndarray | None
    item_clicks: np.ndarray

    @classmethod
    def build(cls, train: SessionData, n_items: int) -> SessionIndex:
        """Index ``train`` for item indices ``0..n_items`` (0 = padding never appears)."""
        n_columns = n_items + 1
        session_time = None
        if train.timestamps is not None and train.n_sessions:
            lengths = train.lengths
            last_click = np.maximum(train.offsets[1:] - 1, 0)
            last_time = np.where(lengths > 0, train.timestamps[last_click], np.iinfo(np.int64).min)
            order = np.lexsort((np.arange(train.n_sessions), last_time))
            train = train.subset(order)
            session_time = last_time[order].astype(np.float64)
        lengths = train.lengths
        rows = np.repeat(np.arange(train.n_sessions), lengths)
        positions = np.arange(train.n_clicks) - np.repeat(train.offsets[:-1], lengths) + 1
        keep = _last_of_each_key(rows * n_columns + train.items, positions)
        indptr = np.zeros(train.n_sessions + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[keep], minlength=train.n_sessions), out=indptr[1:])
        session_items = sp.csr_matrix(
            (positions[keep], train.items[keep], indptr), shape=(train.n_sessions, n_columns), dtype=np.int64
        )
        item_sessions = sp.csr_matrix(
            (np.ones(keep.size, dtype=np.float32), (train.items[keep], rows[keep])),
            shape=(n_columns, train.n_sessions),
        )
        item_sessions.sort_indices()
        return cls(
            session_items=session_items,
            item_sessions=item_sessions,
            session_time=session_time,
            item_clicks=train.item_counts(n_items),
        )

    @property
    def n_sessions(self) -> int:
        """Number of training sessions (S)."""
        return self.session_items.shape[0]

    @property
    def n_columns(self) -> int:
        """Width of the score matrix (V = items + padding)."""
        return self.session_items.shape[1]

    def session_sizes(self, sessions: np.ndarray) -> np.ndarray:
        """(P,) int64 number of distinct items of each of ``sessions``."""
        indptr = self.session_items.indptr
        return indptr[sessions + 1] - indptr[sessions]

    def idf(self) -> np.ndarray:
        """(V,) float64 ``log(S / clicks(i))`` as session-rec's V-SKNN and VSTAN define it; 0 for unseen items."""
        clicks = self.item_clicks
        return np.where(clicks > 0, np.log(max(self.n_sessions, 1) / np.maximum(clicks, 1)), 0.0)

    def candidates(self, query: PrefixQuery, sample_size: int | None, weights: np.ndarray | None = None) -> Candidates:
        """Candidate neighbours: sessions sharing an item with each prefix, the ``sample_size`` most recent.

        Args:
            query: the prefixes.
            sample_size: candidates kept per prefix, the most recent ones (None: all).
            weights: (Q,) optional weight of each query entry; then ``Candidates.weighted_shared`` holds the
                sum of the weights of the items each candidate shares with its prefix.
        """
        indptr = np.zeros(query.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(query.rows, minlength=query.n_rows), out=indptr[1:])

        def prefix_matrix(values: np.ndarray) -> sp.csr_matrix:
            return sp.csr_matrix((values, query.items, indptr), shape=(query.n_rows, self.n_columns))

        shared = prefix_matrix(np.ones(query.items.size, dtype=np.float32)) @ self.item_sessions  # (B, S)
        shared.sort_indices()
        per_row = np.diff(shared.indptr)
        rows = np.repeat(np.arange(query.n_rows), per_row)
        sessions = shared.indices.astype(np.int64)
        n_shared = np.rint(shared.data).astype(np.int64)
        if sample_size is not None:
            from_row_end = np.repeat(shared.indptr[1:], per_row) - np.arange(shared.nnz)  # 1 = most recent
            keep = from_row_end <= sample_size
            rows, sessions, n_shared = rows[keep], sessions[keep], n_shared[keep]
        weighted_shared = None
        if weights is not None:
            # Same product with weighted prefix items; it omits pairs whose shared weights sum to 0, so its
            # entries are matched to the candidates by (row, session) key.
            weighted = prefix_matrix(weights.astype(np.float64)) @ self.item_sessions
            weighted.sort_indices()
            found_keys = np.repeat(np.arange(query.n_rows), np.diff(weighted.indptr)) * self.n_sessions
            found_keys += weighted.indices
            keys = rows * self.n_sessions + sessions
            weighted_shared = np.zeros(keys.size)
            if found_keys.size:
                at = np.minimum(np.searchsorted(found_keys, keys), found_keys.size - 1)
                found = found_keys[at] == keys
                weighted_shared[found] = weighted.data[at[found]]
        return Candidates(rows=rows, sessions=sessions, n_shared=n_shared, weighted_shared=weighted_shared)

    def expand(self, sessions: np.ndarray) -> Entries:
        """One entry per distinct item of each of ``sessions`` (grouped in that order)."""
        indptr = self.session_items.indptr
        first, counts = indptr[sessions], indptr[sessions + 1] - indptr[sessions]
        starts = np.cumsum(counts) - counts
        flat = np.arange(int(counts.sum())) - np.repeat(starts - first, counts)
        return Entries(
            pair=np.repeat(np.arange(sessions.size), counts),
            items=self.session_items.indices[flat].astype(np.int64),
            positions=self.session_items.data[flat],
            starts=starts,
        )


def top_k_mask(rows: np.ndarray, similarity: np.ndarray, k: int) -> np.ndarray:
    """(P,) bool: whether each candidate is among the ``k`` most similar of its row.

    Candidates come in `SessionIndex.candidates` order (rows ascending, sessions ascending within a row).
    Ties in similarity go to the more recent sessions (session-rec leaves them to set iteration order).
    No sort: the k-th largest similarity of each row with more than ``k`` candidates comes from
    ``np.partition`` of (rows, candidates) tables, one per power-of-two bucket of row sizes (so that a few
    long rows do not pad all the others).
    """
    counts = np.bincount(rows) if rows.size else np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    threshold = np.full(counts.size, -np.inf)  # rows with <= k candidates keep them all
    crowded = np.flatnonzero(counts > k)
    size_class = np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)
    for size in np.unique(size_class[crowded]):
        bucket = crowded[size_class[crowded] == size]
        slot = np.full(counts.size, -1)
        slot[bucket] = np.arange(bucket.size)
        members = np.flatnonzero(slot[rows] >= 0)
        table = np.full((bucket.size, int(counts[bucket].max())), -np.inf)
        table[slot[rows[members]], members - starts[rows[members]]] = similarity[members]
        threshold[bucket] = np.partition(table, -k, axis=1)[:, -k]
    row_threshold = threshold[rows]
    above = similarity > row_threshold
    tied = similarity == row_threshold
    # Of the candidates tied at the threshold, keep the most recent (the last ones of the row) to make k.
    tied_to_end = np.append(np.cumsum(tied[::-1])[::-1], 0)
    tied_from_here = tied_to_end[:-1] - tied_to_end[(starts + counts)[rows]]
    n_above = np.bincount(rows, weights=above, minlength=counts.size).astype(np.int64)
    return above | (tied & (tied_from_here <= k - n_above[rows]))


def dense_scores(rows: np.ndarray, items: np.ndarray, values: np.ndarray, n_rows: int, n_columns: int) -> torch.Tensor:
    """(n_rows, n_columns) float32 sums of ``values`` at ``(rows, items)``; column 0 (padding) = -inf.

    ``np.add.at`` adds in input order, so a row's sums do not depend on the other rows of the batch.
    """
    scores = np.zeros(n_rows * n_columns, dtype=np.float32)
    np.add.at(scores, rows * n_columns + items, values.astype(np.float32))
    return mask_padding(torch.from_numpy(scores.reshape(n_rows, n_columns)))
