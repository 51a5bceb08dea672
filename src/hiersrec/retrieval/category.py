"""Category-based candidate generation (HierSRec's third idea, arXiv 2309.06533).

The category head predicts a distribution over the next click's category; categories are taken in order
until a budget is reached, and only their items are ranked. A target outside the candidates is a miss.

Two pieces live here:

* `CandidateBudget`: how many categories to take, as a fraction of the catalogue (take categories until their
  items reach ``fraction * n_items``) or as a fixed number of categories, and in which order. The paper takes
  the most probable categories first. Under a budget counted in items that is a knapsack in which a large
  category costs as much as many small ones: the expected candidate recall, the sum of the chosen categories'
  probabilities, grows fastest per ranked item when categories are taken by probability per item,
  ``P(c) / |c|`` ("density", the default for fraction budgets; validation recall on diginetica is in
  ``benchmarks/results/``);
* `CategoryLayout`: items permuted so that every category is one contiguous range, computed once, so that a
  candidate set is a few contiguous slices of the (permuted) item matrix rather than a scattered gather.

`select_categories` turns category scores into the chosen categories of each row, vectorised over the batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError

DEFAULT_FRACTION = 0.04  # the paper's candidate set: about 4% of the catalogue
MAX_CATEGORIES = 1_000_000  # a count budget beyond any catalogue's categories is a typo, not a request
ORDERS = ("density", "probability")
CATEGORIES_ONLY = ":categories-only"


@dataclass(frozen=True)
class CandidateBudget:
    """How many of the most probable categories make the candidate set.

    Exactly one of ``fraction`` and ``n_categories`` is set.

    Attributes:
        fraction: take categories, in ``order``, until their items reach ``ceil(fraction * n_items)`` (the
            last category taken may overshoot); ``1.0`` takes every category (exact ranking).
        n_categories: take this many categories, most probable first.
        order: for fraction budgets, ``"density"`` (highest probability per item, ``P(c) / |c|``, first) or
            ``"probability"`` (most probable first, the paper's order); count budgets always take the most
            probable categories.
        session_items: the session's own items join the candidates whatever their category, so a repeat of
            an earlier click is never lost to the budget (``":categories-only"`` turns it off: the paper's set).

    Example:
        >>> CandidateBudget.parse("4%"), CandidateBudget.parse("4%:probability").order
        (CandidateBudget(fraction=0.04, n_categories=None, order='density'), 'probability')
    """

    fraction: float | None = None
    n_categories: int | None = None
    order: str = "density"
    session_items: bool = True

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.n_categories is None):
            raise ConfigError("a candidate budget needs exactly one of fraction or n_categories")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"candidate budget fraction must be in (0, 1], got {self.fraction}")
        if self.n_categories is not None and not 1 <= self.n_categories <= MAX_CATEGORIES:
            digits = len(str(self.n_categories))
            shown = f"{self.n_categories:,}" if digits <= 12 else f"a {digits}-digit number"
            raise ConfigError(f"candidate budget takes 1 to {MAX_CATEGORIES:,} categories, got {shown}")
        if self.order not in ORDERS:
            raise ConfigError(f"candidate budget order must be one of {', '.join(ORDERS)}, got {self.order!r}")

    @classmethod
    def parse(cls, text: str | float | CandidateBudget) -> CandidateBudget:
        """Read ``"4%"``, ``"0.04"``, ``0.04`` (fractions of the catalogue) or ``"category:5"`` (categories).

        A fraction may name its order after a colon: ``"4%:probability"`` or ``"4%:density"`` (the default).
        A final ``":categories-only"`` keeps the session's own items out unless their category is chosen.

        Raises:
            ConfigError: the text is none of these forms, or out of range.
        """
        if isinstance(text, CandidateBudget):
            return text
        if isinstance(text, int | float) and not isinstance(text, bool):
            return cls(fraction=float(text))
        spec = str(text).strip().lower()
        session_items = not spec.endswith(CATEGORIES_ONLY)
        spec = spec.removesuffix(CATEGORIES_ONLY)
        match = re.fullmatch(r"(?:categories|category|cat)[:=](\d+)", spec)
        if match:
            return cls(n_categories=int(match.group(1)), session_items=session_items)
        spec, colon, order = spec.partition(":")
        try:
            fraction = float(spec[:-1]) / 100.0 if spec.endswith("%") else float(spec)
        except ValueError:
            raise ConfigError(
                f"cannot read candidate budget {text!r}; use a fraction of the catalogue ('4%' or '0.04', "
                "optionally ':probability' or ':density') or a number of categories ('category:5'), optionally "
                f"followed by '{CATEGORIES_ONLY}'"
            ) from None
        return cls(fraction=fraction, order=order if colon else "density", session_items=session_items)

    @property
    def label(self) -> str:
        """Short name for tables and JSON keys: ``"4%"``, ``"4%:probability"`` or ``"5 categories"``."""
        only = "" if self.session_items or self.is_exhaustive else CATEGORIES_ONLY
        if self.fraction is None:
            return f"{self.n_categories} categories{only}"
        suffix = "" if self.order == "density" or self.is_exhaustive else f":{self.order}"
        return f"{100 * self.fraction:g}%{suffix}{only}"

    @property
    def is_exhaustive(self) -> bool:
        """True when every category is taken whatever the scores (the 100% budget)."""
        return self.fraction == 1.0


@dataclass(frozen=True)
class CategoryLayout:
    """Items permuted so that each category occupies one contiguous range.

    Within a category, items keep ascending ``item_idx`` order, so a position inside a category's range
    also orders its items by index (ties are broken by index everywhere in hiersrec).

    Attributes:
        order: (N,) int64 ``item_idx`` at each permuted position (N real items; padding is not laid out).
        starts: (C,) int64 first permuted position of each category index (index 0, padding, is empty).
        sizes: (C,) int64 number of items of each category index (``sizes[0] == 0``).

    Example:
        >>> layout = CategoryLayout.from_item_category(np.array([0, 2, 1, 2, 1]))
        >>> layout.order.tolist(), layout.starts.tolist(), layout.sizes.tolist()
        ([2, 4, 1, 3], [0, 0, 2], [0, 2, 2])
    """

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_item_category(cls, item_category: np.ndarray, n_categories: int | None = None) -> CategoryLayout:
        """Layout of items given each item's category index (``item_category[0]`` is padding)."""
        item_category = np.asarray(item_category, dtype=np.int64)
        n_categories = int(item_category.max()) if n_categories is None else n_categories
        order = np.argsort(item_category[1:], kind="stable").astype(np.int64) + 1
        sizes = np.bincount(item_category[1:], minlength=n_categories + 1).astype(np.int64)
        sizes[0] = 0
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(order=order, starts=starts, sizes=sizes)

    @classmethod
    def from_catalog(cls, catalog: ItemCatalog) -> CategoryLayout:
        """Layout of the catalogue's items by category."""
        return cls.from_item_category(catalog.item_category, catalog.n_categories)

    @property
    def n_items(self) -> int:
        """Number of real items laid out."""
        return int(self.order.size)

    @property
    def n_categories(self) -> int:
        """Number of real categories (padding excluded)."""
        return int(self.sizes.size - 1)

    def category_slice(self, category_idx: int) -> slice:
        """Permuted positions of one category's items."""
        start = int(self.starts[category_idx])
        return slice(start, start + int(self.sizes[category_idx]))


def select_categories(
    category_scores: torch.Tensor,
    sizes: torch.Tensor,
    budget: CandidateBudget,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """The categories each row ranks, taken in the budget's order until the budget is reached.

    Categories with no item, padding (column 0), non-finite scores and, when given, categories outside
    ``allowed`` are never taken. Equal keys are taken in ascending category index (stable sort).

    Args:
        category_scores: (B, C) logits or log-probabilities (the density order subtracts ``log |c|`` from
            them; the probability order only needs their order).
        sizes: (C,) int64 items per category (`CategoryLayout.sizes`).
        budget: how many categories to take.
        allowed: optional (B, C) or (C,) bool mask of the categories a row may take.

    Returns:
        (B, C) bool, True for the chosen categories.

    Example:
        >>> scores = torch.tensor([[float("-inf"), 0.1, 0.7, 0.2]])
        >>> sizes = torch.tensor([0, 5, 2, 3])
        >>> select_categories(scores, sizes, CandidateBudget(fraction=0.5, order="probability")).tolist()
        [[False, False, True, True]]
    """
    scores = category_scores.float().clone()
    if budget.fraction is not None and budget.order == "density":
        scores -= sizes.clamp(min=1).float().log()  # log(P(c) / |c|) up to a per-row constant
    scores[:, 0] = float("-inf")
    takeable = torch.isfinite(scores) & (sizes > 0)
    if allowed is not None:
        takeable &= allowed
    scores = scores.masked_fill(~takeable, float("-inf"))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # (B, C)
    takeable_sorted = takeable.gather(1, order)
    if budget.n_categories is not None:
        take_sorted = takeable_sorted & (takeable_sorted.cumsum(1) <= budget.n_categories)
    else:
        threshold = math.ceil(budget.fraction * int(sizes.sum()))
        sizes_sorted = sizes[order] * takeable_sorted
        items_before = sizes_sorted.cumsum(1) - sizes_sorted  # items of the categories ranked above
        take_sorted = takeable_sorted & (items_before < threshold)
    return torch.zeros_like(takeable).scatter_(1, order, take_sorted)


def candidate_mask(selected: torch.Tensor, item_category: torch.Tensor) -> torch.Tensor:
    """(B, V) bool: the items of the chosen categories (column 0, padding, is never a candidate).

    Args:
        selected: (B, C) bool from `select_categories`.
        item_category: (V,) int64 category index of each item (0 for padding).
    """
    mask = selected[:, item_category]
    mask[:, 0] = False
    return mask
