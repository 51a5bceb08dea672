"""Sessions in CSR form: one array of item indices and the offsets where each session starts.

`SessionData` is the one in-memory form of a set of sessions that every model, the evaluator and the
trainer read. It holds only integer item indices (``item_idx``, 0 = padding, never stored here) in click
order; raw ids live in `Vocab`, item attributes in `ItemCatalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hiersrec.errors import DataError


@dataclass(frozen=True)
class SessionData:
    """Sessions stored as CSR arrays (GRU4Rec style).

    Session ``s`` is ``items[offsets[s]:offsets[s + 1]]``, oldest click first. Sessions are kept in
    chronological order, so the tail of a `SessionData` is its most recent part.

    Attributes:
        offsets: (S + 1,) int64, ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == len(items)``.
        items: (N,) int64 item indices, all >= 1.
        timestamps: (N,) int64 seconds since the epoch of each click, or None when unknown.
    """

    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        assert self.offsets.ndim == 1 and self.offsets.size >= 1 and self.offsets[0] == 0
        assert self.offsets[-1] == self.items.size
        assert self.timestamps is None or self.timestamps.shape == self.items.shape

    @classmethod
    def from_lists(cls, sessions: Sequence[Sequence[int]]) -> SessionData:
        """Build from a list of item-index lists (handy for tests and small inputs).

        Example:
            >>> SessionData.from_lists([[1, 2], [3, 4, 5]]).lengths.tolist()
            [2, 3]
        """
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.fromiter((i for s in sessions for i in s), dtype=np.int64, count=int(offsets[-1]))
        if items.size and items.min() < 1:
            raise DataError("item indices must be >= 1 (0 is reserved for padding)")
        return cls(offsets=offsets, items=items)

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return self.offsets.size - 1

    @property
    def n_clicks(self) -> int:
        """Number of clicks over all sessions."""
        return int(self.items.size)

    @property
    def lengths(self) -> np.ndarray:
        """(S,) int64 number of clicks in each session."""
        return np.diff(self.offsets)

    def session(self, index: int) -> np.ndarray:
        """Item indices of one session, oldest first."""
        return self.items[self.offsets[index] : self.offsets[index + 1]]

    def to_lists(self) -> list[list[int]]:
        """All sessions as Python lists (for small data and tests)."""
        return [self.session(s).tolist() for s in range(self.n_sessions)]

    def subset(self, session_indices: np.ndarray) -> SessionData:
        """The sessions at ``session_indices``, in that order (vectorised gather)."""
        session_indices = np.asarray(session_indices, dtype=np.int64)
        starts = self.offsets[session_indices]
        lengths = self.offsets[session_indices + 1] - starts
        offsets = np.zeros(session_indices.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position of each output click inside its session, added to that session's start.
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        gather = np.repeat(starts, lengths) + within
        timestamps = None if self.timestamps is None else self.timestamps[gather]
        return SessionData(offsets=offsets, items=self.items[gather], timestamps=timestamps)

    def target_positions(self, protocol: str = "all_prefixes") -> np.ndarray:
        """Flat indices into ``items`` of every evaluation target.

        Args:
            protocol: ``"all_prefixes"`` (SR-GNN: every click after the first of each session is the
                target of the prefix before it; a session of length n gives n - 1 cases) or
                ``"last_item"`` (only the last click of each session of length >= 2).

        Returns:
            (P,) int64 positions, ascending. The prefix of target ``p`` is
            ``items[session_start:p]``.
        """
        lengths = self.lengths
        if protocol == "last_item":
            return (self.offsets[1:] - 1)[lengths >= 2]
        if protocol != "all_prefixes":
            raise DataError(f"unknown protocol {protocol!r}; use 'all_prefixes' or 'last_item'")
        is_first = np.zeros(self.n_clicks, dtype=bool)
        is_first[self.offsets[:-1][lengths > 0]] = True
        return np.flatnonzero(~is_first)

    def session_starts(self) -> np.ndarray:
        """(N,) int64 flat index of the first click of the session that each click belongs to."""
        return np.repeat(self.offsets[:-1], self.lengths)

    def split_tail(self, fraction: float) -> tuple[SessionData, SessionData]:
        """Split by session into (head, tail) with the most recent ``fraction`` of sessions in the tail.

        This is the validation split: sessions are whole on one side, so no session (and no prefix of
        it) lands on both sides, and the tail is later in time than the head.

        Raises:
            DataError: when either side would be empty.
        """
        if not 0.0 < fraction < 1.0:
            raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
        n_tail = int(round(self.n_sessions * fraction))
        n_head = self.n_sessions - n_tail
        if n_tail == 0 or n_head == 0:
            raise DataError(f"cannot split {self.n_sessions} sessions with fraction {fraction}: one side is empty")
        indices = np.arange(self.n_sessions)
        return self.subset(indices[:n_head]), self.subset(indices[n_head:])

    def item_counts(self, n_items: int) -> np.ndarray:
        """(n_items + 1,) int64 click count of each item index (index 0 stays 0)."""
        return np.bincount(self.items, minlength=n_items + 1)
