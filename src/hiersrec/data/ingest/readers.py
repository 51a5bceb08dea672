"""Reading raw input tables (CSV/TSV/Parquet) with one clear `DataError` per problem.

Every error is one line that names the file, the column or the row, and the fix: a missing or unreadable
file, an empty file, text that is not UTF-8, a row with more or fewer fields than the header, a quote that
never closes, a column named twice in the header, missing columns (with the columns found and the option
that maps names), a column of lists, or an unparsable, empty or out-of-range value (with its line number
for text files, its 1-based row for Parquet). Quoted values and parser messages are cut to 200 characters.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hiersrec.data.messages import excerpt, one_line
from hiersrec.data.storage import sha256_file
from hiersrec.errors import ConfigError, DataError

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# Times must be datetimes polars and Python can represent: from 0001-01-01 to 9999-12-31 23:59:59 UTC.
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800.0, 253_402_300_799.0
# ISO 8601 variants read without a format option (fractional seconds optional).
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d",
)


def check_separator(separator: str) -> str:
    """Return ``separator`` when it can separate fields (one single-byte character, not a quote or newline).

    Raises:
        ConfigError: naming the separator given.
    """
    if len(separator.encode()) != 1 or separator in '"\r\n':
        raise ConfigError(
            f"field separator {separator!r}: give one single-byte character other than a quote or a newline, "
            "such as ',', ';', '|' or a tab"
        )
    return separator


def read_table(path: str | Path, *, separator: str = ",") -> pl.DataFrame:
    """Read a whole CSV/TSV file as string columns (header required), or a Parquet file with its types.

    Text files are read as UTF-8 without type inference so that parsing errors can name their line
    (`parse_numbers`).

    Raises:
        ConfigError: ``separator`` cannot separate fields (`check_separator`).
        DataError: the file is missing, unreadable, empty, has a header but no rows, names a column twice, or
            (text) is not UTF-8, has a row with another number of fields than the header or an unclosed quote.
    """
    path, quote_char = _check_table(Path(path), separator)
    with _read_errors(path, separator, quote_char):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, separator=separator, infer_schema=False, quote_char=quote_char)
    if frame.height == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


def read_table_batches(
    path: str | Path, *, separator: str = ",", batch_rows: int = 1_000_000
) -> Iterator[pl.DataFrame]:
    """`read_table` in consecutive batches of about ``batch_rows`` rows, in file order, for files beyond memory.

    The batches together are the frame `read_table` returns (same column types, same checks and errors),
    read by Polars' streaming engine.

    Raises:
        ConfigError, DataError: as `read_table`; a problem late in the file is raised when its batch is read.
    """
    path, quote_char = _check_table(Path(path), separator)
    if path.suffix == ".parquet":
        scan = pl.scan_parquet(path)
    else:
        scan = pl.scan_csv(path, separator=separator, infer_schema=False, quote_char=quote_char)
    rows = 0
    with _read_errors(path, separator, quote_char):
        for batch in scan.collect_batches(chunk_size=batch_rows, engine="streaming"):
            rows += batch.height
            yield batch
    if rows == 0:
        raise DataError(f"{path}: the file has a header but no rows")


def count_rows_estimate(path: str | Path) -> int:
    """The number of data rows of a table file: exact for Parquet, from the size and first lines for text.

    0 for a file that cannot be read: the reader then says why (`read_table`).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    if path.suffix == ".parquet":
        try:
            return pq.read_metadata(path).num_rows
        except (OSError, ValueError):
            return 0
    with open(path, "rb") as handle:
        handle.readline()  # the header
        sample = handle.read(1 << 20)
    lines = sample.count(b"\n")
    if not lines:
        return 1 if sample.strip() else 0
    return max(1, round(path.stat().st_size * lines / len(sample)))


def _check_table(path: Path, separator: str) -> tuple[Path, str | None]:
    # The checks of read_table before any row is read; returns the path and the quote character to parse with.
    if not path.is_file():
        raise DataError(f"{path}: {'a folder, not a file' if path.is_dir() else 'file not found'}")
    parquet = path.suffix == ".parquet"
    # Tab-separated files (RecBole, SR-GNN) carry raw text with quotes in it: no quoting there.
    quote_char = None if parquet or separator == "\t" else '"'
    if not parquet:
        check_separator(separator)
    with _read_errors(path, separator, quote_char):
        names = pq.read_schema(path).names if parquet else _header(path, separator, quote_char)
        if not parquet and not names and path.stat().st_size == 0:
            raise pl.exceptions.NoDataError("empty file")
        _refuse_repeated_names(names, path)
    return path, quote_char


@contextmanager
def _read_errors(path: Path, separator: str, quote_char: str | None) -> Iterator[None]:
    # Reader failures become one DataError naming the file and, for text, the line at fault.
    try:
        yield
    except pl.exceptions.NoDataError as error:
        raise DataError(f"{path}: the file is empty") from error
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        parquet = path.suffix == ".parquet"
        found = None if parquet else _text_problem(path, separator, quote_char)
        if found is None:
            found = f"cannot be read as a {_kind(path, separator)} file ({one_line(error)})"
        raise DataError(f"{path}: {found}") from error


def select_columns(frame: pl.DataFrame, path: str | Path, mapping: dict[str, str], *, hint: str) -> pl.DataFrame:
    """The columns named by ``mapping`` (our name -> the file's name), renamed to our names.

    Raises:
        DataError: naming the missing columns, the columns found, and ``hint`` (how to map names); or a
            column that holds lists or records rather than one value per row (Parquet).
    """
    missing = [source for source in mapping.values() if source not in frame.columns]
    if missing:
        if len(frame.columns) == 1 and any(sep in frame.columns[0] for sep in ",;\t|"):
            hint += " The header was read as one column: is the field separator right (--separator)?"
        raise DataError(f"{path}: missing column(s) {missing}; found {one_line(frame.columns)}. {hint}")
    for source in mapping.values():
        dtype = frame.schema[source]
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
            raise DataError(f"{path}: column {source!r} holds {dtype} values; expected one text or number per row")
    return frame.select([pl.col(source).alias(ours) for ours, source in mapping.items()])


def require_values(frame: pl.DataFrame, column: str, path: str | Path, *, first_row: int = 0) -> None:
    """Raise a `DataError` naming the first row whose ``column`` is empty (null, blank text, or NaN).

    ``first_row`` is the file row of the frame's first row (a batch of `read_table_batches`), so that the
    error names the row of the file.
    """
    values = frame[column]
    if values.dtype.is_float():
        values = values.fill_nan(None)
    elif values.dtype == pl.Utf8:
        values = values.set((values.str.strip_chars() == "").fill_null(False), None)
    _raise_on_failures(values, values, column, path, "a value", first_row=first_row)


def parse_numbers(
    frame: pl.DataFrame, column: str, path: str | Path, dtype: type[pl.DataType], *, allow_missing: bool = False
) -> pl.Series:
    """``frame[column]`` cast to ``dtype`` (Int64 or Float64); a value that does not parse is an error.

    Empty values are errors too, unless ``allow_missing`` (they stay null; ``"NA"`` and ``"nan"`` count as
    empty then, as NaN). Infinite values are errors.

    Raises:
        DataError: naming the first unparsable or infinite value and its line (text) or row (Parquet).
    """
    source = frame[column]
    if allow_missing and source.dtype == pl.Utf8:
        source = source.str.strip_chars().replace({"": None, "NA": None})
    parsed = (source.str.strip_chars() if source.dtype == pl.Utf8 else source).cast(dtype, strict=False)
    if dtype == pl.Float64:
        nan = parsed.is_nan().fill_null(False)
        if allow_missing:  # NaN is how the catalogue stores a missing number
            source, parsed = source.set(nan, None), parsed.set(nan, None)
        # Marked as failures (null) so that the first one is reported with its line.
        parsed = parsed.set((parsed.is_infinite() | parsed.is_nan()).fill_null(False), None)
    expected = "a whole number" if dtype == pl.Int64 else "a finite number"
    _raise_on_failures(source, parsed, column, path, expected, allow_missing=allow_missing)
    return parsed.rename(column)


def parse_times(
    frame: pl.DataFrame,
    column: str,
    path: str | Path,
    *,
    unit: str = "s",
    fmt: str | None = None,
    first_row: int = 0,
) -> pl.Series:
    """``frame[column]`` as float64 seconds since the epoch.

    Numbers are read in ``unit`` (``"s"``, ``"ms"``, ``"us"``, ``"ns"``); datetime columns as they are (naive
    ones as UTC); text either as numbers or as datetimes (ISO 8601, or ``fmt`` in strftime notation), as
    most of its values are: a value of the other kind is the one reported. Every time must be present and
    fall between the years 1 and 9999 (``nan``, ``inf`` and ``1e30`` do not). ``first_row``: as in
    `require_values`.

    Raises:
        DataError: naming the first value that is empty, does not parse or is out of range, its line or row,
            and the options to use.
    """
    if unit not in TIME_UNITS:
        raise DataError(f"unknown time unit {unit!r}; use one of {sorted(TIME_UNITS)}")
    require_values(frame, column, path, first_row=first_row)
    source = frame[column]
    if source.dtype == pl.Date:
        source = source.cast(pl.Datetime("us"))
    if isinstance(source.dtype, pl.Datetime):
        seconds = source.dt.epoch("us").cast(pl.Float64) * 1e-6
    elif source.dtype.is_numeric():
        seconds = source.cast(pl.Float64) * TIME_UNITS[unit]
    else:
        seconds = _text_times(source, column, path, unit, fmt, first_row)
    in_range = seconds.is_between(_FIRST_SECOND, _LAST_SECOND) & ~seconds.is_nan()
    _raise_on_failures(
        source,
        seconds.set(~in_range, None),
        column,
        path,
        f"a finite time between the years 1 and 9999 (numbers count {_UNIT_NAMES[unit]} since 1970-01-01 UTC)",
        first_row=first_row,
    )
    return seconds


def text_times_are_numbers(source: pl.Series) -> bool:
    """Whether `parse_times` reads this text column as numbers (every value one) rather than as datetimes."""
    return source.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False).null_count() == 0


def _text_times(
    source: pl.Series, column: str, path: str | Path, unit: str, fmt: str | None, first_row: int
) -> pl.Series:
    text = source.cast(pl.Utf8).str.strip_chars()
    as_number = text.cast(pl.Float64, strict=False)
    if fmt is None and as_number.null_count() == 0:  # the rule of text_times_are_numbers
        return as_number * TIME_UNITS[unit]
    parsed = _parse_datetimes(text, fmt, path)
    if fmt is None and as_number.is_not_null().sum() > parsed.is_not_null().sum():
        # Mostly numbers: the values that are not are the odd ones out, not the numbers around them.
        _raise_on_failures(
            source, as_number, column, path, "a number, as most values of the column are", first_row=first_row
        )
    datetime = f"a datetime{f' in the format {fmt!r}' if fmt else ' (ISO 8601; pass a format option for others)'}"
    expected = f"{datetime}, as most values of the column are" if fmt is None else datetime
    _raise_on_failures(source, parsed, column, path, expected, first_row=first_row)
    return parsed.dt.epoch("us").cast(pl.Float64) * 1e-6


def file_provenance(paths: Sequence[Path]) -> dict[str, dict[str, object]]:
    """Size and sha256 of each source file, keyed by its resolved path (for a dataset's provenance)."""
    described = {}
    for path in paths:
        described[str(Path(path).resolve())] = {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}
    return described


def _parse_datetimes(text: pl.Series, fmt: str | None, path: str | Path) -> pl.Series:
    # Each format parses what it can (null elsewhere); the first that parses a value wins. Zoned times are
    # converted to UTC, naive ones read as UTC.
    parsed = []
    for candidate in (fmt,) if fmt else ISO_FORMATS:
        try:
            times = text.str.to_datetime(format=candidate, strict=False, time_unit="us")
        except pl.exceptions.ComputeError as error:
            raise DataError(f"{path}: cannot parse times with the format {candidate!r} ({error})") from error
        if times.dtype.time_zone is not None:
            times = times.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        parsed.append(times)
    return pl.select(pl.coalesce(parsed)).to_series()


def row_label(path: str | Path, index: int) -> str:
    """Human position of 0-based data row ``index``: its line in a text file (header = line 1), else its row."""
    return f"row {index + 1}" if Path(path).suffix == ".parquet" else f"line {index + 2}"


def _raise_on_failures(
    source: pl.Series,
    parsed: pl.Series,
    column: str,
    path: str | Path,
    expected: str,
    *,
    allow_missing: bool = False,
    first_row: int = 0,
) -> None:
    failed = parsed.is_null() & source.is_not_null()
    missing = source.is_null()
    if missing.any() and not allow_missing:
        index = int(missing.arg_true()[0])
        raise DataError(
            f"{path}: {row_label(path, first_row + index)}: column {column!r} is empty; every row needs a value"
        )
    if failed.any():
        index = int(failed.arg_true()[0])
        raise DataError(
            f"{path}: {row_label(path, first_row + index)}: column {column!r} has {excerpt(source[index])}, "
            f"expected {expected}"
        )


def _kind(path: Path, separator: str) -> str:
    return "Parquet" if path.suffix == ".parquet" else f"{separator!r}-separated text"


def _csv_reader(lines: io.TextIOBase, separator: str, quote_char: str | None):
    if quote_char is None:
        return csv.reader(lines, delimiter=separator, quoting=csv.QUOTE_NONE, strict=True)
    return csv.reader(lines, delimiter=separator, quotechar=quote_char, strict=True)


def _header(path: Path, separator: str, quote_char: str | None) -> list[str]:
    # Polars renames a repeated column ("a_duplicated_0"), so the header is read here as written.
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        return next(_csv_reader(io.StringIO(first.decode("utf-8-sig")), separator, quote_char), [])
    except (UnicodeDecodeError, csv.Error):
        return []  # reported with its line by _text_problem when polars fails on it


def _refuse_repeated_names(names: Sequence[str], path: Path) -> None:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        where = "" if path.suffix == ".parquet" else "line 1: "
        raise DataError(
            f"{path}: {where}the header names column {repeated[0]!r} {names.count(repeated[0])} times; every "
            "column needs its own name"
        )


def _text_problem(path: Path, separator: str, quote_char: str | None) -> str | None:
    """What makes a text file unreadable, with its line, or None when none of the known problems is found.

    Runs only after the fast reader failed: it reads the file again line by line.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    f"line {number}: byte 0x{raw[error.start]:02x} (byte {error.start + 1} of the line) is not "
                    "UTF-8, and text files are read as UTF-8; convert the file first (for example with iconv -f "
                    "LATIN1 -t UTF-8)"
                )
    with open(path, encoding="utf-8-sig", newline="") as lines:
        reader = _csv_reader(lines, separator, quote_char)
        width, start = None, 1
        try:
            for row in reader:
                if row and width is None:
                    width = len(row)
                elif row and len(row) != width:
                    return f"line {start}: {len(row)} fields where the header has {width}"
                start = reader.line_num + 1
        except csv.Error:
            return (
                f"line {start}: a quote ({quote_char}) opens a field that does not close where it should; "
                "quote whole fields and double quotes inside them"
            )
    return None
