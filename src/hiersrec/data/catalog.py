"""The item catalogue: each item's category and optional metadata, aligned to ``item_idx``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hiersrec.errors import DataError


@dataclass(frozen=True)
class ItemCatalog:
    """Per-item attributes, every array indexed by ``item_idx`` (row 0 is padding).

    Attributes:
        item_category: (V,) int64 category index of each item; 0 only for padding.
        n_categories: number of real categories (category indices run 1..n_categories).
        categorical: name -> (V,) int64 codes of an extra categorical attribute (0 = missing/padding).
        numeric: name -> (V,) float32 values of a numeric attribute (NaN = missing).
        text: V strings (title, description...), "" for padding and for items without text; or None.
    """

    item_category: np.ndarray
    n_categories: int
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    text: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n_rows = self.item_category.size
        if n_rows < 2:
            raise DataError("the item catalogue is empty: no item left after preprocessing")
        assert self.item_category[0] == 0, "row 0 is padding"
        if (self.item_category[1:] < 1).any() or self.item_category.max() > self.n_categories:
            raise DataError("every item needs a category index in 1..n_categories")
        for name, column in {**self.categorical, **self.numeric}.items():
            assert column.shape == (n_rows,), f"metadata column {name!r} has shape {column.shape}"
        assert self.text is None or len(self.text) == n_rows

    @property
    def n_items(self) -> int:
        """Number of real items (excluding padding)."""
        return self.item_category.size - 1

    def category_sizes(self) -> np.ndarray:
        """(C,) int64 number of items in each category index (index 0 stays 0)."""
        counts = np.bincount(self.item_category, minlength=self.n_categories + 1)
        counts[0] = 0
        return counts
