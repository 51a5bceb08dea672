"""Reading raw input tables (CSV/TSV/Parquet) with one clear `DataError` per problem.

Every error names the file, the column or the row, and the fix: a missing file, an empty file, missing
columns (with the columns found and the option that maps names), or an unparsable value (with its line
number for text files, its 1-based row for Parquet).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hiersrec.data.storage import sha256_file
from hiersrec.errors import DataError

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# ISO 8601 variants read without a format option (fractional seconds optional).
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d",
)


def read_table(path: str | Path, *, separator: str = ",") -> pl.DataFrame:
    """Read a whole CSV/TSV file as string columns (header required), or a Parquet file with its types.

    Text files are read without type inference so that parsing errors can name their line (`parse_numbers`).

    Raises:
        DataError: the file is missing, empty, or has a header but no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            # Tab-separated files (RecBole, SR-GNN) carry raw text with quotes in it: no quoting there.
            quote_char = None if separator == "\t" else '"'
            frame = pl.read_csv(path, separator=separator, infer_schema=False, quote_char=quote_char)
    except pl.exceptions.NoDataError as error:
        raise DataError(f"{path}: the file is empty") from error
    except pl.exceptions.ComputeError as error:
        raise DataError(f"{path}: cannot be read as a {_kind(path, separator)} file ({error})") from error
    if frame.height == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


def select_columns(frame: pl.DataFrame, path: str | Path, mapping: dict[str, str], *, hint: str) -> pl.DataFrame:
    """The columns named by ``mapping`` (our name -> the file's name), renamed to our names.

    Raises:
        DataError: naming the missing columns, the columns found, and ``hint`` (how to map names).
    """
    missing = [source for source in mapping.values() if source not in frame.columns]
    if missing:
        if len(frame.columns) == 1 and any(sep in frame.columns[0] for sep in ",;\t|"):
            hint += " The header was read as one column: is the field separator right (--separator)?"
        raise DataError(f"{path}: missing column(s) {missing}; found {frame.columns}. {hint}")
    return frame.select([pl.col(source).alias(ours) for ours, source in mapping.items()])


def require_values(frame: pl.DataFrame, column: str, path: str | Path) -> None:
    """Raise a `DataError` naming the first row whose ``column`` is empty."""
    _raise_on_failures(frame[column], frame[column], column, path, "a value")


def parse_numbers(
    frame: pl.DataFrame, column: str, path: str | Path, dtype: type[pl.DataType], *, allow_missing: bool = False
) -> pl.Series:
    """``frame[column]`` cast to ``dtype`` (Int64 or Float64); a value that does not parse is an error.

    Empty values are errors too, unless ``allow_missing`` (they stay null; ``"NA"`` counts as empty then).

    Raises:
        DataError: naming the first unparsable value and its line (text) or row (Parquet).
    """
    source = frame[column]
    if allow_missing and source.dtype == pl.Utf8:
        source = source.str.strip_chars().replace({"": None, "NA": None})
    parsed = (source.str.strip_chars() if source.dtype == pl.Utf8 else source).cast(dtype, strict=False)
    expected = "a whole number" if dtype == pl.Int64 else "a number"
    _raise_on_failures(source, parsed, column, path, expected, allow_missing=allow_missing)
    return parsed


def parse_times(frame: pl.DataFrame, column: str, path: str | Path, *, unit: str = "s", fmt: str | None = None):
    """``frame[column]`` as float64 seconds since the epoch.

    Numbers are read in ``unit`` (``"s"``, ``"ms"``, ``"us"``, ``"ns"``); datetime columns as they are (naive
    ones as UTC); strings either as numbers or, when any value is not a number, as datetimes (ISO 8601, or
    ``fmt`` in strftime notation).

    Raises:
        DataError: naming the first value that does not parse, its line or row, and the options to use.
    """
    if unit not in TIME_UNITS:
        raise DataError(f"unknown time unit {unit!r}; use one of {sorted(TIME_UNITS)}")
    source = frame[column]
    if source.dtype == pl.Date:
        source = source.cast(pl.Datetime("us"))
    if isinstance(source.dtype, pl.Datetime):
        return source.dt.epoch("us").cast(pl.Float64) * 1e-6
    if source.dtype.is_numeric():
        return source.cast(pl.Float64) * TIME_UNITS[unit]
    text = source.cast(pl.Utf8).str.strip_chars()
    as_number = text.cast(pl.Float64, strict=False)
    if fmt is None and as_number.null_count() == source.null_count():
        return as_number * TIME_UNITS[unit]
    parsed = _parse_datetimes(text, fmt, path)
    hint = f"a datetime{f' in the format {fmt!r}' if fmt else ' (ISO 8601; pass a format option for others)'}"
    _raise_on_failures(source, parsed, column, path, hint + " or a number")
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
    source: pl.Series, parsed: pl.Series, column: str, path: str | Path, expected: str, *, allow_missing: bool = False
) -> None:
    failed = parsed.is_null() & source.is_not_null()
    missing = source.is_null()
    if missing.any() and not allow_missing:
        index = int(missing.arg_true()[0])
        raise DataError(f"{path}: {row_label(path, index)}: column {column!r} is empty; every row needs a value")
    if failed.any():
        index = int(failed.arg_true()[0])
        raise DataError(
            f"{path}: {row_label(path, index)}: column {column!r} has {source[index]!r}, expected {expected}"
        )


def _kind(path: Path, separator: str) -> str:
    return "Parquet" if path.suffix == ".parquet" else f"{separator!r}-separated text"
