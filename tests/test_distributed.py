"""Data-parallel training: 2 gloo processes compute what 1 process computes on the same global batches.

One group of 2 processes (`torch.multiprocessing`, gloo on CPU) runs every distributed case once (training
equivalence for HierSRec and SASRec, validation metrics, a resumed run into a run directory); the tests
compare its results with single-process references. The CLI's ``--nproc 2`` runs through torchrun in a
subprocess. Every wait is bounded: a hung rank fails the test instead of blocking the run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hiersrec.artifact import load_artifact
from hiersrec.cli import ExitStatus, main
from hiersrec.config import TrainConfig, load_config
from hiersrec.data.storage import save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.models import make_model
from hiersrec.train import distributed
from hiersrec.train.batches import SessionWindows
from hiersrec.train.checkpoint import read_checkpoint
from hiersrec.train.loop import train
from hiersrec.train.run import TrainingData, fit_run
from hiersrec.train.validate import validation_metrics

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo")

WORLD_SIZE = 2
TIMEOUT_S = 90  # the whole group of processes; a collective gives up after half of it
SHOP = SyntheticShopConfig(n_items=37, n_categories=5, n_groups=2, n_sessions=300, seed=7)
MODEL_PARAMS = {
    "hiersrec": {"d_model": 16, "n_heads": 2, "d_ff": 24, "d_category": 6, "d_feed": 5, "max_len": 7},
    "sasrec": {"d_model": 16, "n_heads": 2, "d_ff": 24, "max_len": 7},
}
NO_DROPOUT = {"dropout": 0.0, "input_dropout": 0.0}  # equal parameters need equal dropout masks: none
EQUIVALENCE = TrainConfig(
    epochs=2, batch_targets=51, warmup_steps=2, show_progress=False, device="cpu", seed=3, threads=1
)
RUN_SETTINGS = [
    "model.d_model=16", "model.d_ff=24", "model.max_len=7", "train.epochs=2", "train.batch_targets=97",
    "train.warmup_steps=3", "train.device=cpu", "train.show_progress=false",
]  # fmt: skip


def _shop():
    return make_synthetic_shop(SHOP)


def _train_sessions(shop):
    return shop.train.subset(np.arange(70))


def _trained_state(name: str) -> dict[str, torch.Tensor]:
    shop = _shop()
    torch.manual_seed(0)
    model = make_model(name, {**MODEL_PARAMS[name], **NO_DROPOUT}, shop.catalog)
    return train(model, _train_sessions(shop), None, shop.catalog, EQUIVALENCE).best_state


def _validation_cases(shop):
    """(sessions, protocol, batch_targets) whose case and batch counts are odd: uneven shards."""
    return [
        (shop.test.subset(np.arange(11)), "last_item", 1),  # 11 cases, 11 batches of one
        (shop.test.subset(np.arange(23)), "all_prefixes", 9),
    ]


def _validation_model(catalog):
    torch.manual_seed(1)
    return make_model("hiersrec", MODEL_PARAMS["hiersrec"], catalog).eval()


def _all_validation_metrics() -> list[dict[str, float]]:
    shop = _shop()
    model = _validation_model(shop.catalog)
    return [
        validation_metrics(model, sessions, shop.catalog, ks=(5, 20), protocol=protocol, batch_targets=batch)
        for sessions, protocol, batch in _validation_cases(shop)
    ]


def _run_data() -> TrainingData:
    return TrainingData.from_prepared(_shop(), 0.1)


def _run_config():
    return load_config(None, RUN_SETTINGS, model="hiersrec")


def _resumed_run(run_dir: str) -> dict:
    """Resume ``run_dir`` (one epoch done by one process) and record what this rank wrote under it."""
    written: list[str] = []
    root = str(Path(run_dir).parent)

    def audit(event: str, args: tuple) -> None:
        # Every file or folder created, replaced or removed near the run (the claim's lock file included).
        if event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "tempfile.mkstemp", "shutil.rmtree"):
            paths = [str(arg) for arg in args if isinstance(arg, str | os.PathLike)]  # a rename has two
            if any(path.startswith(root) for path in paths):
                written.append(" ".join([event, *paths]))
        elif event == "open" and str(args[0]).startswith(root):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                written.append(f"open {args[0]}")

    sys.addaudithook(audit)
    artifact, result = fit_run(_run_config(), _run_data(), run_dir, resume=True)
    return {"written": written, "history": result.history, "valid": artifact.metrics["valid"]}


def _rank_main(rank: int, port: int, out_dir: str, run_dir: str, new_run_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )  # fmt: skip
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu"), timeout=timedelta(seconds=TIMEOUT_S // 2)):
        results = {
            "world": distributed.world(),
            "trained": {name: _trained_state(name) for name in MODEL_PARAMS},
            "validation": _all_validation_metrics(),
            "stopped": fit_run(_run_config(), _run_data(), new_run_dir, stop_after=1)[1].history,
            "stopped_run_dir": new_run_dir,  # epoch 1 of 2 done by 2 processes
            "resumed": _resumed_run(run_dir),  # last: it installs an audit hook
        }
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn(out_dir: Path, run_dir: Path, new_run_dir: Path) -> list[dict]:
    """Run `_rank_main` in WORLD_SIZE processes; fail (killing them) after TIMEOUT_S."""
    args = (_free_port(), str(out_dir), str(run_dir), str(new_run_dir))
    group = mp.start_processes(_rank_main, args=args, nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not group.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in group.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} training processes did not finish within {TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> tuple[Path, dict]:
    """A run directory after epoch 1 of 2, trained by one process (the start of the resume case)."""
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    _, result = fit_run(_run_config(), _run_data(), run_dir, stop_after=1)
    return run_dir, result.history[0]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, one_epoch_run) -> list[dict]:
    """What each of the 2 ranks returned from the distributed cases."""
    run_dir, _ = one_epoch_run
    out_dir = tmp_path_factory.mktemp("ranks")
    return _spawn(out_dir, run_dir, out_dir / "two_ranks_run")


def test_rank_steps_deal_every_batch_once_and_weigh_the_last_step_exactly():
    batches = [np.array([0]), np.array([1, 2]), np.array([3]), np.array([4, 5]), np.array([6])]
    targets = np.array([1, 2, 3, 1, 1, 1, 5])
    steps = [distributed.rank_steps(batches, targets, distributed.World(r, 2)) for r in range(2)]
    assert [len(s) for s in steps] == [3, 3]  # ceil(5 / 2): no batch dropped
    assert [s.rows.tolist() for s in steps[0]] == [[0], [3], [6]]
    assert [s.rows.tolist() for s in steps[1][:2]] == [[1, 2], [4, 5]]
    assert [s.n_targets for s in steps[0]] == [6, 3, 5]
    assert [(a.share, b.share) for a, b in zip(*steps, strict=True)] == [(1 / 6, 5 / 6), (1 / 3, 2 / 3), (1.0, 0.0)]


@pytest.mark.parametrize("name", list(MODEL_PARAMS))
def test_two_ranks_end_with_the_parameters_of_one_process_on_the_global_batches(ranks, name, monkeypatch):
    # One process whose every batch is the union of the batches the 2 ranks take in one step (the last
    # step has one batch left: an odd count of batches tests the stand-in of weight 0).
    windows = SessionWindows.from_sessions(_train_sessions(_shop()), MODEL_PARAMS[name]["max_len"])
    first_epoch = windows.epoch_batches(EQUIVALENCE.batch_targets, np.random.default_rng([EQUIVALENCE.seed, 1]))
    assert len(first_epoch) % WORLD_SIZE == 1
    rank_batches = SessionWindows.epoch_batches

    def global_batches(self, batch_targets, rng):
        batches = rank_batches(self, batch_targets, rng)
        return [np.concatenate(batches[i : i + WORLD_SIZE]) for i in range(0, len(batches), WORLD_SIZE)]

    monkeypatch.setattr(SessionWindows, "epoch_batches", global_batches)
    expected = _trained_state(name)
    initial = _shop_model_state(name)
    for rank in ranks:
        assert rank["trained"][name].keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(rank["trained"][name][key], value, rtol=1e-4, atol=2e-5, msg=key)
    assert any(not torch.equal(expected[key], initial[key]) for key in expected)  # it did train


def _shop_model_state(name):
    torch.manual_seed(0)
    return make_model(name, {**MODEL_PARAMS[name], **NO_DROPOUT}, _shop().catalog).state_dict()


def test_validation_metrics_over_uneven_shards_equal_one_process_exactly(ranks):
    expected = _all_validation_metrics()
    assert expected[0]["hr@20"] * 11 == pytest.approx(round(expected[0]["hr@20"] * 11))  # over 11 cases
    for rank in ranks:
        assert rank["validation"] == expected  # bit for bit: the same batches, added in the same order


def test_only_rank_0_writes_and_a_run_resumes_with_another_number_of_processes(ranks, one_epoch_run):
    run_dir, first_epoch = one_epoch_run
    main_rank, other_rank = ranks
    assert (main_rank["world"].rank, other_rank["world"].rank) == (0, 1)
    assert other_rank["resumed"]["written"] == []
    assert any(entry.endswith("checkpoint.pt") for entry in main_rank["resumed"]["written"]), main_rank["resumed"]
    history = main_rank["resumed"]["history"]
    # The same losses and metrics on both ranks (timings aside), so the same stopping decisions.
    assert [_outcome(record) for record in history] == [_outcome(r) for r in other_rank["resumed"]["history"]]
    assert [record["epoch"] for record in history] == [1, 2] and history[0] == first_epoch
    # Epoch 2 continues the schedule where 2 processes would be after epoch 1 (ceil(batches / 2) a epoch).
    data, cfg = _run_data(), _run_config().train
    n_batches = _batches_per_epoch(data, cfg)
    assert history[1]["steps"] == sum(math.ceil(n / WORLD_SIZE) for n in n_batches)
    assert history[1]["steps"] < history[0]["steps"] + n_batches[1]  # fewer steps than one process makes
    # The epoch's validation by 2 ranks is one process's validation of the same weights.
    checkpoint = read_checkpoint(run_dir)
    assert checkpoint["world_size"] == WORLD_SIZE and checkpoint["epoch"] == 2
    model = load_artifact(run_dir).model
    model.load_state_dict(checkpoint["model"])
    metrics = validation_metrics(model, data.valid, data.catalog, ks=(cfg.valid_k,), batch_targets=cfg.eval_batch_size)
    assert {name: history[1][f"valid_{name}"] for name in metrics} == metrics
    assert load_artifact(run_dir).meta["processes"] == WORLD_SIZE


def test_a_run_of_two_ranks_resumes_in_one_process(ranks):
    run_dir = ranks[0]["stopped_run_dir"]
    _, result = fit_run(_run_config(), _run_data(), run_dir, resume=True)
    assert _outcome(result.history[0]) == _outcome(ranks[0]["stopped"][0])
    n_batches = _batches_per_epoch(_run_data(), _run_config().train)
    assert result.history[1]["steps"] == n_batches[0] + n_batches[1]  # as if one process had run epoch 1
    assert read_checkpoint(run_dir)["world_size"] == 1


def _batches_per_epoch(data: TrainingData, cfg: TrainConfig) -> list[int]:
    windows = SessionWindows.from_sessions(data.train, 7)
    return [len(windows.epoch_batches(cfg.batch_targets, np.random.default_rng([cfg.seed, e]))) for e in (1, 2)]


def _outcome(record: dict) -> dict:
    return {key: value for key, value in record.items() if "second" not in key}


def test_cli_nproc_trains_through_torchrun(tmp_path):
    data = save_prepared(_shop(), tmp_path / "data")
    out = tmp_path / "run"
    settings = [arg for setting in [*RUN_SETTINGS, "train.epochs=1"] for arg in ("--set", setting)]
    command = [sys.executable, "-m", "hiersrec", "train", "--data", str(data), "--out", str(out), *settings]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        [*command, "--nproc", str(WORLD_SIZE), "--json"], capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert len(finished.stdout.strip().splitlines()) == 1
    assert summary["epochs_run"] == 1 and set(summary["valid"]) >= {"hr@20", "mrr@20"}
    assert load_artifact(out).meta["processes"] == WORLD_SIZE


def test_cli_refuses_several_processes_for_a_fitted_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", "synthetic", "--model", "pop", "--out", str(tmp_path / "run"), "--nproc", "2"])
    assert exited.value.code == ExitStatus.CONFIG_ERROR
    assert "fitted by one process" in capsys.readouterr().err
