"""Vectorised preprocessing steps on a click frame, the building blocks of the SR-GNN recipe.

Every step is a pure function of Polars DataFrames (no loop over rows) and logs how many clicks and sessions
it removed. A *click frame* has the columns:

* ``session_id``: any dtype; a session's clicks form one contiguous block once `order_clicks` has run;
* ``item_id``: string;
* ``timestamp``: float64 seconds since the epoch of the click (orders clicks inside a session);
* ``session_time``: float64 seconds, the session's own date (orders sessions and splits train/test);
* ``row``: int64 position in the source file (breaks ties, as SR-GNN's stable sorts do).

The SR-GNN recipe (Wu et al. 2019, ``datasets/preprocess.py``) is, in order: `order_clicks`;
`filter_short_sessions` (length 1); `filter_rare_items` (fewer than 5 clicks); `filter_short_sessions`
(fewer than 2 left); `split_by_days`; then the importer reindexes items by first appearance in train,
`drop_unseen_items` in test and `filter_short_sessions` again on test. It makes one pass of the two filters;
`filter_sessions_and_items` can also repeat them until nothing changes.
"""

from __future__ import annotations

import logging

import polars as pl

from hiersrec.errors import DataError

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
DUPLICATE_POLICIES = ("keep", "drop")
# The order `order_clicks` gives: sessions by date then first row, clicks by time then row (a total order).
CLICK_ORDER = ("session_time", "first_row", "timestamp", "row")


def counts(clicks: pl.DataFrame) -> dict[str, int]:
    """Number of clicks and sessions of a click frame (distinct items are left out: slow on 10M string ids)."""
    return {"clicks": clicks.height, "sessions": clicks["session_id"].n_unique()}


def traced(steps: list[dict[str, object]], step: str, clicks: pl.DataFrame) -> pl.DataFrame:
    """Append ``{"step": step, **counts(clicks)}`` to ``steps`` (the recipe's record in the provenance)."""
    steps.append({"step": step, **counts(clicks)})
    return clicks


def _logged(step: str, before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    if logger.isEnabledFor(logging.INFO):
        removed_sessions = before["session_id"].n_unique() - after["session_id"].n_unique()
        logger.info("%s: removed %d clicks, %d sessions", step, before.height - after.height, removed_sessions)
    return after


def session_time_from_last_click(clicks: pl.DataFrame) -> pl.DataFrame:
    """Set ``session_time`` to the time of each session's latest click (call before any filtering)."""
    return clicks.with_columns(session_time=pl.col("timestamp").max().over("session_id"))


def order_clicks(clicks: pl.DataFrame, *, keep_first_row: bool = False) -> pl.DataFrame:
    """Sort sessions by ``session_time`` and clicks by ``timestamp`` inside each session (`CLICK_ORDER`).

    Ties keep file order, as SR-GNN's stable sorts do: sessions with the same date by their first row,
    clicks with the same time by their row. Afterwards each session is one contiguous block of rows.

    ``keep_first_row`` keeps the ``first_row`` column (each session's first row at this point), so that parts
    of the frame can be put back in this order after filters removed rows (the out-of-core path).
    """
    first_row = pl.col("row").min().over("session_id").alias("first_row")
    if keep_first_row:
        return clicks.with_columns(first_row).sort(CLICK_ORDER)
    return clicks.sort([first_row if key == "first_row" else pl.col(key) for key in CLICK_ORDER])


def drop_consecutive_duplicates(clicks: pl.DataFrame, policy: str = "drop") -> pl.DataFrame:
    """Drop a click on the same item as the click just before it in its session (``policy="drop"``).

    ``policy="keep"`` returns the frame unchanged (SR-GNN keeps repeats). Needs `order_clicks` first.

    Example: session ``[a, a, b, a]`` becomes ``[a, b, a]``.
    """
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"unknown consecutive-duplicate policy {policy!r}; use one of {DUPLICATE_POLICIES}")
    if policy == "keep":
        return clicks
    repeat = (pl.col("item_id") == pl.col("item_id").shift(1)) & (pl.col("session_id") == pl.col("session_id").shift(1))
    return _logged("drop_consecutive_duplicates", clicks, clicks.filter(~repeat.fill_null(False)))


def filter_short_sessions(clicks: pl.DataFrame, min_length: int) -> pl.DataFrame:
    """Keep the sessions with at least ``min_length`` clicks."""
    kept = clicks.filter(pl.len().over("session_id") >= min_length)
    return _logged(f"filter_short_sessions(<{min_length})", clicks, kept)


def filter_rare_items(
    clicks: pl.DataFrame, min_support: int, *, item_counts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Drop the clicks on items clicked fewer than ``min_support`` times in the frame (sessions may shrink).

    ``item_counts`` (`count_item_clicks` of a whole log of which ``clicks`` is one part) counts over that log
    instead: the out-of-core path filters each of its buckets by the counts over all of them.
    """
    if item_counts is None:
        kept = clicks.filter(pl.len().over("item_id") >= min_support)
    else:
        supported = item_counts.filter(pl.col("clicks") >= min_support)["item_id"]
        kept = clicks.filter(pl.col("item_id").is_in(supported.implode()))
    return _logged(f"filter_rare_items(<{min_support})", clicks, kept)


def count_item_clicks(clicks: pl.DataFrame) -> pl.DataFrame:
    """Clicks per item: columns ``item_id`` and ``clicks`` (``u32``), one row per item, in no set order."""
    return clicks.group_by("item_id").agg(clicks=pl.len())


def filter_sessions_and_items(
    clicks: pl.DataFrame, min_length: int, min_support: int, *, until_stable: bool = False
) -> pl.DataFrame:
    """SR-GNN's filters: short sessions, then rare items, then sessions left too short.

    With ``until_stable`` the last two are repeated until no click is removed, so that every remaining
    item has ``min_support`` clicks and every session ``min_length`` clicks (SR-GNN stops after one pass,
    which can leave items under the support threshold).
    """
    clicks = filter_short_sessions(clicks, min_length)
    while True:
        before = clicks.height
        clicks = filter_short_sessions(filter_rare_items(clicks, min_support), min_length)
        if not until_stable or clicks.height == before:
            return clicks


def split_by_days(clicks: pl.DataFrame, days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test): test holds the sessions of the last ``days`` days by ``session_time``.

    SR-GNN's split-date quirk is kept: with ``split = max(session_time) - days * 86400``, train is
    ``session_time < split`` and test ``session_time > split``, so sessions exactly at ``split`` (with day
    dates: the whole day ``days`` before the last one) belong to neither and are dropped (logged).
    """
    if clicks.height == 0:
        raise DataError("no session left to split into train and test; lower the filtering thresholds")
    return split_at_time(clicks, split_time(clicks["session_time"].max(), days))


def split_time(latest: float, days: float) -> float:
    """The time that `split_by_days` splits at: ``days`` days before ``latest``, the latest ``session_time``."""
    return latest - days * SECONDS_PER_DAY


def split_at_time(clicks: pl.DataFrame, split: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test) of `split_by_days` at the time ``split``: before it, after it (sessions at it dropped)."""
    train = clicks.filter(pl.col("session_time") < split)
    test = clicks.filter(pl.col("session_time") > split)
    dropped = clicks.height - train.height - test.height
    if dropped:
        sessions = clicks.filter(pl.col("session_time") == split)["session_id"].n_unique()
        logger.info("split_by_days: %d sessions (%d clicks) exactly at the split time dropped", sessions, dropped)
    return train, test


def split_by_fraction(clicks: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test): test holds the most recent ``fraction`` of sessions (rounded). Needs `order_clicks`."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {fraction}")
    sessions = clicks["session_id"].unique(maintain_order=True)
    n_test = int(round(sessions.len() * fraction))
    test_sessions = sessions.tail(n_test)
    is_test = pl.col("session_id").is_in(test_sessions.implode())
    return clicks.filter(~is_test), clicks.filter(is_test)


def drop_unseen_items(test: pl.DataFrame, train: pl.DataFrame) -> pl.DataFrame:
    """Drop the test clicks on items that never occur in ``train``."""
    kept = test.filter(pl.col("item_id").is_in(train["item_id"].unique().implode()))
    return _logged("drop_unseen_items", test, kept)


def require_sessions(clicks: pl.DataFrame, what: str, hint: str) -> pl.DataFrame:
    """Raise a `DataError` naming ``what`` and the fix ``hint`` when ``clicks`` is empty; else return it."""
    require_clicks_left(clicks.height, what, hint)
    return clicks


def require_clicks_left(n_clicks: int, what: str, hint: str) -> None:
    """`require_sessions` given the number of clicks left (of a log that is not in memory)."""
    if n_clicks == 0:
        raise DataError(f"no {what + ' ' if what else ''}session left after filtering; {hint}")
