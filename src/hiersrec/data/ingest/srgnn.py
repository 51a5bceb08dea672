"""Importer for the SR-GNN session TSV format, as in ``shared/data/{diginetica,yoochoose1_64}/srgnn_cat``.

The folder holds ``train_sessions.tsv``, ``test_sessions.tsv`` and ``item_category.tsv``.

The files already carry the standard SR-GNN preprocessing, so importing only re-indexes: items keep their
order of first appearance in the item table, sessions keep their (chronological) file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.ingest.items import unique_items
from hiersrec.data.ingest.readers import read_table, require_values
from hiersrec.data.messages import one_line
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import DataError

SESSION_FILES = ("train_sessions.tsv", "test_sessions.tsv")
CATEGORY_FILE = "item_category.tsv"


def read_srgnn_dir(directory: str | Path, name: str | None = None) -> PreparedDataset:
    """Read an SR-GNN TSV folder into a `PreparedDataset`.

    Items of the sessions that have no row in ``item_category.tsv`` raise a `DataError` naming them.
    Test clicks on items never seen in train are kept (the standard files have none) and counted in
    ``options["test_items_unseen_in_train"]``.

    Args:
        directory: folder holding the three files.
        name: dataset name (default: the parent folder's name, e.g. ``"diginetica"``).

    Raises:
        DataError: a file is missing, empty, has the wrong columns or unparsable ids.
    """
    directory = Path(directory)
    categories = _read_tsv(directory / CATEGORY_FILE, ("item_id", "category_id"))
    categories = unique_items(categories, str(directory / CATEGORY_FILE))
    item_ids = categories["item_id"].cast(pl.Utf8).to_list()
    category_ids = categories["category_id"].cast(pl.Utf8).unique(maintain_order=True).to_list()
    vocab = Vocab.from_raw(item_ids, sorted(category_ids, key=_natural_key))
    item_category = np.concatenate([[0], vocab.encode_categories(categories["category_id"].cast(pl.Utf8).to_list())])
    catalog = ItemCatalog(item_category=item_category.astype(np.int64), n_categories=vocab.n_categories)

    splits = {}
    for filename in SESSION_FILES:
        splits[filename] = _read_sessions(directory / filename, vocab)
    train, test = splits["train_sessions.tsv"], splits["test_sessions.tsv"]
    seen = np.zeros(vocab.n_items + 1, dtype=bool)
    seen[train.items] = True
    return PreparedDataset(
        name=name or directory.parent.name,
        train=train,
        test=test,
        vocab=vocab,
        catalog=catalog,
        options={"source_format": "srgnn_tsv", "test_items_unseen_in_train": int((~seen[test.items]).sum())},
        provenance={"source": str(directory.resolve())},
    )


def _read_tsv(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; an SR-GNN folder holds {(*SESSION_FILES, CATEGORY_FILE)}")
    frame = read_table(path, separator="\t")
    if tuple(frame.columns) != columns:
        raise DataError(f"{path}: expected the header {list(columns)}, found {one_line(frame.columns)}")
    for column in columns:
        require_values(frame, column, path)
    return frame


def _read_sessions(path: Path, vocab: Vocab) -> SessionData:
    frame = _read_tsv(path, ("session_idx", "item_ids"))
    tokens = frame["item_ids"].str.strip_chars().str.split(" ")
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise DataError(f"{path}: row {empty[0] + 2} has no items")
    raw_items = tokens.explode().to_list()
    items = vocab.encode_items(raw_items)
    unknown = np.flatnonzero(items == 0)
    if unknown.size:
        examples = sorted({raw_items[i] for i in unknown[:1000]})[:5]
        raise DataError(
            f"{path}: {unknown.size} clicks on items missing from {CATEGORY_FILE} (first: {examples}); "
            "every item needs a category row"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SessionData(offsets=offsets, items=items)


def _natural_key(raw: str) -> tuple[int, int | str]:
    # Numeric ids sort numerically ("2" < "10"), others after them as text.
    return (0, int(raw)) if raw.isdigit() else (1, raw)
