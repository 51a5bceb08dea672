"""``hiersrec recommend``: recommendations of a trained run for one session, or for a file of sessions.

A file is streamed in chunks (bounded memory whatever its size) and the output Parquet is written chunk by
chunk to a temporary file that replaces the target only when complete. Input layouts (CSV or Parquet):

* clicks, one row per click: ``session_id``, ``item_id`` and optionally ``timestamp``. The rows of a session
  must be contiguous (e.g. sorted by session); within a session they are in click order, or ordered by
  ``timestamp`` when present;
* sessions, one row per session: ``session_id`` and ``items`` (a Parquet list, or in CSV a string of ids
  separated by spaces, commas or semicolons), oldest click first.

Output: one row per session, in input order: ``session_id``, ``item_ids``, ``scores``, ``category_ids``,
``unknown_items`` (lists) and ``fallback`` (null, or ``"popularity"`` for sessions with no known click).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer

from hiersrec.cli.outputs import checked_output
from hiersrec.errors import ConfigError, DataError
from hiersrec.files import replacing_file
from hiersrec.progress import progress
from hiersrec.recommend import Recommendation, Recommender
from hiersrec.retrieval.category import CandidateBudget

READ_ROWS = 1 << 16  # rows per chunk read from the input file
MAX_K = 100_000  # items per session: beyond it the output is the catalogue, not a recommendation
OUTPUT_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("item_ids", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float32())),
        ("category_ids", pa.list_(pa.string())),
        ("unknown_items", pa.list_(pa.string())),
        ("fallback", pa.string()),
    ]
)
_SEPARATORS = re.compile(r"[\s,;]+")


def recommend(
    run: Annotated[Path, typer.Argument(help="A trained run directory.")],
    session: Annotated[
        str | None, typer.Option(help="One session: raw item ids separated by commas, oldest click first.")
    ] = None,
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="Sessions to score: a .parquet or .csv file.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the .parquet results.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="Items per session.")] = 20,
    exclude_seen: Annotated[bool, typer.Option(help="Never recommend a session's own items.")] = False,
    candidate_budget: Annotated[
        str | None,
        typer.Option(
            help="Rank only the predicted categories' items and the session's own: '4%', '4%:probability' or "
            "'category:5' ('...:categories-only': the categories' items alone)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1_000_000, help="Sessions scored at once.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="With --session: print one JSON object.")] = False,
) -> None:
    """Recommend items for one --session, or for every session of an --input file into --output."""
    if (session is None) == (input_path is None):
        raise ConfigError("give either --session ITEM,ITEM,... or --input FILE (with --output FILE)")
    if input_path is not None and output is None:
        raise ConfigError("--input needs --output FILE.parquet for the results")
    output = checked_output(output, "--output")  # before the run is loaded and the file scored
    if candidate_budget is not None:
        CandidateBudget.parse(candidate_budget)
    recommender = Recommender.from_artifact(run, batch_size=batch_size)
    options = {"exclude_seen": exclude_seen, "candidate_budget": candidate_budget}
    if session is not None:
        items = [item for item in session.split(",") if item.strip()]
        _print_one(recommender.recommend([item.strip() for item in items], k, **options), as_json)
        return
    n_sessions = recommend_file(recommender, input_path, output, k=k, show_progress=True, **options)
    typer.echo(f"wrote recommendations for {n_sessions} sessions to {output}")


def recommend_file(
    recommender: Recommender,
    input_path: Path,
    output: Path,
    *,
    k: int = 20,
    exclude_seen: bool = False,
    candidate_budget: str | None = None,
    read_rows: int = READ_ROWS,
    show_progress: bool = False,
) -> int:
    """Stream the sessions of ``input_path`` through ``recommender`` into the Parquet file ``output``.

    Returns:
        The number of sessions written.

    Raises:
        DataError: the file's format, columns or values are not readable as sessions.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    n_sessions = 0
    with (
        replacing_file(output) as partial,
        pq.ParquetWriter(partial, OUTPUT_SCHEMA) as writer,
        progress(
            desc="recommend", unit="session", total=_known_session_count(input_path), disable=not show_progress
        ) as bar,
    ):
        for session_ids, sessions in iter_session_chunks(input_path, read_rows):
            results = recommender.recommend_batch(
                sessions, k, exclude_seen=exclude_seen, candidate_budget=candidate_budget
            )
            writer.write_table(_results_table(session_ids, results))
            n_sessions += len(sessions)
            bar.update(len(sessions))
    return n_sessions


def iter_session_chunks(path: Path, read_rows: int = READ_ROWS) -> Iterator[tuple[list[str], list[list[str]]]]:
    """(session ids, sessions of raw item ids) in file order, a chunk at a time; see the module docstring."""
    batches = _record_batches(path, read_rows)
    first = next(batches, None)
    if first is None:
        raise DataError(f"{path}: no rows")
    names = set(first.schema.names)
    if {"session_id", "items"} <= names:
        chunks = (_session_rows(batch, path) for batch in _chain(first, batches))
    elif {"session_id", "item_id"} <= names:
        chunks = _click_rows(_chain(first, batches), path, with_time="timestamp" in names)
    else:
        raise DataError(
            f"{path}: need columns session_id and item_id (one row per click) or session_id and items "
            f"(one row per session); found {sorted(names)}"
        )
    for session_ids, sessions in chunks:
        if session_ids:
            yield session_ids, sessions


def _known_session_count(path: Path) -> int | None:
    # One row per session in a Parquet file: its footer holds the count, so the progress bar can show an ETA.
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return None
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError):
        return None  # reported properly when the file is read
    return file.metadata.num_rows if "items" in file.schema_arrow.names else None


def _record_batches(path: Path, read_rows: int) -> Iterator[pa.RecordBatch]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=read_rows)
        elif suffix in (".csv", ".tsv"):
            text_columns = {"session_id": pa.string(), "item_id": pa.string(), "items": pa.string()}
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 22),
                parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                convert_options=pacsv.ConvertOptions(column_types=text_columns, strings_can_be_null=True),
            )
            yield from reader
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {error}") from None


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _text_column(batch: pa.RecordBatch, name: str, path: Path) -> np.ndarray:
    column = batch.column(name)
    if column.null_count:
        raise DataError(f"{path}: {column.null_count} rows have an empty {name}")
    if pa.types.is_floating(column.type):
        raise DataError(f"{path}: column {name} holds floats; ids must be strings or integers")
    return column.cast(pa.string()).to_numpy(zero_copy_only=False)


def _session_rows(batch: pa.RecordBatch, path: Path) -> tuple[list[str], list[list[str]]]:
    session_ids = _text_column(batch, "session_id", path).tolist()
    column = batch.column("items")
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        sessions = [[str(item) for item in items or ()] for items in column.to_pylist()]
    else:
        sessions = [[item for item in _SEPARATORS.split(text or "") if item] for text in column.to_pylist()]
    return session_ids, sessions


def _click_rows(
    batches: Iterator[pa.RecordBatch], path: Path, with_time: bool
) -> Iterator[tuple[list[str], list[list[str]]]]:
    # A session may straddle two chunks: its run at the end of a chunk waits for the next one.
    pending: tuple[str, list[np.ndarray], list[np.ndarray]] | None = None
    for batch in batches:
        session = _text_column(batch, "session_id", path)
        items = _text_column(batch, "item_id", path)
        times = batch.column("timestamp").to_numpy(zero_copy_only=False) if with_time else np.zeros(len(items))
        cuts = [0, *(np.flatnonzero(session[1:] != session[:-1]) + 1).tolist(), len(session)]
        session_ids, sessions = [], []
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            if pending is not None and pending[0] == session[start]:
                pending[1].append(items[start:end])
                pending[2].append(times[start:end])
                continue
            if pending is not None:
                session_ids.append(pending[0])
                sessions.append(_in_click_order(pending[1], pending[2]))
            pending = (str(session[start]), [items[start:end]], [times[start:end]])
        yield session_ids, sessions
    if pending is not None:
        yield [pending[0]], [_in_click_order(pending[1], pending[2])]


def _in_click_order(items: list[np.ndarray], times: list[np.ndarray]) -> list[str]:
    all_items, all_times = np.concatenate(items), np.concatenate(times)
    return all_items[np.argsort(all_times, kind="stable")].tolist()


def _results_table(session_ids: list[str], results: list[Recommendation]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "session_id": session_ids,
            "item_ids": [list(r.item_ids) for r in results],
            "scores": [list(r.scores) for r in results],
            "category_ids": [list(r.category_ids) for r in results],
            "unknown_items": [list(r.unknown_items) for r in results],
            "fallback": [r.fallback for r in results],
        },
        schema=OUTPUT_SCHEMA,
    )


def _print_one(result: Recommendation, as_json: bool) -> None:
    if as_json:
        payload = {
            "item_ids": list(result.item_ids),
            "scores": list(result.scores),
            "category_ids": list(result.category_ids),
            "unknown_items": list(result.unknown_items),
            "fallback": result.fallback,
        }
        typer.echo(json.dumps(payload))
        return
    if result.unknown_items:
        typer.echo(f"unknown items (dropped): {', '.join(result.unknown_items)}", err=True)
    if result.fallback:
        typer.echo(f"no known item in the session: fallback {result.fallback!r}", err=True)
    typer.echo(f"{'rank':>4}  {'item_id':<20}  {'score':>10}  category_id")
    for rank, (item, score, category) in enumerate(
        zip(result.item_ids, result.scores, result.category_ids, strict=True), start=1
    ):
        typer.echo(f"{rank:>4}  {item:<20}  {score:>10.4f}  {category}")
