"""``hiersrec data prepare | stats | export``: import, inspect and export session datasets.

Thin over `hiersrec.data`: each command parses options, calls the library and prints; ``--json`` prints one
JSON object on stdout, logs go to stderr. Bad input raises `DataError` (exit code 3), bad options
`ConfigError` (exit code 4).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from hiersrec.data.ingest import open_dataset
from hiersrec.data.ingest.amazon import is_unisrec_amazon_dir, read_unisrec_amazon
from hiersrec.data.ingest.clicklog import ClickLogOptions, read_clicklog
from hiersrec.data.ingest.diginetica import read_diginetica
from hiersrec.data.ingest.recbole import read_recbole_dir
from hiersrec.data.ingest.srgnn import read_srgnn_dir
from hiersrec.data.ingest.streaming import (
    default_memory_limit,
    needs_out_of_core,
    parse_size,
    prepare_clicklog_out_of_core,
)
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.recbole_export import write_recbole
from hiersrec.data.stats import dataset_stats, prepared_stats
from hiersrec.data.storage import require_replaceable, save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.errors import ConfigError
from hiersrec.files import claim_target

logger = logging.getLogger(__name__)

app = typer.Typer(name="data", help="Prepare, inspect and export session datasets.", no_args_is_help=True)

_CLICKLOG = "Click-log options (--source clicklog)"


class Source(enum.StrEnum):
    """Input formats of ``hiersrec data prepare``."""

    srgnn = "srgnn"
    diginetica = "diginetica"
    clicklog = "clicklog"
    recbole = "recbole"
    synthetic = "synthetic"


@app.command()
def prepare(
    source: Annotated[Source, typer.Option(help="Input format.", case_sensitive=False)],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder to write the prepared dataset to: new, empty, or an earlier prepared dataset (replaced "
            "atomically)."
        ),
    ],
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Source folder (srgnn, diginetica: raw CIKM files, recbole: .inter files) or click-log file.",
        ),
    ] = None,
    items: Annotated[Path | None, typer.Option(help="Item table (CSV/Parquet).", rich_help_panel=_CLICKLOG)] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: from the source).")] = None,
    missing_category: Annotated[
        str, typer.Option(help="Items without a category: unknown (map to 'unknown'), drop, or error.")
    ] = "unknown",
    session_column: Annotated[str | None, typer.Option(help="Session id column.", rich_help_panel=_CLICKLOG)] = None,
    item_column: Annotated[str | None, typer.Option(help="Item id column.", rich_help_panel=_CLICKLOG)] = None,
    time_column: Annotated[str | None, typer.Option(help="Click time column.", rich_help_panel=_CLICKLOG)] = None,
    time_unit: Annotated[
        str | None, typer.Option(help="Unit of numeric times: s, ms, us, ns.", rich_help_panel=_CLICKLOG)
    ] = None,
    time_format: Annotated[
        str | None, typer.Option(help="strftime format of text times (default ISO 8601).", rich_help_panel=_CLICKLOG)
    ] = None,
    separator: Annotated[
        str | None, typer.Option(help="Field separator of text files (\\t for a tab).", rich_help_panel=_CLICKLOG)
    ] = None,
    item_id_column: Annotated[
        str | None, typer.Option(help="Item id column of the item table.", rich_help_panel=_CLICKLOG)
    ] = None,
    category_column: Annotated[
        str | None,
        typer.Option(
            help="Category column of the item table (clicklog), or the field of RecBole's .item file that holds "
            "the category (recbole: a token field as it is, a token_seq field such as genre:token_seq by its "
            "first token; default category_id, category or categories)."
        ),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Text column of the item table.", rich_help_panel=_CLICKLOG)
    ] = None,
    categorical_column: Annotated[
        list[str] | None,
        typer.Option(help="Categorical attribute of the item table; repeatable.", rich_help_panel=_CLICKLOG),
    ] = None,
    numeric_column: Annotated[
        list[str] | None,
        typer.Option(help="Numeric attribute of the item table; repeatable.", rich_help_panel=_CLICKLOG),
    ] = None,
    min_session_length: Annotated[
        int | None, typer.Option(help="Drop shorter sessions (default 2).", rich_help_panel=_CLICKLOG)
    ] = None,
    min_item_support: Annotated[
        int | None, typer.Option(help="Drop items with fewer clicks (default 5).", rich_help_panel=_CLICKLOG)
    ] = None,
    consecutive_duplicates: Annotated[
        str | None, typer.Option(help="keep (default, as SR-GNN) or drop repeats.", rich_help_panel=_CLICKLOG)
    ] = None,
    until_stable: Annotated[
        bool | None,
        typer.Option("--until-stable", help="Repeat the support/length filters.", rich_help_panel=_CLICKLOG),
    ] = None,
    test_days: Annotated[
        float | None, typer.Option(help="Test = the last N days (default 7).", rich_help_panel=_CLICKLOG)
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Test = the most recent fraction of sessions.", rich_help_panel=_CLICKLOG)
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="Memory the click-log import may use, such as 2GiB (default: half the machine's memory). A log "
            "that would need more in memory (about 225 bytes per click; clicks counted in a Parquet file, "
            "estimated from a text file's size) is prepared out of core, partition by partition within the "
            "limit, with the same result; the temporary files beside --out take about twice the log's size.",
            rich_help_panel=_CLICKLOG,
        ),
    ] = None,
    out_of_core: Annotated[
        bool,
        typer.Option(
            "--out-of-core", help="Prepare the click log out of core whatever its size.", rich_help_panel=_CLICKLOG
        ),
    ] = False,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Number of on-disk partitions of an out-of-core import (default: from --memory-limit); implies "
            "--out-of-core.",
            rich_help_panel=_CLICKLOG,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the synthetic shop (--source synthetic).")] = None,
    shop: Annotated[
        list[str] | None,
        typer.Option(
            help="A field of the synthetic shop (--source synthetic), e.g. n_sessions=5000, mean_length=30 or "
            "repeat_prob=0.5 (a repeat-heavy shop); repeatable."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Import a dataset from --source, preprocess it and write it to --out.

    A click log that would not fit in --memory-limit (or with --out-of-core) is prepared out of core: on-disk
    partitions processed one at a time, with the same prepared dataset, byte for byte, as in memory.
    """
    clicklog_options = {
        "session_column": session_column,
        "item_column": item_column,
        "time_column": time_column,
        "time_unit": time_unit,
        "time_format": time_format,
        # A shell passes \t on as two characters; a tab is what is meant.
        "separator": "\t" if separator == "\\t" else separator,
        "item_id_column": item_id_column,
        "category_column": category_column,
        "text_column": text_column,
        "categorical_columns": tuple(categorical_column) if categorical_column else None,
        "numeric_columns": tuple(numeric_column) if numeric_column else None,
        "min_session_length": min_session_length,
        "min_item_support": min_item_support,
        "consecutive_duplicates": consecutive_duplicates,
        "filter_until_stable": until_stable,
        "test_days": test_days,
        "test_fraction": test_fraction,
    }
    given = {key: value for key, value in clicklog_options.items() if value is not None}
    # The one click-log option RecBole shares: which field of its .item file holds the category.
    category_field = given.pop("category_column", None) if source is Source.recbole else None
    if source is not Source.clicklog and (given or items is not None):
        flags = [f"--{key.replace('_', '-')}" for key in given] + (["--items"] if items is not None else [])
        raise ConfigError(f"options for --source clicklog only, not {source.value}: {', '.join(flags)}")
    if (seed is not None or shop) and source is not Source.synthetic:
        raise ConfigError(f"--seed and --shop only apply to --source synthetic, not {source.value}")
    if (input_path is None) != (source is Source.synthetic):
        raise ConfigError("--input is required for every source except synthetic (and not allowed there)")
    streaming = {"--memory-limit": memory_limit, "--out-of-core": out_of_core or None, "--partitions": partitions}
    if source is not Source.clicklog and any(value is not None for value in streaming.values()):
        flags = ", ".join(flag for flag, value in streaming.items() if value is not None)
        raise ConfigError(f"options for --source clicklog only, not {source.value}: {flags}")
    limit = parse_size(memory_limit) if memory_limit is not None else default_memory_limit()
    # Claimed and checked before the import, which can take minutes: a second writer of --out, or an --out
    # that is not a prepared dataset, fails at once.
    with claim_target(out):
        require_replaceable(out)
        if source is Source.clicklog and (out_of_core or partitions or needs_out_of_core(input_path, limit)):
            options = _clicklog_options(given, missing_category)
            logger.info("preparing %s out of core (memory limit %.1f GiB)", input_path, limit / 1024**3)
            prepare_clicklog_out_of_core(
                input_path, out, items, options, name=name, memory_limit=limit, partitions=partitions
            )
        else:
            dataset = _import(
                source, input_path, items, name, missing_category, given, seed, category_field, shop or []
            )
            save_prepared(dataset, out)
    # Summarised from the folder a row group at a time: an out-of-core dataset need not fit in memory.
    summary = {"out": str(out), **prepared_stats(out)}
    _print(summary, as_json)


@app.command()
def stats(
    dataset: Annotated[str, typer.Argument(help="Prepared folder, SR-GNN or RecBole folder, or 'synthetic'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Print counts, session lengths and category structure of DATASET."""
    _print(dataset_stats(open_dataset(dataset)), as_json)


class ExportFormat(enum.StrEnum):
    """Formats of ``hiersrec data export``."""

    recbole = "recbole"


@app.command()
def export(
    dataset: Annotated[str, typer.Argument(help="Prepared folder, SR-GNN or RecBole folder, or 'synthetic'.")],
    out: Annotated[
        Path, typer.Option(help="Folder to write (replaced atomically); RecBole wants it named like the dataset.")
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = ExportFormat.recbole,
    max_history: Annotated[int, typer.Option(help="Most recent items kept in each item_id_list.")] = 50,
    valid_fraction: Annotated[
        float, typer.Option(help="Validation share of train sessions when the dataset has no validation split.")
    ] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Write DATASET in another tool's format (RecBole atomic files)."""
    assert fmt is ExportFormat.recbole
    paths = write_recbole(open_dataset(dataset), out, max_history=max_history, valid_fraction=valid_fraction)
    _print({"format": fmt.value, "out": str(out), "files": [str(p) for p in paths]}, as_json)


def _import(
    source: Source,
    input_path: Path | None,
    items: Path | None,
    name: str | None,
    missing_category: str,
    clicklog_options: dict[str, Any],
    seed: int | None,
    category_field: str | None,
    shop: list[str],
) -> PreparedDataset:
    if source is Source.srgnn:
        if missing_category != "unknown":
            raise ConfigError("--missing-category does not apply to --source srgnn (every item has a category row)")
        return read_srgnn_dir(input_path, name=name)
    if source is Source.diginetica:
        return read_diginetica(input_path, missing_category=missing_category, name=name or "diginetica")
    if source is Source.clicklog:
        return read_clicklog(input_path, items, _clicklog_options(clicklog_options, missing_category), name=name)
    if source is Source.recbole:
        if is_unisrec_amazon_dir(input_path):
            if category_field is not None:
                raise ConfigError(
                    f"--category-column does not apply to {input_path}: a UniSRec Amazon folder takes its "
                    "categories from category_l2 of item_meta_derived.tsv"
                )
            dataset = read_unisrec_amazon(input_path, missing_category=missing_category)
            return dataset if name is None else dataclasses.replace(dataset, name=name)
        return read_recbole_dir(input_path, missing_category=missing_category, name=name, category_field=category_field)
    dataset = make_synthetic_shop(SyntheticShopConfig(**{"seed": seed or 0, **_shop_fields(shop)}))
    return dataset if name is None else dataclasses.replace(dataset, name=name)


def _clicklog_options(given: dict[str, Any], missing_category: str) -> ClickLogOptions:
    if "test_fraction" in given and "test_days" not in given:
        given = {**given, "test_days": None}
    return ClickLogOptions(**given, missing_category=missing_category)


def _shop_fields(assignments: list[str]) -> dict[str, Any]:
    # --shop KEY=VALUE -> SyntheticShopConfig fields, typed as their defaults (every field is a number).
    defaults = {f.name: f.default for f in dataclasses.fields(SyntheticShopConfig)}
    fields: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            hint = difflib.get_close_matches(key, list(defaults), n=1)
            close = f"; did you mean {hint[0]!r}?" if hint else f"; fields: {sorted(defaults)}"
            raise ConfigError(f"--shop {assignment!r}: expected FIELD=VALUE with a field of the synthetic shop{close}")
        try:
            fields[key] = type(defaults[key])(value.strip())
        except ValueError:
            kind = type(defaults[key]).__name__
            raise ConfigError(f"--shop {assignment!r}: {key} must be a{'n' if kind == 'int' else ''} {kind}") from None
    return fields


def _print(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload))
        return
    for key, value in payload.items():
        typer.echo(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
