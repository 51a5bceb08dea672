"""Importer for raw DIGINETICA (CIKM Cup 2016 Track 2) with the standard SR-GNN preprocessing, exactly.

Input folder (``;``-separated, header on line 1):

* ``train-item-views.csv``: ``sessionId;userId;itemId;timeframe;eventdate`` (SR-GNN's renamed headers
  ``session_id``/``user_id``/``item_id`` are accepted too);
* ``product-categories.csv``: ``itemId;categoryId``;
* ``products.csv`` (optional): ``itemId;pricelog2;product.name.tokens`` (comma-separated name tokens).

The recipe follows ``datasets/preprocess.py`` of CRIPAC-DIG/SR-GNN line by line:

1. the session date is the ``eventdate`` of the session's last row *in file order* (SR-GNN assigns it when
   the session id changes while reading), read as midnight UTC;
2. clicks are sorted by ``timeframe`` inside each session (stable: ties keep file order);
3. sessions of length 1 are dropped; then clicks on items with fewer than 5 clicks (counted over the
   remaining sessions); then sessions left shorter than 2 (one pass, no iteration);
4. ``split = max date - 7 days``; train = sessions dated before it, test = after it: the sessions dated
   exactly on ``split`` are in neither (SR-GNN's strict comparisons, the "split-date quirk");
5. sessions are sorted by date (stable: ties keep the order of first appearance in the file); items are
   reindexed by first appearance in the train sessions in that order;
6. test clicks on items unseen in train are dropped, then test sessions shorter than 2.

SR-GNN keeps consecutive repeats, so this does too. Differences: SR-GNN's ``time.mktime`` reads dates in the
machine's local time zone; we use UTC (no daylight-saving shifts of the split). Items without a category row
are mapped to an ``"unknown"`` category by default (counted in the options), or dropped before step 3, or
rejected. Click timestamps are the session date plus ``timeframe`` milliseconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from hiersrec.data.ingest.assemble import assemble
from hiersrec.data.ingest.items import apply_category_policy, unique_items
from hiersrec.data.ingest.readers import (
    file_provenance,
    parse_numbers,
    parse_times,
    read_table,
    require_values,
    select_columns,
)
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.preprocess import (
    drop_unseen_items,
    filter_sessions_and_items,
    filter_short_sessions,
    order_clicks,
    require_sessions,
    split_by_days,
    traced,
)

logger = logging.getLogger(__name__)

CLICKS_FILE = "train-item-views.csv"
CATEGORIES_FILE = "product-categories.csv"
PRODUCTS_FILE = "products.csv"
MIN_SESSION_LENGTH = 2
MIN_ITEM_SUPPORT = 5
TEST_DAYS = 7
_CLICK_COLUMNS = {
    "session_id": ("sessionId", "session_id"),
    "item_id": ("itemId", "item_id"),
    "timeframe": ("timeframe",),
    "eventdate": ("eventdate",),
}


def read_diginetica(
    directory: str | Path, *, missing_category: str = "unknown", name: str = "diginetica"
) -> PreparedDataset:
    """Read the raw DIGINETICA files in ``directory`` and apply the SR-GNN recipe (module docstring).

    Args:
        directory: folder with ``train-item-views.csv``, ``product-categories.csv`` and optionally
            ``products.csv`` (price as ``numeric["pricelog2"]``, name tokens as the item text).
        missing_category: ``"unknown"``, ``"drop"`` or ``"error"`` for clicked items without a category.
        name: dataset name.

    Raises:
        DataError: a file is missing, empty, lacks a column or has an unparsable value (named with its line),
            or no session is left.
    """
    directory = Path(directory)
    clicks_path = directory / CLICKS_FILE
    clicks = read_clicks(clicks_path)
    items = read_items(directory / CATEGORIES_FILE, directory / PRODUCTS_FILE)
    steps: list[dict[str, object]] = []
    traced(steps, "read", clicks)
    clicks, category_report = apply_category_policy(clicks, items, missing_category, str(clicks_path))
    clicks = filter_sessions_and_items(order_clicks(clicks), MIN_SESSION_LENGTH, MIN_ITEM_SUPPORT)
    hint = f"{clicks_path} holds too few sessions of items clicked at least {MIN_ITEM_SUPPORT} times"
    train, test = split_by_days(require_sessions(traced(steps, "filtered", clicks), "", hint), TEST_DAYS)
    require_sessions(traced(steps, "train", train), "train", f"{clicks_path} covers no more than {TEST_DAYS} days")
    test = filter_short_sessions(drop_unseen_items(test, train), MIN_SESSION_LENGTH)
    require_sessions(traced(steps, "test", test), "test", f"{clicks_path} has no test session of train items")
    sources = [p for p in (clicks_path, directory / CATEGORIES_FILE, directory / PRODUCTS_FILE) if p.is_file()]
    return assemble(
        train,
        test,
        items,
        name=name,
        options={
            "source_format": "diginetica_raw",
            "recipe": "srgnn",
            "min_session_length": MIN_SESSION_LENGTH,
            "min_item_support": MIN_ITEM_SUPPORT,
            "test_days": TEST_DAYS,
            "consecutive_duplicates": "keep",
            **category_report,
        },
        provenance={"source": str(directory.resolve()), "files": file_provenance(sources), "steps": steps},
        numeric=["pricelog2"] if "pricelog2" in items.columns else [],
    )


def read_clicks(path: Path) -> pl.DataFrame:
    """``train-item-views.csv`` as a click frame with SR-GNN's session dates (see the module docstring)."""
    raw = read_table(path, separator=";")
    mapping = {ours: next((c for c in names if c in raw.columns), names[0]) for ours, names in _CLICK_COLUMNS.items()}
    frame = select_columns(
        raw, path, mapping, hint="A DIGINETICA click file has the header sessionId;userId;itemId;timeframe;eventdate"
    )
    for ours in ("session_id", "item_id"):
        require_values(raw, mapping[ours], path)  # under the file's own name, as the user sees it
    date = parse_times(raw, mapping["eventdate"], path, fmt="%Y-%m-%d")
    timeframe = parse_numbers(raw, mapping["timeframe"], path, pl.Int64)
    return (
        frame.select("session_id", "item_id")
        .with_columns(date=date, timeframe=timeframe, row=pl.int_range(pl.len(), dtype=pl.Int64))
        # The date of the session's last row in file order: ``last`` keeps frame (= file) order.
        .with_columns(session_time=pl.col("date").last().over("session_id"))
        .with_columns(timestamp=pl.col("session_time") + pl.col("timeframe") * 1e-3)
        .drop("date", "timeframe")
    )


def read_items(categories_path: Path, products_path: Path) -> pl.DataFrame:
    """The item table: ``product-categories.csv`` joined with ``products.csv`` when that file exists."""
    hint = "A DIGINETICA category file has the header itemId;categoryId"
    raw = read_table(categories_path, separator=";")
    categories = select_columns(raw, categories_path, {"item_id": "itemId", "category": "categoryId"}, hint=hint)
    require_values(raw, "itemId", categories_path)
    items = unique_items(categories, str(categories_path))
    if not products_path.is_file():
        return items
    raw = read_table(products_path, separator=";")
    require_values(raw, "itemId", products_path)
    products = select_columns(
        raw,
        products_path,
        {"item_id": "itemId", "pricelog2": "pricelog2", "text": "product.name.tokens"},
        hint="A DIGINETICA products file has the header itemId;pricelog2;product.name.tokens",
    ).with_columns(
        pricelog2=parse_numbers(raw, "pricelog2", products_path, pl.Float64, allow_missing=True),
        text=pl.col("text").str.replace_all(",", " "),
    )
    products = unique_items(products, str(products_path))
    return items.join(products, on="item_id", how="full", coalesce=True, maintain_order="left")
