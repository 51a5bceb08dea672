"""Run directories: complete, atomic, loaded without unpickling, scoring exactly like the trained model."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from hiersrec.artifact import FORMAT_VERSION, load_artifact
from hiersrec.config import load_config
from hiersrec.data.batching import prefix_batch
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.train.run import TrainingData, fit_run

FAST = [
    "model.d_model=16",
    "model.d_ff=32",
    "model.max_len=7",
    "model.d_category=8",
    "model.d_feed=8",
    "model.categorical_features=group",
    "model.numeric_features=price",
    "model.text_features=hashed",
    "model.text_buckets=64",
    "train.epochs=2",
    "train.batch_targets=128",
    "train.warmup_steps=5",
    "train.show_progress=false",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def run(tiny_shop, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    artifact, result = fit_run(load_config(overrides=FAST), TrainingData.from_prepared(tiny_shop, 0.2), run_dir)
    return run_dir, artifact, result


def test_run_directory_holds_every_file(run):
    run_dir, _, result = run
    names = {p.name for p in run_dir.iterdir()}
    expected = {"config.json", "weights.pt", "vocab.json", "catalog.npz", "metrics.json", "meta.json"}
    assert expected | {"train_log.jsonl", "curve.png", "checkpoint.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log == result.history
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_meta_records_provenance_and_the_validation_split(run, tiny_shop):
    run_dir, _, _ = run
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["seed"] == 42 and meta["device"] == "cpu"
    for key in ("hiersrec_version", "commit", "torch_version", "machine", "train_sessions_sha256"):
        assert key in meta
    split = meta["validation_split"]
    assert split["split"] == "train_tail" and split["fraction"] == 0.2
    assert split["n_sessions"] == tiny_shop.validation_split(0.2)[1].n_sessions


def test_saved_and_reloaded_runs_score_identically(run, tiny_shop):
    run_dir, artifact, _ = run
    loaded = load_artifact(run_dir)
    targets = tiny_shop.test.target_positions()[:50]
    batch = prefix_batch(tiny_shop.test, tiny_shop.catalog, targets, 7)
    assert torch.equal(loaded.model.score(batch), artifact.model.score(batch))
    assert torch.equal(loaded.model.score_categories(batch), artifact.model.score_categories(batch))
    assert loaded.vocab == tiny_shop.vocab
    assert np.array_equal(loaded.catalog.item_category, tiny_shop.catalog.item_category)
    assert loaded.catalog.text == tiny_shop.catalog.text
    assert np.array_equal(loaded.catalog.numeric["price"], tiny_shop.catalog.numeric["price"], equal_nan=True)
    assert loaded.config.model.n_items == tiny_shop.catalog.n_items + 1
    assert loaded.metrics["best_epoch"] == artifact.metrics["best_epoch"]


def test_weights_hold_tensors_only(run):
    run_dir, _, _ = run
    state = torch.load(run_dir / "weights.pt", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_object_is_refused(run, tmp_path):
    run_dir, _, _ = run
    for path in run_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "weights.pt").write_bytes(pickle.dumps({"evil": print}))  # not a tensors-only file
    with pytest.raises(ArtifactError, match="tensors only"):
        load_artifact(tmp_path)


def test_incomplete_or_foreign_runs_are_artifact_errors(run, tmp_path):
    run_dir, _, _ = run
    for path in run_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_artifact(tmp_path)


def test_an_existing_run_is_not_overwritten_and_resume_needs_the_same_config(run, tiny_shop):
    run_dir, _, _ = run
    data = TrainingData.from_prepared(tiny_shop, 0.2)
    with pytest.raises(ArtifactError, match="not empty"):
        fit_run(load_config(overrides=FAST), data, run_dir)
    with pytest.raises(ConfigError, match="differs"):
        fit_run(load_config(overrides=[*FAST, "train.lr=1e-4"]), data, run_dir, resume=True)


def test_training_data_never_holds_the_test_split(tiny_shop):
    data = TrainingData.from_prepared(tiny_shop, 0.1)
    assert not hasattr(data, "test")
    assert data.train.n_sessions + data.valid.n_sessions == tiny_shop.train.n_sessions
    with pytest.raises(TypeError, match="TrainingData"):
        fit_run(load_config(overrides=FAST), tiny_shop, "unused")


def test_refit_trains_on_all_training_sessions_for_the_chosen_epochs(tiny_shop, tmp_path):
    data = TrainingData.for_refit(tiny_shop, 0.2)
    assert data.valid is None and data.train.n_sessions == tiny_shop.train.n_sessions
    assert data.validation["epochs_chosen_on"]["split"] == "train_tail"
    config = load_config(overrides=[*FAST, "train.epochs=3"])
    artifact, result = fit_run(config, data, tmp_path / "refit", stop_after=2)
    assert [r["epoch"] for r in result.history] == [1, 2] and result.best_epoch == 2
    assert not any(k.startswith("valid_") for k in result.history[-1]) and result.best_metrics == {}
    assert artifact.meta["validation_split"]["split"].startswith("none")
    assert load_artifact(tmp_path / "refit").metrics["stop_after"] == 2


@pytest.mark.parametrize("feed", ["concat", "prior"])
def test_a_format_1_run_loads_with_its_category_feed_weights(tiny_shop, tmp_path, feed):
    # Format 1 (before the category feed was its own module) kept feed_proj.*, feed.* and prior_weight on the model.
    import shutil

    overrides = [*FAST, f"model.category_feed={feed}", "train.epochs=1"]
    artifact, _ = fit_run(load_config(overrides=overrides), TrainingData.from_prepared(tiny_shop, 0.2), tmp_path / "v2")
    old = tmp_path / "v1"
    shutil.copytree(tmp_path / "v2", old)
    renames = {
        "category_feed.proj.": "feed_proj.",
        "category_feed.ffn.": "feed.",
        "category_feed.prior_weight": "prior_weight",
    }
    state = torch.load(old / "weights.pt", weights_only=True)
    renamed = {}
    for key, value in state.items():
        for new, previous in renames.items():
            if key.startswith(new):
                key = previous + key[len(new) :]
        renamed[key] = value
    assert renamed.keys() != state.keys()
    torch.save(renamed, old / "weights.pt")
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    batch = prefix_batch(tiny_shop.test, tiny_shop.catalog, tiny_shop.test.target_positions()[:20], 7)
    assert torch.equal(load_artifact(old).model.score(batch), artifact.model.score(batch))
