"""From preprocessed click frames and an item table to a `PreparedDataset`.

Items are indexed by first appearance in the train sessions (SR-GNN's reindexing), then any item seen only
in the validation or test sessions (sources that keep them, such as RecBole leave-one-out files) in order of
appearance there. Sessions keep the frames' order, which `order_clicks` made chronological.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.ingest.items import build_catalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import DataError


def sessions_from_frame(clicks: pl.DataFrame, vocab: Vocab, *, with_timestamps: bool = True) -> SessionData:
    """CSR sessions of an ordered click frame (each session one contiguous block of rows).

    Timestamps, when the frame has a ``timestamp`` column and ``with_timestamps``, are whole seconds.

    Raises:
        DataError: a session's clicks are not one block (the frame was not ordered by `order_clicks`): they
            would otherwise become two sessions.
    """
    index = pl.DataFrame({"item_id": vocab.item_ids[1:], "item_idx": np.arange(1, vocab.n_items + 1)})
    return sessions_from_index(clicks, index, with_timestamps=with_timestamps)


def sessions_from_index(clicks: pl.DataFrame, index: pl.DataFrame, *, with_timestamps: bool = True) -> SessionData:
    """`sessions_from_frame` with items looked up in ``index`` (``item_id``, ``item_idx`` int64) instead of a vocab.

    For a vocabulary that grows chunk by chunk (the out-of-core path); every clicked item must be in it.

    Raises:
        DataError: a session's clicks are not one block (the frame was not ordered by `order_clicks`): they
            would otherwise become two sessions.
    """
    runs = clicks["session_id"].rle()
    repeated = runs.struct.field("value").filter(runs.struct.field("value").is_duplicated())
    if repeated.len():
        raise DataError(
            f"session {repeated[0]!r}: its clicks are not one block of rows after ordering; order the clicks by "
            "session first (order_clicks)"
        )
    lengths = runs.struct.field("len").to_numpy() if clicks.height else np.zeros(0)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = clicks.select("item_id").join(index, on="item_id", how="left", maintain_order="left")["item_idx"]
    assert items.null_count() == 0, "every clicked item is in the vocabulary"
    timestamps = None
    if with_timestamps and "timestamp" in clicks.columns:
        timestamps = np.floor(clicks["timestamp"].to_numpy()).astype(np.int64)
    return SessionData(offsets=offsets, items=items.to_numpy().astype(np.int64), timestamps=timestamps)


def assemble(
    train: pl.DataFrame,
    test: pl.DataFrame,
    items: pl.DataFrame | None,
    *,
    name: str,
    options: dict[str, Any],
    provenance: dict[str, Any],
    valid: pl.DataFrame | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    with_timestamps: bool = True,
) -> PreparedDataset:
    """Index items and categories, build the catalogue and the CSR sessions.

    Args:
        train: ordered click frame (``session_id``, ``item_id``[, ``timestamp``]).
        test: ordered click frame, same columns.
        items: item table (see `hiersrec.data.ingest.items`), or None when the source has none (every item then
            goes to the ``"unknown"`` category).
        name: dataset name.
        options: preprocessing options; the counts of items without a category and of test clicks on items
            unseen in train are added.
        provenance: source files, recipe steps.
        valid: ordered click frame of a source-given validation split, or None.
        categorical: item-table columns to keep as categorical catalogue attributes.
        numeric: item-table columns to keep as numeric catalogue attributes.
        with_timestamps: keep the frames' ``timestamp`` column as click times.
    """
    frames = [train] + ([valid] if valid is not None else []) + [test]
    item_ids = pl.concat([f.select("item_id") for f in frames])["item_id"].unique(maintain_order=True)
    vocab, catalog, n_unknown = index_items(item_ids.to_list(), items, categorical=categorical, numeric=numeric)
    unseen = test.filter(~pl.col("item_id").is_in(train["item_id"].unique().implode())).height
    return PreparedDataset(
        name=name,
        train=sessions_from_frame(train, vocab, with_timestamps=with_timestamps),
        test=sessions_from_frame(test, vocab, with_timestamps=with_timestamps),
        valid=None if valid is None else sessions_from_frame(valid, vocab, with_timestamps=with_timestamps),
        vocab=vocab,
        catalog=catalog,
        options=counted_options(options, n_unknown, unseen),
        provenance=provenance,
    )


def index_items(
    item_ids: Sequence[str], items: pl.DataFrame | None, *, categorical: Sequence[str] = (), numeric: Sequence[str] = ()
) -> tuple[Vocab, ItemCatalog, int]:
    """(vocab, catalogue, items mapped to "unknown") of the raw ``item_ids`` in index order (`build_catalog`)."""
    catalog, category_ids, n_unknown = build_catalog(item_ids, items, categorical=categorical, numeric=numeric)
    return Vocab.from_raw(item_ids, category_ids), catalog, n_unknown


def counted_options(options: dict[str, Any], n_unknown: int, unseen: int) -> dict[str, Any]:
    """``options`` with the counts that `assemble` records: items without a category, unseen test clicks."""
    return {**options, "items_without_category_unknown": n_unknown, "test_items_unseen_in_train": unseen}
