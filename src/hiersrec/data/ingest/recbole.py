"""Importer for RecBole atomic files: ``.inter`` interactions and the optional ``.item`` table.

Atomic files are tab-separated with a ``field:type`` header (``token``, ``token_seq``, ``float``...). Two kinds
of ``.inter`` are read:

* **augmented sequences**, the benchmark files ``<name>.{train,valid,test}.inter`` with an id field
  (``session_id`` or ``user_id``), ``item_id_list`` (the history, possibly truncated to its last items) and
  ``item_id`` (the next item). Each id's whole sequence is rebuilt from its rows: rows are ordered by split,
  then by history length (then by file order, in the direction the file uses), the sequence is the first
  row's history followed by every row's target, and each row is checked to be exactly the (truncated)
  history before its target; a row that is not raises a `DataError` naming its line.

  - When ids recur across splits (leave-one-out, as UniSRec's Amazon files): valid and test hold at most one
    row per id; test = the whole sequence, valid = the sequence ending at the valid item, train = the
    sequence before the valid item. These are evaluated on their last item (``protocol="last_item"``).
  - When every id lives in one split (sessions, as RecBole's session benchmarks or `write_recbole` output):
    each sequence stays whole in its split; validation sessions are appended to the train sessions (they
    are its chronological tail) and the count is kept in ``options["source_valid_sessions"]``.

* **plain interactions**, a single ``<name>.inter`` with an id field, ``item_id`` and optionally
  ``timestamp``: each id's items ordered by time (ties: file order), then split leave-one-out as above
  (sequences shorter than 3 stay whole in train).

Items get their category, text and attributes from the ``.item`` file (or from a table the caller gives,
see `hiersrec.data.ingest.amazon`); items without a category go to ``"unknown"`` (counted in the options).
The category is the field the caller names (``category_field``, e.g. ``genre``), else the first of
``category_id``, ``category``, ``categories``: a ``token`` field as it is, a ``token_seq`` field by its first
token (``genre:token_seq`` = ``"pop rock"`` gives ``"pop"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hiersrec.data.ingest.assemble import assemble
from hiersrec.data.ingest.items import apply_category_policy, unique_items
from hiersrec.data.ingest.readers import file_provenance, parse_numbers, parse_times, read_table, require_values
from hiersrec.data.prepared import PreparedDataset
from hiersrec.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
ID_FIELDS = ("session_id", "user_id")
CATEGORY_FIELDS = ("category_id", "category", "categories")
TEXT_FIELDS = ("text", "title")


def read_recbole_dir(
    directory: str | Path,
    *,
    dataset: str | None = None,
    items: pl.DataFrame | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    missing_category: str = "unknown",
    name: str | None = None,
    category_field: str | None = None,
) -> PreparedDataset:
    """Read RecBole atomic files from ``directory`` (module docstring).

    Args:
        directory: folder with ``<dataset>.{train,valid,test}.inter`` or ``<dataset>.inter``, and optionally
            ``<dataset>.item``.
        dataset: the files' common prefix; needed only when the folder holds several datasets.
        items: an item table (``item_id`` = the ``.inter`` item tokens, ``category``, optional ``text``) that
            replaces the ``.item`` file; ``categorical`` / ``numeric`` name its attribute columns.
        categorical: item-table columns kept as categorical attributes (with ``items``).
        numeric: item-table columns kept as numeric attributes (with ``items``).
        missing_category: ``"unknown"`` (default), ``"drop"`` or ``"error"`` for items without a category.
        name: dataset name (default: ``dataset``).
        category_field: the ``.item`` field holding the category (``"genre"`` or ``"genre:token_seq"``);
            default: the first of `CATEGORY_FIELDS` the file has.

    Raises:
        DataError: no or ambiguous files, missing fields (``category_field`` included), rows that do not form
            one sequence per id.
        ConfigError: ``category_field`` given with ``items`` (the table says what the category is).
    """
    directory = Path(directory)
    stem = dataset or _dataset_stem(directory)
    if missing_category not in ("unknown", "error"):
        raise DataError(
            f"missing-category policy {missing_category!r} does not apply to RecBole files: they come split "
            "already and dropping items would change their held-out items; use 'unknown' or 'error'"
        )
    benchmark = [directory / f"{stem}.{split}.inter" for split in SPLITS]
    if all(path.is_file() for path in benchmark):
        sources = benchmark
        sequences, counts = _rebuild_sequences([_read_augmented(path, rank) for rank, path in enumerate(sources)])
        train, valid, test, mode = _split(sequences, counts, leave_one_out=None)
    elif (directory / f"{stem}.inter").is_file():
        sources = [directory / f"{stem}.inter"]
        sequences, counts = _plain_sequences(sources[0])
        train, valid, test, mode = _split(sequences, counts, leave_one_out=True)
    else:
        raise DataError(f"{directory}: no {stem}.{{train,valid,test}}.inter nor {stem}.inter; pass the dataset name")
    item_file = directory / f"{stem}.item"
    if category_field is not None and items is not None:
        raise ConfigError("category_field applies to the .item file, not to an item table given by the caller")
    if category_field is not None and not item_file.is_file():
        raise DataError(f"{item_file}: file not found; the category field {category_field!r} is read from it")
    if items is None and item_file.is_file():
        items, categorical, numeric = read_item_file(item_file, category_field=category_field)
        sources.append(item_file)
    _, category_report = apply_category_policy(pl.concat([train, valid, test]), items, missing_category, str(directory))
    if mode == "sessions":
        category_report["source_valid_sessions"] = valid["session_id"].n_unique()
        train, valid = pl.concat([train, valid]), None
    return assemble(
        train,
        test,
        items,
        valid=valid,
        name=name or stem,
        options={"source_format": "recbole", "split_mode": mode, **category_report},
        provenance={"files": file_provenance(sources)},
        categorical=categorical,
        numeric=numeric,
    )


def read_item_file(path: Path, *, category_field: str | None = None) -> tuple[pl.DataFrame, list[str], list[str]]:
    """A RecBole ``.item`` file as an item table, with its categorical and numeric attribute names.

    The category is ``category_field`` (a field name, with or without its ``:type``), else the first of the
    fields ``category_id``, ``category``, ``categories``: a ``token`` field's value, a ``token_seq`` field's
    first token. The text is the first of ``text``, ``title``; other ``token`` fields become categorical
    attributes, ``float`` fields numeric ones.

    Raises:
        DataError: the file lacks ``item_id`` or ``category_field``, or the category field is neither a token
            nor a token_seq field.
    """
    frame, fields = _read_atomic(path)
    if "item_id" not in fields:
        raise DataError(f"{path}: missing the field item_id:token; found {list(fields)}")
    require_values(frame, fields["item_id"], path)
    if category_field is not None:
        category = category_field.split(":")[0]
        if category not in fields:
            raise DataError(f"{path}: no field {category!r} to take categories from; found {list(fields.values())}")
    else:
        category = next((f for f in CATEGORY_FIELDS if f in fields), None)
    text = next((f for f in TEXT_FIELDS if f in fields), None)
    rest = [f for f in fields if f not in ("item_id", category, text)]
    categorical = [f for f in rest if fields[f].endswith(":token")]
    numeric = [f for f in rest if fields[f].endswith(":float")]
    columns = [pl.col(fields["item_id"]).alias("item_id")]
    no_category = pl.lit(None, pl.Utf8).alias("category")
    columns.append(_category_expression(fields[category], path) if category else no_category)
    if text:
        columns.append(pl.col(fields[text]).alias("text"))
    columns += [pl.col(fields[f]).alias(f) for f in categorical]
    columns += [parse_numbers(frame, fields[f], path, pl.Float64, allow_missing=True).alias(f) for f in numeric]
    return unique_items(frame.select(columns), str(path)), categorical, numeric


def _category_expression(column: str, path: Path) -> pl.Expr:
    kind = column.partition(":")[2]
    if kind in ("token", ""):
        return pl.col(column).alias("category")
    if kind == "token_seq":
        # RecBole splits token sequences on spaces; the first token is the item's (main) category.
        return pl.col(column).str.strip_chars().str.split(" ").list.first().replace("", None).alias("category")
    raise DataError(f"{path}: the category field {column!r} is not a token or token_seq field")


def _dataset_stem(directory: Path) -> str:
    stems = sorted({p.name.split(".")[0] for p in directory.glob("*.inter")})
    if len(stems) != 1:
        found = f"datasets {stems}" if stems else "no .inter file"
        raise DataError(f"{directory}: {found}; pass the dataset name (the files' common prefix)")
    return stems[0]


def _read_atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    frame = read_table(path, separator="\t")
    fields: dict[str, str] = {}
    for column in frame.columns:
        name = column.split(":")[0]
        if name in fields:
            # Else the later column would silently stand for the field (timestamps read as item ids).
            raise DataError(
                f"{path}: line 1: the header names the field {name!r} twice ({fields[name]!r} and {column!r}); "
                "every field needs its own name"
            )
        fields[name] = column
    return frame, fields


def _id_field(fields: dict[str, str], path: Path) -> str:
    field = next((f for f in ID_FIELDS if f in fields), None)
    if field is None:
        raise DataError(f"{path}: missing an id field ({' or '.join(ID_FIELDS)}); found {list(fields)}")
    return fields[field]


def _read_augmented(path: Path, rank: int) -> pl.DataFrame:
    frame, fields = _read_atomic(path)
    missing = [f for f in ("item_id_list", "item_id") if f not in fields]
    if missing:
        raise DataError(
            f"{path}: missing field(s) {missing}; found {list(fields)}. Benchmark files hold item_id_list "
            "(the history) and item_id (the next item); plain interactions go in a single <name>.inter"
        )
    columns = (_id_field(fields, path), fields["item_id_list"], fields["item_id"])
    for column in columns:
        require_values(frame, column, path)
    return frame.select(
        pl.col(columns[0]).alias("id"),
        pl.col(columns[1]).str.strip_chars().str.split(" ").alias("history"),
        pl.col(columns[2]).alias("target"),
        pl.lit(rank, pl.Int64).alias("rank"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("line") + 2,
        pl.lit(str(path)).alias("path"),
    )


def _rebuild_sequences(parts: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Whole sequences ``(id, pos, item_id)`` from augmented rows, and ``(id, rank, targets)`` per split."""
    rows = pl.concat(parts).with_columns(length=pl.col("history").list.len().cast(pl.Int64))
    # Ids keep their order of first appearance over the files (train first).
    order = rows.select("id").unique(maintain_order=True).with_row_index("id_order")
    rows = rows.join(order, on="id", maintain_order="left")
    step = pl.col("length") - pl.col("length").shift(1).over(["id", "rank"])
    steps = rows.select(up=(step > 0).sum(), down=(step < 0).sum()).row(0)
    # Truncated histories all have the same length; file order breaks those ties in the file's direction.
    direction = -1 if steps[1] > steps[0] else 1
    rows = rows.sort(["id_order", "rank", "length", pl.col("line") * direction])
    rows = rows.with_columns(k=pl.int_range(pl.len()).over("id_order"), row_id=pl.int_range(pl.len()))
    rows = rows.with_columns(pos=pl.col("length").first().over("id_order") + pl.col("k"))
    first = rows.filter(pl.col("k") == 0).select("id_order", item_id=pl.col("history")).explode("item_id")
    history = first.with_columns(pos=pl.int_range(pl.len()).over("id_order"))
    targets = rows.select("id_order", "pos", item_id=pl.col("target"))
    sequences = pl.concat([history, targets.select(history.columns)]).sort(["id_order", "pos"])
    _check_histories(rows, sequences)
    sequences = sequences.join(order, on="id_order").select("id_order", "id", "pos", "item_id")
    counts = rows.group_by(["id_order", "rank"]).agg(targets=pl.len())
    return sequences, counts


def _check_histories(rows: pl.DataFrame, sequences: pl.DataFrame) -> None:
    exploded = rows.select("row_id", "id", "id_order", "pos", "length", "line", "path", "history").explode("history")
    exploded = exploded.with_columns(at=pl.col("pos") - pl.col("length") + pl.int_range(pl.len()).over("row_id"))
    joined = exploded.join(
        sequences.rename({"pos": "at", "item_id": "expected"}), on=["id_order", "at"], how="left", maintain_order="left"
    )
    bad = joined.filter(pl.col("expected").is_null() | (pl.col("expected") != pl.col("history")))
    if bad.height:
        first = bad.row(0, named=True)
        raise DataError(
            f"{first['path']}: line {first['line']}: the item_id_list of {first['id']!r} is not the history "
            "before its item_id in that id's sequence; every row of an id must be a prefix of one sequence"
        )


def _plain_sequences(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame, fields = _read_atomic(path)
    if "item_id" not in fields:
        raise DataError(f"{path}: missing the field item_id; found {list(fields)}")
    id_column = _id_field(fields, path)
    for column in (id_column, fields["item_id"]):
        require_values(frame, column, path)
    clicks = frame.select(pl.col(id_column).alias("id"), pl.col(fields["item_id"]).alias("item_id"))
    if "timestamp" in fields:
        clicks = clicks.with_columns(timestamp=parse_times(frame, fields["timestamp"], path))
    order = clicks.select("id").unique(maintain_order=True).with_row_index("id_order")
    clicks = clicks.with_columns(line=pl.int_range(pl.len())).join(order, on="id", maintain_order="left")
    keys = ["id_order"] + (["timestamp"] if "timestamp" in fields else []) + ["line"]
    sequences = clicks.sort(keys).with_columns(pos=pl.int_range(pl.len()).over("id_order")).drop("line")
    # Leave-one-out: the last item is test, the one before valid, for sequences of at least 3 items.
    lengths = sequences.group_by("id_order").agg(n=pl.len())
    held = lengths.filter(pl.col("n") >= 3).select("id_order")
    counts = pl.concat([held.with_columns(rank=pl.lit(r, pl.Int64), targets=pl.lit(1, pl.UInt32)) for r in (1, 2)])
    return sequences, counts


def _split(sequences: pl.DataFrame, counts: pl.DataFrame, *, leave_one_out: bool | None):
    """(train, valid, test, mode) click frames from whole sequences and per-split target counts.

    ``leave_one_out=None`` decides from the data: ids that recur across splits mean leave-one-out.
    """
    per_id = counts.pivot(on="rank", index="id_order", values="targets").fill_null(0)
    for rank in ("0", "1", "2"):
        if rank not in per_id.columns:
            per_id = per_id.with_columns(pl.lit(0, pl.UInt32).alias(rank))
    if leave_one_out is None:
        splits_per_id = (pl.col("0") > 0).cast(pl.Int8) + (pl.col("1") > 0) + (pl.col("2") > 0)
        leave_one_out = per_id.select((splits_per_id > 1).any()).item()
    frame = sequences.join(per_id, on="id_order", how="left").with_columns(pl.col("0", "1", "2").fill_null(0))
    if leave_one_out:
        too_many = per_id.filter((pl.col("1") > 1) | (pl.col("2") > 1))
        if too_many.height:
            raise DataError(
                f"{too_many.height} ids recur across splits but have several valid or test rows; a leave-one-out "
                "split holds one valid and one test row per id"
            )
        mode = "leave_one_out"
        n = pl.len().over("id_order")
        train = frame.filter(pl.col("pos") < n - pl.col("1") - pl.col("2"))
        valid = frame.filter((pl.col("1") > 0) & (pl.col("pos") < n - pl.col("2")))
        test = frame.filter(pl.col("2") > 0)
    else:
        mode = "sessions"
        train, valid, test = (frame.filter(pl.col(r) > 0) for r in ("0", "1", "2"))
    keep = ["session_id", "item_id"] + (["timestamp"] if "timestamp" in sequences.columns else [])
    train, valid, test = (
        f.sort(["id_order", "pos"]).rename({"id": "session_id"}).select(keep) for f in (train, valid, test)
    )
    return train, valid, test, mode
