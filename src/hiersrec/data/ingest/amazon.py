"""Importer for the Amazon review folders in UniSRec's layout, such as ``shared/data/amazon-scientific``.

The folder holds RecBole leave-one-out files ``<name>.{train,valid,test}.inter`` (item tokens are indices
into ``<name>.item2index``), ``<name>.text`` (ASIN -> "title. category path. brand.") and
``item_meta_derived.tsv`` (item_index, asin, category_l2, category_path, brand, title). The sequences come
from `read_recbole_dir`; the catalogue takes:

* category = ``category_l2`` (items without one go to ``"unknown"``, counted in
  ``options["items_without_category_unknown"]``: 134 items in Scientific);
* text = the ``<name>.text`` line of the item;
* ``brand`` as a categorical attribute (0 = no brand).

Raw item ids in the vocabulary are the ASINs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from hiersrec.data.ingest.readers import read_table, select_columns
from hiersrec.data.ingest.recbole import read_recbole_dir
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.vocab import PAD_TOKEN, Vocab
from hiersrec.errors import DataError

META_FILE = "item_meta_derived.tsv"


def is_unisrec_amazon_dir(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a UniSRec Amazon folder (RecBole splits plus ``item_meta_derived.tsv``)."""
    directory = Path(directory)
    return (directory / META_FILE).is_file() and any(directory.glob("*.train.inter"))


def read_unisrec_amazon(directory: str | Path, *, missing_category: str = "unknown") -> PreparedDataset:
    """Read a UniSRec Amazon folder (module docstring) into a leave-one-out `PreparedDataset`.

    Args:
        directory: the folder, e.g. ``shared/data/amazon-scientific``.
        missing_category: ``"unknown"`` (default) or ``"error"`` for items without ``category_l2``.

    Raises:
        DataError: a file is missing, empty or lacks a column; an item of the sequences has no metadata row.
    """
    directory = Path(directory)
    stem = next(iter(directory.glob("*.train.inter"))).name.split(".")[0]
    meta_path, text_path = directory / META_FILE, directory / f"{stem}.text"
    hint = f"{META_FILE} has the header item_index, asin, category_l2, category_path, brand, title"
    meta = select_columns(
        read_table(meta_path, separator="\t"),
        meta_path,
        {"item_id": "item_index", "asin": "asin", "category": "category_l2", "brand": "brand"},
        hint=hint,
    )
    text = select_columns(
        read_table(text_path, separator="\t"),
        text_path,
        {"asin": "item_id:token", "text": "text:token_seq"},
        hint=f"{text_path.name} has the header item_id:token<TAB>text:token_seq",
    )
    items = meta.join(text.with_columns(pl.col("text").str.strip_chars()), on="asin", how="left", maintain_order="left")
    dataset = read_recbole_dir(
        directory,
        dataset=stem,
        items=items,
        categorical=["brand"],
        missing_category=missing_category,
        name=directory.name,
    )
    asin_of = dict(zip(items["item_id"].to_list(), items["asin"].to_list(), strict=True))
    missing = [token for token in dataset.vocab.item_ids[1:] if token not in asin_of]
    if missing:
        raise DataError(f"{meta_path}: {len(missing)} items of the sequences have no row (first: {missing[:5]})")
    vocab = Vocab(
        item_ids=(PAD_TOKEN, *(asin_of[token] for token in dataset.vocab.item_ids[1:])),
        category_ids=dataset.vocab.category_ids,
    )
    return dataclasses.replace(dataset, vocab=vocab, options={**dataset.options, "source_format": "unisrec_amazon"})
