"""Importers: from source files in another format to a `PreparedDataset`, and `open_dataset` over them.

One module per source format:

* `hiersrec.data.ingest.srgnn`: SR-GNN session TSV folders (already preprocessed);
* `hiersrec.data.ingest.diginetica`: raw DIGINETICA with the exact SR-GNN preprocessing;
* `hiersrec.data.ingest.clicklog`: a generic click log (CSV/Parquet) plus an optional item table;
* `hiersrec.data.ingest.recbole`: RecBole atomic files (``.inter``, ``.item``);
* `hiersrec.data.ingest.amazon`: the Amazon review folders in UniSRec's layout (RecBole files plus metadata).

They share `hiersrec.data.ingest.readers` (reading source tables with clear errors),
`hiersrec.data.ingest.items` (item tables and the category policy) and `hiersrec.data.ingest.assemble`
(click frames to a `PreparedDataset`). The on-disk prepared format is `hiersrec.data.storage`, which knows
nothing of the importers.
"""

from __future__ import annotations

from pathlib import Path

from hiersrec.data.ingest.amazon import is_unisrec_amazon_dir, read_unisrec_amazon
from hiersrec.data.ingest.recbole import read_recbole_dir
from hiersrec.data.ingest.srgnn import read_srgnn_dir
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.storage import MANIFEST, is_prepared_dir, load_prepared
from hiersrec.data.synthetic import make_synthetic_shop
from hiersrec.errors import DataError
from hiersrec.files import recover_directory

SYNTHETIC = "synthetic"

__all__ = ["open_dataset"]


def open_dataset(spec: str | Path) -> PreparedDataset:
    """Open a dataset from a prepared folder, an SR-GNN TSV folder, a RecBole folder, or ``"synthetic"``.

    Args:
        spec: ``"synthetic"`` (the embedded default shop, `make_synthetic_shop()`; write ``./synthetic`` for a
            folder of that name), a prepared folder (its ``manifest.json`` says so; `load_prepared`), a folder with
            ``train_sessions.tsv`` (`read_srgnn_dir`), or a folder of RecBole ``.inter`` files
            (`read_unisrec_amazon` when it also holds ``item_meta_derived.tsv``, else `read_recbole_dir`).

    Returns:
        The dataset, read and indexed in memory (nothing is written).

    Raises:
        DataError: ``spec`` is none of these.
        ArtifactError: ``spec`` holds a ``manifest.json`` that is not a readable prepared dataset's, and no
            other known layout.
    """
    if str(spec) == SYNTHETIC:
        return make_synthetic_shop()
    path = Path(spec)
    recover_directory(path)
    if is_prepared_dir(path):
        return load_prepared(path)
    if (path / "train_sessions.tsv").is_file():
        return read_srgnn_dir(path)
    if path.is_dir() and any(path.glob("*.inter")):
        return read_unisrec_amazon(path) if is_unisrec_amazon_dir(path) else read_recbole_dir(path)
    if (path / MANIFEST).is_file():
        return load_prepared(path)  # raises, naming what is wrong with that manifest
    what = "a folder without a known dataset layout" if path.is_dir() else "not found"
    raise DataError(
        f"{spec}: {what}; give a prepared folder (with {MANIFEST}, from 'hiersrec data prepare'), an SR-GNN "
        "folder (with train_sessions.tsv), a RecBole folder (with <name>.inter files) or 'synthetic'"
    )
