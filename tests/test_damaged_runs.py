"""Damaged run directories (issue 9): every broken file is exit 5 with one line naming it, never a traceback.

Each case copies a good run, damages one file, and asks ``hiersrec recommend`` (which loads the run as
``evaluate`` and ``serve`` do) for one session.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hiersrec.cli import ExitStatus, main
from hiersrec.config import DataConfig, FittedModelConfig, RunConfig, TrainConfig
from hiersrec.errors import ArtifactError
from hiersrec.models.hiersrec import HierSRecConfig
from hiersrec.train.run import TrainingData, fit_run


@pytest.fixture(scope="module")
def good_runs(tiny_shop, tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    model = HierSRecConfig(d_model=16, n_heads=2, d_ff=24, d_category=6, d_feed=5, max_len=7)
    train = TrainConfig(epochs=1, batch_targets=256, warmup_steps=2, show_progress=False, device="cpu")
    data = TrainingData.from_prepared(tiny_shop)
    fit_run(RunConfig(data=DataConfig(), model=model, train=train), data, root / "hiersrec")
    fit_run(RunConfig(model=FittedModelConfig(name="vstan")), data, root / "vstan")
    return root


def _write(name, content):
    def damage(run):
        path = run / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return damage


def _edit_json(name, change):
    def damage(run):
        path = run / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return damage


def _edit_weights(change):
    def damage(run):
        state = torch.load(run / "weights.pt", weights_only=True)
        change(state)
        torch.save(state, run / "weights.pt")

    return damage


def _first_float(state):
    return next(key for key, value in state.items() if value.is_floating_point() and value.numel() > 1)


def _npz(**arrays):
    def damage(run):
        np.savez(run / "catalog.npz", **arrays)
        (run / "catalog.npz").replace(run / "catalog.npz")

    return damage


CASES = {
    "vocab not json": ("hiersrec", _write("vocab.json", "{not json"), "vocab.json"),
    "vocab not utf-8": ("hiersrec", _write("vocab.json", b"\xff\xfe\x00"), "vocab.json"),
    "vocab a list": ("hiersrec", _write("vocab.json", "[]"), "vocab.json"),
    "vocab ids not strings": ("hiersrec", _edit_json("vocab.json", lambda v: {**v, "item_ids": [1, 2]}), "vocab.json"),
    "vocab repeated id": (
        "hiersrec",
        _edit_json("vocab.json", lambda v: {**v, "item_ids": [*v["item_ids"][:-1], v["item_ids"][1]]}),
        "vocab.json",
    ),
    "vocab shorter than the model": (
        "hiersrec",
        _edit_json("vocab.json", lambda v: {**v, "item_ids": v["item_ids"][:-1]}),
        "catalog.npz",
    ),
    "meta garbage": ("hiersrec", _write("meta.json", "\x00garbage"), "meta.json"),
    "meta a list": ("hiersrec", _write("meta.json", "[1]"), "meta.json"),
    "meta unknown version": ("hiersrec", _edit_json("meta.json", lambda m: {**m, "format_version": 99}), "meta.json"),
    "metrics garbage": ("hiersrec", _write("metrics.json", "nope"), "metrics.json"),
    "config max_len terabytes": (
        "hiersrec",
        _edit_json("config.json", lambda c: {**c, "model": {**c["model"], "max_len": 10**12}}),
        "config.json",
    ),
    "config not an object": ("hiersrec", _write("config.json", "3"), "config.json"),
    "catalog garbage": ("hiersrec", _write("catalog.npz", b"PK\x03\x04broken"), "catalog.npz"),
    "catalog without categories": ("hiersrec", _npz(n_categories=np.array(5)), "catalog.npz"),
    "popularity garbage": ("hiersrec", _write("popularity.npy", b"\x93NUMPY broken"), "popularity.npy"),
    "popularity wrong shape": ("hiersrec", lambda run: np.save(run / "popularity.npy", np.ones(3)), "popularity.npy"),
    "weights garbage": ("hiersrec", _write("weights.pt", b"not a zip"), "weights.pt"),
    "weights missing a key": ("hiersrec", _edit_weights(lambda s: s.pop(_first_float(s))), "weights.pt"),
    "weights of another shape": (
        "hiersrec",
        _edit_weights(lambda s: s.__setitem__(_first_float(s), torch.zeros(3, 3))),
        "weights.pt",
    ),
    "weights full of nan": (
        "hiersrec",
        _edit_weights(lambda s: s[_first_float(s)].fill_(float("nan"))),
        "weights.pt",
    ),
    "fitted state garbage": ("vstan", _write("fitted_state.npz", b"garbage"), "fitted_state"),
    "fitted layout garbage": ("vstan", _write("fitted_state.json", "{"), "fitted_state"),
    "fitted state missing": ("vstan", lambda run: (run / "fitted_state.npz").unlink(), "fitted_state.npz"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_is_exit_5_naming_the_file(good_runs, tmp_path, capsys, case):
    model, damage, named = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(good_runs / model, run)
    damage(run)
    with pytest.raises(SystemExit) as exited:
        main(["recommend", str(run), "--session", "i1,i2"])
    err = capsys.readouterr().err
    assert exited.value.code == ExitStatus.ARTIFACT_ERROR, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert named in err


def test_an_intact_copy_still_loads(good_runs, tmp_path, capsys):
    # The cases above fail for their damage, not for the copying.
    for model in ("hiersrec", "vstan"):
        shutil.copytree(good_runs / model, tmp_path / model)
        with pytest.raises(SystemExit) as exited:
            main(["recommend", str(tmp_path / model), "--session", "i1,i2", "--json"])
        assert exited.value.code == 0
        assert len(json.loads(capsys.readouterr().out)["item_ids"]) == 20


def test_a_run_left_with_only_its_config_after_a_failed_start_starts_again(tiny_shop, tmp_path):
    run = tmp_path / "run"
    config = RunConfig(model=FittedModelConfig(name="pop"))
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))  # what a start that failed leaves behind
    artifact, _ = fit_run(config, TrainingData.from_prepared(tiny_shop), run)
    assert (run / "meta.json").is_file() and artifact.model.describe() == {"name": "pop"}
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="is not empty"):
        fit_run(config, TrainingData.from_prepared(tiny_shop), run)


def test_a_second_writer_of_a_run_directory_is_refused(tiny_shop, tmp_path):
    # issue 9: two trainings into one --out both wrote it; the second now gets a clear error while the first runs.
    import threading

    from hiersrec.files import TargetBusyError, claim_target

    run, claimed, done = tmp_path / "run", threading.Event(), threading.Event()

    def first_writer():
        with claim_target(run):
            claimed.set()
            done.wait(10)

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        claimed.wait(10)
        with pytest.raises(TargetBusyError, match="being written"):
            fit_run(RunConfig(model=FittedModelConfig(name="pop")), TrainingData.from_prepared(tiny_shop), run)
    finally:
        done.set()
        thread.join()
    fit_run(RunConfig(model=FittedModelConfig(name="pop")), TrainingData.from_prepared(tiny_shop), run)
    assert (run / "meta.json").is_file()
