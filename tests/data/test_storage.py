"""The on-disk form of a prepared dataset: round trip, fingerprint, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hiersrec.data import storage
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.ingest import open_dataset
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.storage import load_prepared, save_prepared
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ArtifactError


def _assert_same_sessions(a: SessionData, b: SessionData) -> None:
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.items, b.items)
    if a.timestamps is None:
        assert b.timestamps is None
    else:
        np.testing.assert_array_equal(a.timestamps, b.timestamps)


def _tiny_with_valid() -> PreparedDataset:
    train = SessionData.from_lists([[1, 2], [2, 3, 1], []])  # an empty session must survive the round trip
    return PreparedDataset(
        name="tiny",
        train=train,
        test=SessionData.from_lists([[3, 1]]),
        valid=SessionData.from_lists([[1, 3, 3]]),
        vocab=Vocab.from_raw(["a", "b", "c"], ["x", "y"]),
        catalog=ItemCatalog(item_category=np.array([0, 1, 2, 2]), n_categories=2),
        options={"min_item_support": np.int64(5)},
        provenance={"source": "hand-made", "fingerprint": "stale"},
    )


def test_round_trip_keeps_sessions_catalog_and_metadata(tmp_path, tiny_shop):
    out = save_prepared(tiny_shop, tmp_path / "shop")
    loaded = load_prepared(out)
    assert loaded.name == "synthetic"
    for split in ("train", "test"):
        _assert_same_sessions(getattr(tiny_shop, split), getattr(loaded, split))
    assert loaded.valid is None
    assert loaded.vocab == tiny_shop.vocab
    np.testing.assert_array_equal(loaded.catalog.item_category, tiny_shop.catalog.item_category)
    assert loaded.catalog.n_categories == 5
    np.testing.assert_array_equal(loaded.catalog.categorical["group"], tiny_shop.catalog.categorical["group"])
    np.testing.assert_array_equal(loaded.catalog.numeric["price"], tiny_shop.catalog.numeric["price"])
    assert np.isnan(loaded.catalog.numeric["price"][0])
    assert loaded.catalog.text == tiny_shop.catalog.text
    assert loaded.options == tiny_shop.options
    assert loaded.provenance["source"] == tiny_shop.provenance["source"]


def test_valid_split_empty_sessions_and_numpy_options(tmp_path):
    dataset = _tiny_with_valid()
    loaded = load_prepared(save_prepared(dataset, tmp_path / "tiny"))
    assert loaded.train.to_lists() == [[1, 2], [2, 3, 1], []]
    assert loaded.valid.to_lists() == [[1, 3, 3]]
    assert loaded.train.timestamps is None
    assert loaded.options == {"min_item_support": 5}
    assert loaded.catalog.text is None and loaded.catalog.categorical == {}


def test_manifest_counts_and_fingerprint(tmp_path):
    dataset = _tiny_with_valid()
    out = save_prepared(dataset, tmp_path / "a")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == storage.FORMAT_VERSION
    assert manifest["counts"] == {
        "items": 3,
        "categories": 2,
        "train_sessions": 3,
        "train_clicks": 5,
        "test_sessions": 1,
        "test_clicks": 2,
        "valid_sessions": 1,
        "valid_clicks": 3,
    }
    assert sorted(manifest["files"]) == [
        "categories.parquet",
        "items.parquet",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    # The stale fingerprint in the input provenance is replaced by the one of the written files.
    assert "fingerprint" not in manifest["provenance"]
    loaded = load_prepared(out)
    assert loaded.provenance["fingerprint"] == manifest["fingerprint"] != "stale"
    # Same content -> same fingerprint; different content -> different fingerprint.
    assert load_prepared(save_prepared(loaded, tmp_path / "b")).provenance["fingerprint"] == manifest["fingerprint"]
    changed = PreparedDataset(**{**dataset.__dict__, "test": SessionData.from_lists([[1, 3]])})
    assert load_prepared(save_prepared(changed, tmp_path / "c")).provenance["fingerprint"] != manifest["fingerprint"]


def test_failed_write_leaves_previous_dataset_and_no_temporary_files(tmp_path, monkeypatch, tiny_shop):
    out = save_prepared(_tiny_with_valid(), tmp_path / "ds")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []
    real_write = storage._write_table

    def failing_write(table, path):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return real_write(table, path)

    monkeypatch.setattr(storage, "_write_table", failing_write)
    with pytest.raises(OSError, match="injected"):
        save_prepared(tiny_shop, out)
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert load_prepared(out).name == "tiny"


def test_failed_first_write_creates_nothing(tmp_path, monkeypatch, tiny_shop):
    monkeypatch.setattr(storage, "_write_table", lambda table, path: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError):
        save_prepared(tiny_shop, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_replaces_existing_dataset_and_refuses_foreign_folder(tmp_path, tiny_shop):
    out = save_prepared(_tiny_with_valid(), tmp_path / "ds")
    save_prepared(tiny_shop, out)
    assert load_prepared(out).name == "synthetic"
    assert not (out / "valid.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a prepared dataset"):
        save_prepared(tiny_shop, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_prepared(save_prepared(tiny_shop, empty)).name == "synthetic"


def test_load_detects_corruption_and_version(tmp_path, tiny_shop):
    out = save_prepared(tiny_shop, tmp_path / "ds")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "test.parquet").write_bytes((out / "test.parquet").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="test.parquet.*sha256"):
        load_prepared(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_prepared(out)
    with pytest.raises(ArtifactError, match="not found"):
        load_prepared(tmp_path)


@pytest.mark.data
def test_real_diginetica_round_trip(shared_data, tmp_path):
    dataset = open_dataset(shared_data / "diginetica" / "srgnn_cat")
    loaded = load_prepared(save_prepared(dataset, tmp_path / "dig"))
    assert (loaded.train.n_sessions, loaded.test.n_sessions, loaded.vocab.n_items) == (186_670, 15_963, 43_097)
    _assert_same_sessions(dataset.test, loaded.test)
    np.testing.assert_array_equal(dataset.catalog.item_category, loaded.catalog.item_category)
