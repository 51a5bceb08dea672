"""Importer for a generic click log (CSV or Parquet) plus an optional item table.

The log needs a session id, an item id and a timestamp per click; the column names are options. The
preprocessing is the SR-GNN recipe (`hiersrec.data.preprocess`) with every threshold an explicit option:

1. a session's time is its latest click (before any filtering); clicks are ordered by time inside sessions,
   sessions by their time (ties keep file order);
2. items without a category: kept as ``"unknown"``, dropped, or an error (``missing_category``);
3. consecutive repeats of an item: kept (SR-GNN) or dropped (``consecutive_duplicates``);
4. sessions shorter than ``min_session_length``, then clicks on items with fewer than
   ``min_item_support`` clicks, then sessions left too short (once, or until stable);
5. test = the sessions of the last ``test_days`` days (sessions exactly at the split time are dropped, as in
   SR-GNN), or the most recent ``test_fraction`` of sessions;
6. items reindexed by first appearance in train; test clicks on items unseen in train dropped, then test
   sessions shorter than ``min_session_length``.

`read_clicklog` holds the whole log in memory; `hiersrec.data.ingest.streaming` runs the same recipe on logs
larger than memory, with the same result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from hiersrec.data.ingest.assemble import assemble
from hiersrec.data.ingest.items import apply_category_policy, check_missing_category_policy, unique_items
from hiersrec.data.ingest.readers import (
    TIME_UNITS,
    check_separator,
    file_provenance,
    parse_numbers,
    parse_times,
    read_table,
    require_values,
    select_columns,
)
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.preprocess import (
    DUPLICATE_POLICIES,
    drop_consecutive_duplicates,
    drop_unseen_items,
    filter_sessions_and_items,
    filter_short_sessions,
    order_clicks,
    require_sessions,
    session_time_from_last_click,
    split_by_days,
    split_by_fraction,
    traced,
)
from hiersrec.errors import ConfigError

FILTER_HINT = "lower min_item_support / min_session_length"
TRAIN_HINT = "shorten the test period"
TEST_HINT = f"lengthen the test period or {FILTER_HINT}"


@dataclass(frozen=True)
class ClickLogOptions:
    """Column names and preprocessing thresholds of a click-log import (defaults: the SR-GNN recipe)."""

    session_column: str = "session_id"  # click log: session id column
    item_column: str = "item_id"  # click log: item id column
    time_column: str = "timestamp"  # click log: click time column (numbers or datetimes)
    time_unit: str = "s"  # unit of numeric times: s, ms, us, ns
    time_format: str | None = None  # strftime format of text times (default: ISO 8601)
    separator: str = ","  # field separator of text files (both the log and the item table)
    item_id_column: str = "item_id"  # item table: item id column
    category_column: str = "category"  # item table: category column
    text_column: str | None = None  # item table: text column (title...), if any
    categorical_columns: tuple[str, ...] = ()  # item table: extra categorical attributes
    numeric_columns: tuple[str, ...] = ()  # item table: extra numeric attributes
    min_session_length: int = 2  # shorter sessions are dropped
    min_item_support: int = 5  # items with fewer clicks are dropped
    consecutive_duplicates: str = "keep"  # "keep" (SR-GNN) or "drop" repeats of the previous click
    filter_until_stable: bool = False  # repeat the support/length filters until nothing changes
    test_days: float | None = 7.0  # test = sessions of the last test_days days ...
    test_fraction: float | None = None  # ... or the most recent fraction of sessions (set test_days=None)
    missing_category: str = "unknown"  # items without a category: "unknown", "drop" or "error"

    def __post_init__(self) -> None:
        if (self.test_days is None) == (self.test_fraction is None):
            raise ConfigError("give exactly one of test_days and test_fraction")
        if self.test_days is not None and not 0.0 < self.test_days < math.inf:  # NaN fails too
            raise ConfigError(f"test_days must be a finite number > 0, got {self.test_days}")
        if self.test_fraction is not None and not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.min_session_length < 2 or self.min_item_support < 1:
            raise ConfigError("min_session_length must be >= 2 and min_item_support >= 1")
        if self.consecutive_duplicates not in DUPLICATE_POLICIES:
            raise ConfigError(f"consecutive_duplicates must be one of {DUPLICATE_POLICIES}")
        if self.time_unit not in TIME_UNITS:
            raise ConfigError(f"time_unit must be one of {sorted(TIME_UNITS)}")
        check_separator(self.separator)
        click_columns = (self.session_column, self.item_column, self.time_column)
        if len(set(click_columns)) < 3:
            raise ConfigError(f"session_column, item_column and time_column must differ, got {list(click_columns)}")
        check_missing_category_policy(self.missing_category)


def read_clicklog(
    clicks_path: str | Path,
    items_path: str | Path | None = None,
    options: ClickLogOptions | None = None,
    *,
    name: str | None = None,
) -> PreparedDataset:
    """Import and preprocess a click log (module docstring) into a `PreparedDataset`.

    Args:
        clicks_path: the log, ``.parquet`` or text separated by ``options.separator``.
        items_path: the item table (same formats), or None: every item then has the ``"unknown"`` category.
        options: column names and thresholds.
        name: dataset name (default: the log's file name without suffix).

    Raises:
        DataError: a file is missing or empty, lacks a column (the message lists the columns found and the
            option that maps names), has an empty or unparsable value (with its line or row), or no session
            is left after filtering.
    """
    opts = options or ClickLogOptions()
    check_item_table_options(opts, items_path)
    clicks_path = Path(clicks_path)
    clicks = session_time_from_last_click(
        clicks_from_table(read_table(clicks_path, separator=opts.separator), clicks_path, opts)
    )
    items = read_item_table(Path(items_path), opts) if items_path is not None else None
    steps: list[dict[str, object]] = []
    traced(steps, "read", clicks)
    clicks, category_report = apply_category_policy(clicks, items, opts.missing_category, str(clicks_path))
    clicks = drop_consecutive_duplicates(order_clicks(clicks), opts.consecutive_duplicates)
    clicks = filter_sessions_and_items(
        clicks, opts.min_session_length, opts.min_item_support, until_stable=opts.filter_until_stable
    )
    clicks = require_sessions(traced(steps, "filtered", clicks), "", f"{clicks_path}: {FILTER_HINT}")
    if opts.test_days is not None:
        train, test = split_by_days(clicks, opts.test_days)
    else:
        train, test = split_by_fraction(clicks, opts.test_fraction)
    require_sessions(traced(steps, "train", train), "train", f"{clicks_path}: {TRAIN_HINT}")
    test = filter_short_sessions(drop_unseen_items(test, train), opts.min_session_length)
    require_sessions(traced(steps, "test", test), "test", f"{clicks_path}: {TEST_HINT}")
    return assemble(
        train,
        test,
        items,
        name=name or clicks_path.stem,
        options=options_record(opts, category_report),
        provenance=provenance_record(clicks_path, items_path, steps),
        categorical=opts.categorical_columns,
        numeric=opts.numeric_columns,
    )


def check_item_table_options(opts: ClickLogOptions, items_path: str | Path | None) -> None:
    """Raise a `ConfigError` when ``opts`` asks for item-table columns but there is no item table."""
    if items_path is None and (opts.categorical_columns or opts.numeric_columns or opts.text_column):
        raise ConfigError("categorical_columns, numeric_columns and text_column need an item table (items_path)")


def options_record(opts: ClickLogOptions, category_report: dict[str, object]) -> dict[str, object]:
    """The preprocessing options stored with a click-log dataset (before `assemble` adds its counts)."""
    return {"source_format": "clicklog", **asdict(opts), **category_report}


def provenance_record(
    clicks_path: Path, items_path: str | Path | None, steps: list[dict[str, object]]
) -> dict[str, object]:
    """The provenance of a click-log dataset: the source files' sizes and digests, and the recipe's counts."""
    sources = [clicks_path] + ([Path(items_path)] if items_path is not None else [])
    return {"files": file_provenance(sources), "steps": steps}


def clicks_from_table(raw: pl.DataFrame, path: Path, opts: ClickLogOptions, *, first_row: int = 0) -> pl.DataFrame:
    """The click frame of a read log (or of one batch of it), without ``session_time``: values checked, times parsed.

    ``first_row`` is the file row of ``raw``'s first row (see `read_table_batches`): it starts the ``row``
    column and names the row of a bad value.
    """
    columns = {"session_id": opts.session_column, "item_id": opts.item_column, "timestamp": opts.time_column}
    frame = select_columns(
        raw,
        path,
        columns,
        hint="Map names with the options session_column, item_column, time_column "
        "(CLI: --session-column, --item-column, --time-column).",
    )
    # Checked under the file's own column names, so that errors name what the user sees.
    for column in (opts.session_column, opts.item_column):
        require_values(raw, column, path, first_row=first_row)
    timestamp = parse_times(raw, opts.time_column, path, unit=opts.time_unit, fmt=opts.time_format, first_row=first_row)
    return frame.with_columns(
        item_id=pl.col("item_id").cast(pl.Utf8),
        timestamp=timestamp,
        row=pl.int_range(first_row, first_row + pl.len(), dtype=pl.Int64),
    )


def read_item_table(path: Path, opts: ClickLogOptions) -> pl.DataFrame:
    """The item table of a click-log import (see `hiersrec.data.ingest.items`), checked."""
    columns = {"item_id": opts.item_id_column, "category": opts.category_column}
    columns.update({name: name for name in (*opts.categorical_columns, *opts.numeric_columns)})
    if opts.text_column is not None:
        columns["text"] = opts.text_column
    raw = read_table(path, separator=opts.separator)
    items = select_columns(
        raw,
        path,
        columns,
        hint="Map names with the options item_id_column, category_column, text_column "
        "(CLI: --item-id-column, --category-column, --text-column).",
    )
    require_values(raw, opts.item_id_column, path)
    items = items.with_columns(
        pl.col("item_id").cast(pl.Utf8),
        # A blank category (possible in Parquet; text files read it as empty already) is no category.
        pl.col("category").cast(pl.Utf8).str.strip_chars().replace("", None),
        *(parse_numbers(raw, name, path, pl.Float64, allow_missing=True) for name in opts.numeric_columns),
    )
    return unique_items(items, str(path))
