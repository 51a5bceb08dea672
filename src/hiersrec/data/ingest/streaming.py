"""Click logs larger than memory: the click-log recipe out of core, with the same result as `read_clicklog`.

The in-memory importer holds the whole log; this one holds one partition of it at a time. Every step of the
recipe (`hiersrec.data.ingest.clicklog`) only needs the clicks of one session together, except four global
quantities, which are computed from small summaries between passes:

* item support counts (for `filter_rare_items`, once or until stable): the sum of per-partition counts;
* the split time (test days) or the session key that starts the test sessions (test fraction): the latest
  session time, or the ``n_test``-th largest (``session_time``, ``first_row``) key of all sessions;
* the order of sessions: by the key (``session_time``, ``first_row``) of `order_clicks`, where
  ``first_row`` is the session's first row after the category policy, kept as a column, because filters
  later remove rows;
* item indices, by first appearance in train in that order.

The passes, each over files in a temporary folder beside the output:

1. the log is read in batches (`read_table_batches`, checked as `read_table` would) and each click goes to
   a Parquet *bucket* by a hash of its session id, so that every session lies whole in one bucket;
2. per bucket: session times, the category policy, `order_clicks`, `drop_consecutive_duplicates`,
   `filter_short_sessions`; item counts and a sample of session keys are kept;
3. per bucket: `filter_rare_items` with the global counts, `filter_short_sessions`; the clicks go on to
   *range* partitions, cut at session keys taken from the sample, so that range ``r`` holds sessions
   that all come before those of range ``r + 1``; with ``filter_until_stable`` this pass repeats over the
   ranges until no click is removed;
4. per range, in order: sorted by `CLICK_ORDER`, split into train and test, items indexed as they first
   appear in train, test clicks on unseen items dropped, and the sessions appended to the prepared
   dataset (`prepared_writer`). Train sessions all come before test sessions in key order, so the
   vocabulary is complete when the first test session arrives.

The result is the dataset `read_clicklog` gives, down to the bytes of its files: the tests compare the
fingerprints. Memory: one partition (about `BYTES_PER_CLICK` per click; partitions are sized from the
memory limit), one batch of the log, one row group of output sessions, the item table, and the item counts
(a row per distinct item). A single session larger than a partition cannot be split.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hiersrec.data.ingest.assemble import counted_options, index_items, sessions_from_index
from hiersrec.data.ingest.clicklog import (
    FILTER_HINT,
    TEST_HINT,
    TRAIN_HINT,
    ClickLogOptions,
    check_item_table_options,
    clicks_from_table,
    options_record,
    provenance_record,
    read_item_table,
)
from hiersrec.data.ingest.items import category_report, check_no_missing_category, is_uncategorised
from hiersrec.data.ingest.readers import (
    count_rows_estimate,
    read_table_batches,
    row_label,
    text_times_are_numbers,
)
from hiersrec.data.preprocess import (
    CLICK_ORDER,
    count_item_clicks,
    drop_consecutive_duplicates,
    drop_unseen_items,
    filter_rare_items,
    filter_short_sessions,
    order_clicks,
    require_clicks_left,
    session_time_from_last_click,
    split_at_time,
    split_time,
)
from hiersrec.data.storage import PreparedWriter, prepared_writer
from hiersrec.errors import ConfigError, DataError
from hiersrec.files import sibling_temp_dir

logger = logging.getLogger(__name__)

# Peak memory of the in-memory importer per click of the log (2.1 GiB for 10M clicks, imports included).
IN_MEMORY_BYTES_PER_CLICK = 225
# Peak memory per click of one partition while a pass works on it: about 260 bytes measured on the 10M
# benchmark log (benchmarks/prepare_out_of_core.py), plus room for partitions larger than the mean.
BYTES_PER_CLICK = 300
# Memory outside the partitions: Python and its imports (~0.3 GiB), one batch of the log, one row group of
# output sessions, the item table and counts.
RESERVED_BYTES = 768 * 1024**2
BATCH_ROWS = 1_000_000
KEY = ("session_time", "first_row")  # the order of sessions (`order_clicks`)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_KEY_SAMPLES_PER_PARTITION = 4096


def parse_size(text: str) -> int:
    """Bytes of a memory size such as ``"2GiB"``, ``"512MiB"``, ``"2G"`` or ``"1500000000"`` (units of 1024).

    Raises:
        ConfigError: naming the text and the forms accepted.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ConfigError(f"memory size {text!r}: give a number of bytes or one with a unit, such as 2GiB or 512MiB")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def default_memory_limit() -> int:
    """Half of this machine's physical memory: the limit when none is given."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def needs_out_of_core(clicks_path: str | Path, memory_limit: int) -> bool:
    """Whether the in-memory importer would likely need more than ``memory_limit`` bytes for this log.

    The number of clicks is exact for Parquet and estimated from the size and first lines of a text file.
    """
    return count_rows_estimate(clicks_path) * IN_MEMORY_BYTES_PER_CLICK > memory_limit


def prepare_clicklog_out_of_core(
    clicks_path: str | Path,
    out_dir: str | Path,
    items_path: str | Path | None = None,
    options: ClickLogOptions | None = None,
    *,
    name: str | None = None,
    memory_limit: int | None = None,
    partitions: int | None = None,
) -> Path:
    """Import and preprocess a click log as `read_clicklog` does, then `save_prepared` it, out of core.

    Args:
        clicks_path: the log, ``.parquet`` or text separated by ``options.separator``.
        out_dir: the prepared dataset folder to write (as `save_prepared`: new, empty, or replaced atomically).
        items_path: the item table, or None; it is read in memory.
        options: column names and thresholds.
        name: dataset name (default: the log's file name without suffix).
        memory_limit: bytes the import may use (default `default_memory_limit`); sizes the partitions.
        partitions: the number of buckets and of ranges, instead of sizing them from ``memory_limit``
            (tests use it to have several of each on a small log).

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: ``memory_limit`` leaves no room for a partition.
        DataError: as `read_clicklog`. With several bad values in the log, the first bad value of the first
            batch that has one is named (`read_clicklog` checks whole columns in turn).
    """
    opts = options or ClickLogOptions()
    check_item_table_options(opts, items_path)
    clicks_path, out_dir = Path(clicks_path), Path(out_dir)
    budget = _partition_budget(memory_limit or default_memory_limit())
    n_buckets = partitions or max(1, math.ceil(count_rows_estimate(clicks_path) / budget))
    items = read_item_table(Path(items_path), opts) if items_path is not None else None
    with prepared_writer(out_dir) as writer, _work_dir(out_dir) as work:
        run = _Run(clicks_path, opts, items, work)
        steps: list[dict[str, object]] = []
        buckets = run.write_buckets(n_buckets, min(BATCH_ROWS, budget))
        stage, counts, key_sample, report = run.order_and_dedup(buckets, steps)
        n_ranges = partitions or max(1, math.ceil(stage.clicks / budget))
        ranges, counts, totals = run.filter_rare(stage.paths, counts, _range_cuts(key_sample, n_ranges), stage.clicks)
        steps.append({"step": "filtered", "clicks": totals.clicks, "sessions": totals.sessions})
        require_clicks_left(totals.clicks, "", f"{clicks_path}: {FILTER_HINT}")
        test_starts = run.test_start(totals)
        vocab_ids, unseen = run.write_splits(ranges, test_starts, writer, steps)
        vocab, catalog, n_unknown = index_items(
            vocab_ids, items, categorical=opts.categorical_columns, numeric=opts.numeric_columns
        )
        writer.finish(
            name=name or clicks_path.stem,
            vocab=vocab,
            catalog=catalog,
            options=counted_options(options_record(opts, report), n_unknown, unseen),
            provenance=provenance_record(clicks_path, items_path, steps),
        )
    return out_dir


def _partition_budget(memory_limit: int) -> int:
    # Clicks per partition that fit in the memory limit.
    clicks = (memory_limit - RESERVED_BYTES) // BYTES_PER_CLICK
    if clicks < 10_000:
        raise ConfigError(
            f"memory limit {memory_limit / 1024**2:.0f} MiB: the out-of-core import needs more than "
            f"{RESERVED_BYTES / 1024**2:.0f} MiB for itself; give at least 1GiB"
        )
    return clicks


@contextmanager
def _work_dir(out_dir: Path) -> Iterator[Path]:
    # Beside the output (same disk, which must hold about two copies of the log as Parquet); a folder left by
    # a killed import is removed by the next writer of out_dir (claim_target).
    work = sibling_temp_dir(out_dir)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Totals:
    # Clicks, sessions and the latest session time over the partitions of a pass.
    def __init__(self) -> None:
        self.clicks = self.sessions = 0
        self.latest = -math.inf
        self.paths: list[Path] = []
        self.key_files: list[Path] = []

    def add(self, clicks: pl.DataFrame) -> None:
        self.clicks += clicks.height
        self.sessions += clicks["session_id"].n_unique()
        if clicks.height:
            self.latest = max(self.latest, clicks["session_time"].max())


class _Progress:
    # One log line per pass and, on long passes, one every 10 s, so that a run of minutes shows it is alive.
    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, total
        self.started = self.last = time.perf_counter()

    def step(self, done: int, clicks: int) -> None:
        now = time.perf_counter()
        if done == self.total:
            logger.info("%s: %d/%d done, %d clicks, %.1f s", self.what, done, self.total, clicks, now - self.started)
        elif now - self.last > 10:
            logger.info("%s: %d/%d, %d clicks so far, %.1f s", self.what, done, self.total, clicks, now - self.started)
            self.last = now


@contextmanager
def _quiet_steps() -> Iterator[None]:
    # The recipe's steps log what they remove; per partition that would be hundreds of lines (and a count of
    # distinct sessions each): the passes log their totals instead.
    step_logger = logging.getLogger("hiersrec.data.preprocess")
    level = step_logger.level
    step_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        step_logger.setLevel(level)


class _RangeWriter:
    # Appends clicks to range partitions: range r holds the sessions whose key lies in [cuts[r-1], cuts[r]).
    def __init__(self, directory: Path, stem: str, cuts: pl.DataFrame) -> None:
        self.paths = [directory / f"{stem}-{r}.parquet" for r in range(cuts.height + 1)]
        self._writers: dict[int, pq.ParquetWriter] = {}
        at, row = pl.col("session_time"), pl.col("first_row")
        after = [(at > t) | ((at == t) & (row >= r)) for t, r in cuts.iter_rows()]
        self._range = pl.sum_horizontal(after).cast(pl.Int64) if after else pl.lit(0, dtype=pl.Int64)

    def write(self, clicks: pl.DataFrame) -> None:
        parts = clicks.with_columns(_range=self._range).partition_by("_range", as_dict=True, include_key=False)
        for (index,), part in parts.items():
            _append(self._writers, index, self.paths[index], part)

    def close(self) -> list[Path]:
        for writer in self._writers.values():
            writer.close()
        return [path for index, path in enumerate(self.paths) if index in self._writers]


def _append(writers: dict[int, pq.ParquetWriter], index: int, path: Path, part: pl.DataFrame) -> None:
    table = part.to_arrow()
    if index not in writers:
        # lz4: these files are read once or twice and deleted, so speed matters more than size.
        writers[index] = pq.ParquetWriter(path, table.schema, compression="lz4")
    writers[index].write_table(table)


def _range_cuts(key_sample: pl.DataFrame, n_ranges: int) -> pl.DataFrame:
    # n_ranges - 1 session keys that cut the sample into parts of equal size (fewer when keys repeat).
    ordered = key_sample.sort(KEY)
    picks = [ordered.height * r // n_ranges for r in range(1, n_ranges)]
    if not picks or not ordered.height:
        return ordered.clear()
    return ordered.select(pl.all().gather(picks)).unique(maintain_order=True)


def _session_keys(clicks: pl.DataFrame) -> pl.DataFrame:
    # One (session_time, first_row) row per session of an ordered frame.
    starts = (pl.col("session_id") != pl.col("session_id").shift(1)).fill_null(True)
    return clicks.filter(starts).select(KEY)


def _extend_index(index: pl.DataFrame, item_ids: pl.Series) -> pl.DataFrame:
    # The items of item_ids not yet in index get the next indices, in order of first appearance.
    new = item_ids.unique(maintain_order=True)
    new = new.filter(~new.is_in(index["item_id"].implode()))
    first = index.height + 1
    return pl.concat(
        [index, pl.DataFrame({"item_id": new, "item_idx": pl.int_range(first, first + new.len(), eager=True)})]
    )


def _merge_counts(total: pl.DataFrame | None, part: pl.DataFrame) -> pl.DataFrame:
    if total is None:
        return part.with_columns(pl.col("clicks").cast(pl.Int64))
    merged = pl.concat([total, part.with_columns(pl.col("clicks").cast(pl.Int64))])
    return merged.group_by("item_id").agg(pl.col("clicks").sum())


class _Run:
    """The passes of one out-of-core import (module docstring), over files in ``work``."""

    def __init__(self, clicks_path: Path, opts: ClickLogOptions, items: pl.DataFrame | None, work: Path) -> None:
        self.path, self.opts, self.items, self.work = clicks_path, opts, items, work

    def write_buckets(self, n_buckets: int, batch_rows: int) -> list[Path]:
        """Pass 1: the log, checked and parsed batch by batch, into buckets by a hash of the session id."""
        writers: dict[int, pq.ParquetWriter] = {}
        paths = [self.work / f"bucket-{b}.parquet" for b in range(n_buckets)]
        started, rows, times_are_numbers = time.perf_counter(), 0, None
        try:
            for batch in read_table_batches(self.path, separator=self.opts.separator, batch_rows=batch_rows):
                clicks = clicks_from_table(batch, self.path, self.opts, first_row=rows)
                times_are_numbers = self._check_time_kind(batch, rows, times_are_numbers)
                rows += batch.height
                bucket = (pl.col("session_id").hash(seed=0) % n_buckets).cast(pl.Int64).alias("_bucket")
                parts = clicks.with_columns(bucket).partition_by("_bucket", as_dict=True, include_key=False)
                for (index,), part in parts.items():
                    _append(writers, index, paths[index], part)
                if time.perf_counter() - started > 10:
                    logger.info("reading %s: %d rows so far", self.path, rows)
                    started = time.perf_counter()
        finally:
            for writer in writers.values():
                writer.close()
        logger.info("read %d rows of %s into %d buckets", rows, self.path, len(writers))
        return [path for index, path in enumerate(paths) if index in writers]

    def _check_time_kind(self, batch: pl.DataFrame, first_row: int, numbers: bool | None) -> bool | None:
        # parse_times reads a text column as numbers only when every value is one; a batch decides for itself,
        # so batches of numbers and batches of datetimes are an error here as they are for the whole column.
        column = batch[self.opts.time_column]
        if self.opts.time_format is not None or column.dtype != pl.Utf8:
            return None
        batch_numbers = text_times_are_numbers(column)
        if numbers is not None and batch_numbers != numbers:
            kinds = ("numbers", "datetimes") if numbers else ("datetimes", "numbers")
            raise DataError(
                f"{self.path}: column {self.opts.time_column!r} holds {kinds[0]} up to "
                f"{row_label(self.path, first_row - 1)} and {kinds[1]} in rows after it; give every time "
                "in one form"
            )
        return batch_numbers

    def order_and_dedup(
        self, buckets: list[Path], steps: list[dict[str, object]]
    ) -> tuple[_Totals, pl.DataFrame, pl.DataFrame, dict[str, object]]:
        """Pass 2: per bucket, the recipe up to the first length filter; item counts and a sample of keys."""
        opts, policy = self.opts, self.opts.missing_category
        read, stage = _Totals(), _Totals()
        counts, samples, missing, dropped = None, [], [], 0
        uncategorised = is_uncategorised(self.items)
        progress = _Progress("ordering sessions", len(buckets))
        with _quiet_steps():
            for done, bucket in enumerate(buckets, start=1):
                clicks = pl.read_parquet(bucket)
                read.clicks += clicks.height
                read.sessions += clicks["session_id"].n_unique()
                clicks = session_time_from_last_click(clicks)
                if policy != "unknown":
                    missing.append(clicks.filter(uncategorised).group_by("item_id").agg(pl.col("row").min()))
                    kept = clicks.filter(~uncategorised)
                    dropped, clicks = dropped + clicks.height - kept.height, kept
                clicks = order_clicks(clicks, keep_first_row=True)
                clicks = filter_short_sessions(
                    drop_consecutive_duplicates(clicks, opts.consecutive_duplicates), opts.min_session_length
                )
                path = self.work / f"stage-{done}.parquet"
                clicks.write_parquet(path, compression="lz4")
                bucket.unlink()
                stage.add(clicks)
                stage.paths.append(path)
                counts = _merge_counts(counts, count_item_clicks(clicks))
                keys = _session_keys(clicks)
                samples.append(keys.gather_every(max(1, keys.height // _KEY_SAMPLES_PER_PARTITION)))
                progress.step(done, stage.clicks)
        steps.append({"step": "read", "clicks": read.clicks, "sessions": read.sessions})
        report = category_report(policy)
        if policy != "unknown":
            first_seen = pl.concat(missing).group_by("item_id").agg(pl.col("row").min()).sort("row")["item_id"]
            if policy == "error":
                check_no_missing_category(first_seen, str(self.path))
            report = category_report(policy, n_items=first_seen.len(), n_clicks=dropped)
        return stage, counts, pl.concat(samples), report

    def filter_rare(
        self, sources: list[Path], counts: pl.DataFrame, cuts: pl.DataFrame, before: int
    ) -> tuple[list[Path], pl.DataFrame, _Totals]:
        """Pass 3: rare items and short sessions by global counts, into ranges; repeated until stable if asked."""
        opts = self.opts
        for round_ in range(1, 1_000_000):
            ranges = _RangeWriter(self.work, f"range{round_}", cuts)
            totals, next_counts = _Totals(), None
            progress = _Progress(f"filtering items, round {round_}", len(sources))
            with _quiet_steps():
                for done, source in enumerate(sources, start=1):
                    clicks = filter_rare_items(pl.read_parquet(source), opts.min_item_support, item_counts=counts)
                    clicks = filter_short_sessions(clicks, opts.min_session_length)
                    ranges.write(clicks)
                    source.unlink()
                    totals.add(clicks)
                    next_counts = _merge_counts(next_counts, count_item_clicks(clicks))
                    if opts.test_fraction is not None:
                        totals.key_files.append(self._write_keys(_session_keys(clicks), done))
                    progress.step(done, totals.clicks)
            sources, counts = ranges.close(), next_counts
            if not opts.filter_until_stable or totals.clicks == before:
                return sources, counts, totals
            before = totals.clicks
        raise AssertionError("unreachable: every round removes clicks or stops")

    def _write_keys(self, keys: pl.DataFrame, index: int) -> Path:
        path = self.work / f"keys-{index}.parquet"
        keys.write_parquet(path)
        return path

    def test_start(self, totals: _Totals) -> float | tuple[float, int] | None:
        """The split time (test days), or the key of the first test session (test fraction; None: no test)."""
        if self.opts.test_days is not None:
            return split_time(totals.latest, self.opts.test_days)
        # split_by_fraction's count; then the n_test-th largest session key, streamed over the key files.
        n_test = int(round(totals.sessions * self.opts.test_fraction))
        if n_test == 0:
            return None
        latest = pl.scan_parquet(totals.key_files).top_k(n_test, by=list(KEY)).sort(KEY).head(1)
        return tuple(latest.collect(engine="streaming").row(0))

    def write_splits(
        self,
        ranges: list[Path],
        test_starts: float | tuple[float, int] | None,
        writer: PreparedWriter,
        steps: list[dict[str, object]],
    ) -> tuple[list[str], int]:
        """Pass 4: ranges in session order, split, indexed and appended to ``writer``; returns (item ids, unseen)."""
        opts = self.opts
        index = pl.DataFrame(schema={"item_id": pl.Utf8, "item_idx": pl.Int64})
        train_totals, test_totals, unseen, at_split = _Totals(), _Totals(), 0, 0
        progress = _Progress("writing sessions", len(ranges))
        with _quiet_steps():
            for done, source in enumerate(ranges, start=1):
                clicks = pl.read_parquet(source).sort(CLICK_ORDER)
                train, test = self._split(clicks, test_starts)
                at_split += clicks.height - train.height - test.height
                if train.height:
                    index = _extend_index(index, train["item_id"])
                    writer.append("train", sessions_from_index(train, index))
                    train_totals.add(train)
                test = filter_short_sessions(drop_unseen_items(test, index), opts.min_session_length)
                if test.height:
                    unseen += test.filter(~pl.col("item_id").is_in(index["item_id"].implode())).height
                    writer.append("test", sessions_from_index(test, index))
                    test_totals.add(test)
                source.unlink()
                progress.step(done, train_totals.clicks + test_totals.clicks)
        if at_split:
            logger.info("split_by_days: %d clicks of sessions exactly at the split time dropped", at_split)
        steps.append({"step": "train", "clicks": train_totals.clicks, "sessions": train_totals.sessions})
        require_clicks_left(train_totals.clicks, "train", f"{self.path}: {TRAIN_HINT}")
        steps.append({"step": "test", "clicks": test_totals.clicks, "sessions": test_totals.sessions})
        require_clicks_left(test_totals.clicks, "test", f"{self.path}: {TEST_HINT}")
        return index["item_id"].to_list(), unseen

    def _split(
        self, clicks: pl.DataFrame, test_starts: float | tuple[float, int] | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        if self.opts.test_days is not None:
            return split_at_time(clicks, test_starts)
        if test_starts is None:
            return clicks, clicks.clear()
        at, row = pl.col("session_time"), pl.col("first_row")
        start_time, start_row = test_starts
        is_test = (at > start_time) | ((at == start_time) & (row >= start_row))
        return clicks.filter(~is_test), clicks.filter(is_test)
