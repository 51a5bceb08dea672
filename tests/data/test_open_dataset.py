"""`open_dataset` picks the reader from the folder's layout: prepared, SR-GNN, RecBole or synthetic."""

from __future__ import annotations

import dataclasses

import pytest

from hiersrec.data.ingest import open_dataset
from hiersrec.data.storage import save_prepared
from hiersrec.errors import DataError


def test_open_dataset_dispatches_on_layout(tmp_path, monkeypatch, tiny_shop):
    prepared = save_prepared(dataclasses.replace(tiny_shop, name="tiny"), tmp_path / "prepared")
    assert open_dataset(prepared).name == "tiny"
    assert open_dataset(str(prepared)).provenance["fingerprint"]
    srgnn = tmp_path / "toy" / "srgnn_cat"
    srgnn.mkdir(parents=True)
    (srgnn / "item_category.tsv").write_text("item_id\tcategory_id\n7\t1\n8\t2\n")
    (srgnn / "train_sessions.tsv").write_text("session_idx\titem_ids\n0\t7 8 7\n")
    (srgnn / "test_sessions.tsv").write_text("session_idx\titem_ids\n0\t8 7\n")
    from_srgnn = open_dataset(srgnn)
    assert from_srgnn.name == "toy" and from_srgnn.train.to_lists() == [[1, 2, 1]]
    monkeypatch.chdir(tmp_path)
    synthetic = open_dataset("synthetic")
    assert synthetic.name == "synthetic" and synthetic.catalog.n_items == 2000
    with pytest.raises(DataError, match="not found.*manifest.json"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="without a known dataset layout"):
        open_dataset(tmp_path / "toy")
