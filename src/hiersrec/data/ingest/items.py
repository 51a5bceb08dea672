"""Item tables: the category policy for items without a category, and the `ItemCatalog` built from a table.

An *item table* is a Polars DataFrame with a string ``item_id`` column, a string ``category`` column (null =
no category), and optionally a string ``text`` column and extra attribute columns that the caller names as
categorical (any values, coded 1.. by first appearance, 0 = missing) or numeric (float, NaN = missing).
Items absent from the table count as items without a category.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import DataError

logger = logging.getLogger(__name__)

MISSING_CATEGORY_POLICIES = ("unknown", "drop", "error")
UNKNOWN_CATEGORY = "unknown"


def check_missing_category_policy(policy: str) -> str:
    """Return ``policy`` when it is one of `MISSING_CATEGORY_POLICIES`, else raise a `DataError`."""
    if policy not in MISSING_CATEGORY_POLICIES:
        raise DataError(f"unknown missing-category policy {policy!r}; use one of {MISSING_CATEGORY_POLICIES}")
    return policy


def unique_items(items: pl.DataFrame, source: str) -> pl.DataFrame:
    """``items`` with exact duplicate rows removed; two different rows for one ``item_id`` are an error."""
    items = items.unique(maintain_order=True)
    duplicated = items.filter(pl.col("item_id").is_duplicated())
    if duplicated.height:
        raise DataError(
            f"{source}: item {duplicated['item_id'][0]!r} has {duplicated.height} different rows; keep one row per item"
        )
    return items


def apply_category_policy(clicks: pl.DataFrame, items: pl.DataFrame | None, policy: str, source: str):
    """Handle clicked items without a category before filtering; returns ``(clicks, report)``.

    ``"drop"`` removes their clicks (so the support and length filters see the log without them);
    ``"error"`` raises a `DataError` naming how many and the first few; ``"unknown"`` keeps them (the catalogue
    maps them to the ``"unknown"`` category and `build_catalog` counts them).
    """
    check_missing_category_policy(policy)
    if policy == "unknown":
        return clicks, category_report(policy)
    uncategorised = is_uncategorised(items)
    missing = clicks.filter(uncategorised)["item_id"].unique(maintain_order=True)
    if policy == "error":
        check_no_missing_category(missing, source)
    kept = clicks.filter(~uncategorised)
    return kept, category_report(policy, n_items=missing.len(), n_clicks=clicks.height - kept.height)


def is_uncategorised(items: pl.DataFrame | None) -> pl.Expr:
    """True for the clicks on items without a category in ``items`` (every click when there is no table)."""
    known = (
        items.filter(pl.col("category").is_not_null())["item_id"] if items is not None else pl.Series([], dtype=pl.Utf8)
    )
    return ~pl.col("item_id").is_in(known.implode())


def check_no_missing_category(missing: pl.Series, source: str) -> None:
    """Raise the ``"error"`` policy's `DataError` unless ``missing`` is empty.

    ``missing``: the clicked items without a category, in file order (the message names the first five).
    """
    if missing.len():
        raise DataError(
            f"{source}: {missing.len()} clicked items have no category (first: {missing.head(5).to_list()}); "
            "add them to the item table, or pass the missing-category option 'unknown' (map them to an "
            "'unknown' category) or 'drop' (drop their clicks)"
        )


def category_report(policy: str, *, n_items: int = 0, n_clicks: int = 0) -> dict[str, object]:
    """The options record of `apply_category_policy`: the policy, and for ``"drop"`` what it dropped (logged)."""
    report: dict[str, object] = {"missing_category": policy}
    if policy != "unknown":
        logger.info("dropped %d clicks on %d items without a category", n_clicks, n_items)
        report.update(items_without_category_dropped=n_items, clicks_dropped=n_clicks)
    return report


def build_catalog(
    item_ids: Sequence[str],
    items: pl.DataFrame | None,
    *,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> tuple[ItemCatalog, list[str], int]:
    """The catalogue of ``item_ids`` (in ``item_idx`` order, without padding) from an item table.

    Items without a category go to the ``"unknown"`` category. Category indices follow the first appearance
    of each category along ``item_idx``.

    Returns:
        ``(catalog, category_ids, n_unknown)``: the catalogue, the raw category ids in index order (without
        padding), and the number of items mapped to ``"unknown"``.
    """
    aligned = pl.DataFrame({"item_id": pl.Series(item_ids, dtype=pl.Utf8)})
    if items is not None:
        aligned = aligned.join(items, on="item_id", how="left", maintain_order="left")
    else:
        aligned = aligned.with_columns(category=pl.lit(None, dtype=pl.Utf8))
    n_unknown = int(aligned["category"].null_count())
    if n_unknown:
        logger.warning("%d items have no category: mapped to the %r category", n_unknown, UNKNOWN_CATEGORY)
    category, category_ids = _codes(aligned["category"].fill_null(UNKNOWN_CATEGORY))
    catalog = ItemCatalog(
        item_category=category,
        n_categories=len(category_ids),
        categorical={name: _codes(aligned[name].cast(pl.Utf8))[0] for name in categorical},
        numeric={
            name: _padded(aligned[name].cast(pl.Float64).fill_null(np.nan), np.float32, np.nan) for name in numeric
        },
        text=("", *aligned["text"].fill_null("").to_list()) if "text" in aligned.columns else None,
    )
    return catalog, category_ids, n_unknown


def _codes(values: pl.Series) -> tuple[np.ndarray, list[str]]:
    # Codes 1.. by first appearance; null -> 0 (missing), and row 0 is padding.
    distinct = values.drop_nulls().unique(maintain_order=True)
    mapping = pl.DataFrame({"value": distinct, "code": np.arange(1, distinct.len() + 1, dtype=np.int64)})
    codes = pl.DataFrame({"value": values}).join(mapping, on="value", how="left", maintain_order="left")["code"]
    return _padded(codes.fill_null(0), np.int64, 0), distinct.to_list()


def _padded(values: pl.Series, dtype: type, pad: float) -> np.ndarray:
    return np.concatenate([[pad], values.to_numpy()]).astype(dtype)
