"""Vocabularies: raw item and category ids <-> contiguous indices, with 0 reserved for padding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

PAD_TOKEN = "<pad>"


@dataclass(frozen=True)
class Vocab:
    """Raw ids of items and categories, indexed by ``item_idx`` / ``category_idx``.

    ``item_ids[0]`` and ``category_ids[0]`` are the padding token; real ids start at index 1. Raw ids are
    strings so that any source (numbers, ASINs, codes) maps the same way.

    Example:
        >>> vocab = Vocab(item_ids=("<pad>", "a", "b"), category_ids=("<pad>", "x"))
        >>> vocab.encode_items(["b", "zzz"]).tolist()
        [2, 0]
    """

    item_ids: tuple[str, ...]
    category_ids: tuple[str, ...]
    _item_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _category_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.item_ids[0] == PAD_TOKEN and self.category_ids[0] == PAD_TOKEN
        object.__setattr__(self, "_item_index", {raw: i for i, raw in enumerate(self.item_ids) if i})
        object.__setattr__(self, "_category_index", {raw: i for i, raw in enumerate(self.category_ids) if i})
        assert len(self._item_index) == len(self.item_ids) - 1, "duplicate raw item ids"
        assert len(self._category_index) == len(self.category_ids) - 1, "duplicate raw category ids"

    @classmethod
    def from_raw(cls, item_ids: Iterable[object], category_ids: Iterable[object]) -> Vocab:
        """Vocabulary whose index order is the given order of raw ids (index 1 = first id)."""
        return cls(
            item_ids=(PAD_TOKEN, *(str(i) for i in item_ids)),
            category_ids=(PAD_TOKEN, *(str(c) for c in category_ids)),
        )

    @property
    def n_items(self) -> int:
        """Number of real items (excluding padding)."""
        return len(self.item_ids) - 1

    @property
    def n_categories(self) -> int:
        """Number of real categories (excluding padding)."""
        return len(self.category_ids) - 1

    def encode_items(self, raw_ids: Sequence[object]) -> np.ndarray:
        """Item indices of raw ids; unknown ids map to 0 (the caller decides what to do with them)."""
        get = self._item_index.get
        return np.fromiter((get(str(r), 0) for r in raw_ids), dtype=np.int64, count=len(raw_ids))

    def decode_items(self, item_idx: Iterable[int]) -> list[str]:
        """Raw ids of item indices."""
        return [self.item_ids[int(i)] for i in item_idx]

    def encode_categories(self, raw_ids: Sequence[object]) -> np.ndarray:
        """Category indices of raw ids; unknown ids map to 0."""
        get = self._category_index.get
        return np.fromiter((get(str(r), 0) for r in raw_ids), dtype=np.int64, count=len(raw_ids))

    def decode_categories(self, category_idx: Iterable[int]) -> list[str]:
        """Raw ids of category indices."""
        return [self.category_ids[int(i)] for i in category_idx]
