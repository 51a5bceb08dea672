"""Every model goes the same way through the command line: prepare -> train/fit -> evaluate -> recommend -> serve.

A fitted VSTAN and a trained HierSRec each go from a prepared synthetic shop to a run directory, are evaluated
on test from it, recommend for a session, and are served over HTTP by a real ``hiersrec serve`` process; the
served ranking is the one ``recommend`` printed, and a fitted run's evaluation equals fitting it in
``evaluate --model``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from hiersrec.cli import main

pytestmark = pytest.mark.slow

HIERSREC_FAST = [
    "--preset", "synthetic_hiersrec",
    "--set", "model.d_model=16", "--set", "model.d_ff=32", "--set", "model.max_len=7",
    "--set", "train.epochs=2", "--set", "train.batch_targets=256", "--set", "train.warmup_steps=5",
    "--set", "train.device=cpu",
]  # fmt: skip


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    assert exited.value.code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shop"
    code = subprocess.run(
        [sys.executable, "-m", "hiersrec", "data", "prepare", "--source", "synthetic", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(run_dir, body: dict) -> dict:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hiersrec", "serve", str(run_dir), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the service did not start within 60 s"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/recommend",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        model = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/model", timeout=5).read())
        return {"answer": answer, "model": model}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("model", "train_args"),
    [("vstan", ["--model", "vstan", "--set", "model.k=50"]), ("hiersrec", HIERSREC_FAST)],
)
def test_prepare_train_evaluate_recommend_serve(prepared, tmp_path, capsys, model, train_args):
    run_dir = tmp_path / model
    summary = json.loads(
        run_cli(["train", "--data", str(prepared), "--out", str(run_dir), *train_args, "--json"], capsys)
    )
    assert summary["model"] == model and summary["run"] == str(run_dir)

    report = json.loads(run_cli(["evaluate", str(run_dir), "--data", str(prepared), "--k", "20", "--json"], capsys))
    assert report["model"]["name"] == model and report["extra"]["split"] == "test"
    assert 0 < report["metrics"]["mrr@20"] <= report["metrics"]["hr@20"] <= 1
    if model == "vstan":  # the run directory scores exactly as fitting the same model in evaluate --model
        direct = run_cli(
            ["evaluate", "--model", "vstan", "--set", "vstan.k=50", "--data", str(prepared), "--k", "20", "--json"],
            capsys,
        )
        assert json.loads(direct)["metrics"] == report["metrics"]

    dataset_items = json.loads((run_dir / "vocab.json").read_text())["item_ids"]
    session = dataset_items[3:6]
    printed = json.loads(
        run_cli(["recommend", str(run_dir), "--session", ",".join(session), "-k", "10", "--json"], capsys)
    )
    assert len(printed["item_ids"]) == 10 and printed["fallback"] is None

    served = _serve(run_dir, {"sessions": [{"items": session}], "k": 10})
    items = served["answer"]["results"][0]["items"]
    assert [item["item_id"] for item in items] == printed["item_ids"]
    assert [item["score"] for item in items] == pytest.approx(printed["scores"], rel=1e-5, abs=1e-6)
    assert served["model"]["name"] == model
    assert served["model"]["candidate_budgets"] is (model == "hiersrec")
