"""Training seconds per epoch, hiersrec vs RecBole 1.2.1, side by side: the same sessions, width and batch.

Both toolkits train on the same sessions: the training part of a prepared dataset (``--split fit``: the
sessions a hiersrec run fits on, `TrainingData.from_prepared`, the validation tail left out; ``--split all``:
every training session), optionally only the first ``--max-sessions`` of them. One epoch of either toolkit
predicts every click of those sessions but the first from the clicks before it: RecBole's sequential dataset
turns each prefix into one training instance (its last ``MAX_ITEM_LIST_LENGTH`` = 50 clicks, the next click
its target); hiersrec trains every position of every session (its last ``model.max_len`` = 50 clicks). Both
counts of targets are reported.

How each side is measured, one model at a time, each in a fresh process of its own (so its peak resident
memory is its own), with ``--threads`` torch threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``):

* **hiersrec**: the real training entry point, `hiersrec.train.run.fit_run`, for ``--hiersrec-epochs``
  epochs (``train.batch_targets`` = ``--batch``, no validation pass); the seconds per epoch are the
  ``train_seconds`` of the epochs in the run's ``train_log.jsonl`` (the whole epoch, batch building
  included), averaged over the epochs. Nothing is extrapolated.
* **RecBole**: a runner script executed by ``--recbole-python`` (RecBole lives in its own virtual
  environment; this script never imports it) builds ``Config``, ``create_dataset`` and the training
  dataloader (``train_batch_size`` = ``--batch``, shuffled) from atomic files written here from the same
  sessions, the model (``loss_type: CE`` over all items, ``train_neg_sample_args: ~``) and ``torch.optim.Adam``
  (RecBole's default learner, lr 1e-3). Each batch is timed from the end of the previous one: fetching it
  from the dataloader, ``optimizer.zero_grad(); loss = model.calculate_loss(interaction); loss.backward();
  optimizer.step()`` and ``loss.item()`` (what RecBole's ``Trainer._train_epoch`` does per batch). After
  ``--warmup`` untimed batches, ``--recbole-batches`` batches are timed; the seconds per epoch are
  **extrapolated**: the mean seconds per timed batch x the batches of one epoch (the median is reported
  too). ``--recbole-batches 0`` times the whole epoch instead (not extrapolated). RecBole's dataset and
  dataloader preparation (reading the files, remapping ids, the prefix augmentation) is timed separately and
  is not part of the epoch.

On a shared machine wall time is pessimistic for both sides alike; each side's process CPU seconds per
epoch divided by its threads ("if idle") estimates its wall time with those cores to itself.

    .venv/bin/python benchmarks/recbole_speed.py --data prepared/diginetica --models sasrec,gru4rec,srgnn \\
        --width 64 --batch 512 --threads 2 --recbole-python /work/recbole-venv/bin/python \\
        --recbole-batches 30 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reporting import REPO, header_lines, resolve_stem, results_header, write_results

RECBOLE_VERSION = "1.2.1"
# RecBole 1.2.1 seconds per epoch on diginetica, width 64, batch 512, this kind of 2-core machine (the issue).
ISSUE_REFERENCE_SECONDS = {"sasrec": 1426.0, "srgnn": 660.0, "gru4rec": 700.0}
DATASET_NAME = "hiersrec_sessions"  # the RecBole dataset (folder and file stem) written under --work
MAX_LEN = 50  # RecBole's MAX_ITEM_LIST_LENGTH and hiersrec's model.max_len, for every model here


def hiersrec_overrides(model: str, width: int) -> list[str]:
    """hiersrec model settings matched to `recbole_params` (see `DIFFERENCES`)."""
    own = {
        "sasrec": ["model.n_layers=2", "model.n_heads=2", f"model.d_ff={4 * width}"],
        "gru4rec": ["model.n_layers=1", "model.loss=cross-entropy"],
        "srgnn": ["model.n_steps=1"],
    }
    return [f"model.d_model={width}", f"model.max_len={MAX_LEN}", *own[model]]


def recbole_params(model: str, width: int) -> tuple[str, dict[str, Any]]:
    """(RecBole model class, its settings) matched to `hiersrec_overrides`."""
    return {
        "sasrec": ("SASRec", {
            "n_layers": 2, "n_heads": 2, "hidden_size": width, "inner_size": 4 * width,
            "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.0, "hidden_act": "gelu",
        }),
        "gru4rec": ("GRU4Rec", {"embedding_size": width, "hidden_size": width, "num_layers": 1, "dropout_prob": 0.0}),
        "srgnn": ("SRGNN", {"embedding_size": width, "step": 1}),
    }[model]  # fmt: skip


# Every difference between the two sides that the settings above do not remove.
DIFFERENCES = {
    "all models": [
        "optimiser: hiersrec AdamW (lr 1e-3 here, weight decay 0.05 on matrices, 200 warm-up steps then cosine "
        "decay, gradient norm clipped at 1.0); RecBole Adam (lr 1e-3, no weight decay, no clipping, constant rate)",
        "batches: hiersrec train.batch_targets = B packs whole sessions (or session windows) into batches of about "
        "B targets, every position of a session trained in one pass; RecBole's batches are B prefix instances, "
        "each one padded to 50 clicks and run through the model on its own",
        "loss: both the exact softmax cross-entropy over every item (hiersrec train.loss = auto: the full or the "
        "row-chunked kernel, the same value); hiersrec's item table also holds items that occur only outside the "
        "timed sessions (the whole catalogue), RecBole's too (the .item file lists every catalogue item)",
        "initialisation: each toolkit's own (no effect on speed)",
    ],
    "sasrec": [
        "blocks: hiersrec pre-LN (LayerNorm before attention and feed-forward), RecBole post-LN (BERT layout)",
        "dropout: hiersrec 0.2 on the input embeddings and on the residual branches, none on the attention "
        "weights; RecBole hidden_dropout_prob 0.2 (embeddings and residual branches), attn_dropout_prob 0.0 "
        "(RecBole's defaults are 0.5 and 0.5; the rate does not change the work)",
        "attention: both explicit matmul + masked softmax; hiersrec over a session's (or window's) causal "
        "positions once for all its targets, RecBole over each 50-click padded prefix, scoring its last position",
        "heads: 2 on both sides (RecBole's default; hiersrec's own default is 1)",
    ],
    "gru4rec": [
        "embedding: hiersrec constrained (the official GRU4Rec's default: the output item vectors, width W, are the "
        "GRU's inputs, through its own first GRU layer) plus a per-item output bias; RecBole an item table of "
        "embedding_size = W shared by input and output, torch's nn.GRU (bias=False) and a dense W x W layer after it",
        "hidden size: W on both sides (RecBole's default is embedding 64, hidden 128)",
        "dropout: none on either side (RecBole's default dropout_prob is 0.3)",
        "GRU: hiersrec one pass over each session scoring every click (truncated BPTT, the official GRU4Rec "
        "training); RecBole runs the GRU over every 50-click padded prefix and scores its last click",
    ],
    "srgnn": [
        "graphs: hiersrec builds each prefix's graph with batched torch operations (nodes = its distinct items); "
        "RecBole builds each prefix's graph in a numpy loop per instance, padded to 50 nodes (with the PAD node)",
        "steps and readout: one gated GNN step and the hybrid readout on both sides (hiersrec's default width "
        "100 set to W)",
    ],
}

SKIPPED = {  # models one toolkit lacks (or this benchmark has no matched pair for)
    "hiersrec": "RecBole has no HierSRec model",
}

RECBOLE_RUNNER = r'''
"""Written by benchmarks/recbole_speed.py: time RecBole training batches; run with RecBole's python."""
import json, os, resource, statistics, sys, time

job = json.load(open(sys.argv[1]))
import torch

torch.set_num_threads(job["threads"])
started = time.perf_counter()
from recbole.config import Config
from recbole.data import create_dataset
from recbole.data.utils import get_dataloader
from recbole.utils import get_model, init_seed

config = Config(model=job["model"], dataset=job["dataset"], config_dict=job["config"])
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
# dataset.build(): the prefix augmentation, then the split (RS [1, 0, 0]: every instance in train).
train_set = dataset.build()[0]
train_data = get_dataloader(config, "train")(config, train_set, None, shuffle=config["shuffle"])
prepare_seconds = time.perf_counter() - started
rss_after_prepare = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
model.train()
n_batches = len(train_data)
wanted = n_batches if job["batches"] == 0 else min(n_batches, job["warmup"] + job["batches"])
records, total_loss = [], 0.0
iterator = iter(train_data)
wall, cpu = time.perf_counter(), time.process_time()
for index in range(wanted):
    interaction = next(iterator).to(config["device"])
    fetched = time.perf_counter()
    optimizer.zero_grad()
    # bf16: what RecBole's own enable_amp does on a CPU (torch.autocast's CPU default is bfloat16).
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=job["precision"] == "bf16"):
        loss = model.calculate_loss(interaction)
    if torch.isnan(loss):
        raise ValueError(f"NaN loss at batch {index}")
    loss.backward()
    optimizer.step()
    total_loss += loss.item()
    now, now_cpu = time.perf_counter(), time.process_time()
    records.append({"seconds": now - wall, "step_seconds": now - fetched, "cpu_seconds": now_cpu - cpu,
                    "instances": len(interaction)})
    wall, cpu = now, now_cpu
timed = records if job["batches"] == 0 else records[job["warmup"]:]
seconds = [r["seconds"] for r in timed]
result = {
    "recbole_version": __import__("recbole").__version__,
    "torch_version": torch.__version__,
    "threads": torch.get_num_threads(),
    "device": str(config["device"]),
    "model_class": type(model).__name__,
    "n_items": int(model.n_items),
    "parameters": sum(p.numel() for p in model.parameters()),
    "train_instances": len(train_set),
    "batches_per_epoch": n_batches,
    "batch_size": int(config["train_batch_size"]),
    "prepare_seconds": prepare_seconds,
    "warmup_batches": len(records) - len(timed),
    "timed_batches": len(timed),
    "whole_epoch": job["batches"] == 0 or len(timed) == n_batches,
    "mean_batch_seconds": statistics.mean(seconds),
    "median_batch_seconds": statistics.median(seconds),
    "mean_step_seconds": statistics.mean(r["step_seconds"] for r in timed),
    "mean_batch_cpu_seconds": statistics.mean(r["cpu_seconds"] for r in timed),
    "timed_seconds": sum(seconds),
    "mean_loss": total_loss / max(len(records), 1),
    "peak_rss_mib_after_prepare": rss_after_prepare,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "batches": records,
}
with open(job["result"], "w") as handle:
    json.dump(result, handle)
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a dataset open_dataset reads (prepared/diginetica)")
    splits = "fit: the training sessions less the validation tail (what a run fits on); all: all of them"
    parser.add_argument("--split", choices=("fit", "all"), default="fit", help=splits)
    parser.add_argument("--max-sessions", type=int, default=0, help="only the first N of those sessions (0: all)")
    parser.add_argument("--models", default="sasrec,gru4rec,srgnn", help="comma-separated hiersrec model names")
    parser.add_argument("--width", type=int, default=64, help="hiersrec model.d_model = RecBole hidden/embedding size")
    parser.add_argument("--batch", type=int, default=512, help="RecBole train_batch_size, hiersrec batch_targets")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both toolkits")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="both toolkits: fp32, or bf16 autocast (hiersrec train.precision; RecBole as its enable_amp on a CPU)",
    )
    parser.add_argument("--recbole-python", default="/work/recbole-venv/bin/python", help="python with RecBole 1.2.1")
    parser.add_argument("--recbole-batches", type=int, default=30, help="timed RecBole batches (0: the whole epoch)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed RecBole batches before the timed ones")
    parser.add_argument("--hiersrec-epochs", type=int, default=1, help="timed hiersrec epochs (whole epochs)")
    parser.add_argument("--seed", type=int, default=42, help="seed of both toolkits")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra hiersrec config override")
    parser.add_argument("--recbole-set", action="append", default=[], help="extra RecBole setting KEY=YAML_VALUE")
    parser.add_argument("--timeout", type=int, default=0, help="seconds one side of one model may take (0: none)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "recbole_speed")
    parser.add_argument("--out", type=Path, help="output stem (default: benchmarks/results/recbole_speed-...)")
    parser.add_argument("--hiersrec-worker", type=Path, help=argparse.SUPPRESS)  # internal: a job file
    return parser.parse_args(argv)


def timed_sessions(data: str, split: str, max_sessions: int, valid_fraction: float):
    """(TrainingData to pass to fit_run, the sessions both toolkits train on)."""
    import dataclasses

    import numpy as np

    from hiersrec.data.ingest import open_dataset
    from hiersrec.train.run import TrainingData

    dataset = open_dataset(data)
    training = TrainingData.from_prepared(dataset, valid_fraction)
    sessions = training.train if split == "fit" else dataset.train
    if max_sessions and max_sessions < sessions.n_sessions:
        sessions = sessions.subset(np.arange(max_sessions))
    # valid=None: no validation pass after the epoch (it is no part of the timing either way).
    return dataclasses.replace(training, train=sessions, valid=None), sessions


def hiersrec_worker(job_path: Path) -> None:
    """One hiersrec training run (this process is fresh); writes its timings to the job's result file."""
    import resource

    import torch

    from hiersrec.config import load_config
    from hiersrec.train.checkpoint import LOG
    from hiersrec.train.run import fit_run

    job = json.loads(job_path.read_text())
    started = time.perf_counter()
    config = load_config(model=job["model"], overrides=job["overrides"])
    data, sessions = timed_sessions(job["data"], job["split"], job["max_sessions"], config.data.valid_fraction)
    load_seconds = time.perf_counter() - started
    run_dir = Path(job["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # this benchmark's own scratch run
    artifact, _ = fit_run(config, data, run_dir)
    epochs = [json.loads(line) for line in (run_dir / LOG).read_text().splitlines() if line.strip()]
    seconds = [record["train_seconds"] for record in epochs]
    result = {
        "model": job["model"],
        "threads": torch.get_num_threads(),
        "n_items": int(artifact.model.config.n_items),
        "parameters": sum(p.numel() for p in artifact.model.parameters()),
        "train_sessions": int(sessions.n_sessions),
        "train_targets": int((sessions.lengths - 1).clip(min=0).sum()),
        "steps_per_epoch": epochs[0]["steps"],
        "epochs": len(epochs),
        "epoch_seconds": sum(seconds) / len(seconds),
        "epoch_cpu_seconds": sum(record["train_cpu_seconds"] for record in epochs) / len(epochs),
        "epoch_seconds_each": seconds,
        "targets_per_second": epochs[-1]["targets_per_second"],
        "train_loss_last_epoch": epochs[-1].get("train_loss"),
        "data_load_seconds": load_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "run_dir": str(run_dir),
    }
    Path(job["result"]).write_text(json.dumps(result))


def write_recbole_files(sessions, n_real_items: int, folder: Path) -> dict[str, Any]:
    """``<folder>/<name>.inter`` (one row per click) and ``<name>.item`` (every catalogue item, 1..n_real_items).

    Item tokens are hiersrec's item indices; a click's timestamp is its position in the whole file, so
    RecBole's sort by session and time keeps every session's click order exactly.
    """
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    session_of = np.repeat(np.arange(sessions.n_sessions), sessions.lengths)
    inter = folder / f"{DATASET_NAME}.inter"
    with open(inter, "w", encoding="utf-8") as handle:
        handle.write("session_id:token\titem_id:token\ttimestamp:float\n")
        for start in range(0, sessions.n_clicks, 200_000):
            chunk = slice(start, start + 200_000)
            rows = zip(session_of[chunk].tolist(), sessions.items[chunk].tolist(), strict=True)
            handle.writelines(f"{s}\t{i}\t{start + k}\n" for k, (s, i) in enumerate(rows))
    item = folder / f"{DATASET_NAME}.item"
    item.write_text("item_id:token\n" + "".join(f"{i}\n" for i in range(1, n_real_items + 1)), encoding="utf-8")
    return {"inter": str(inter), "item": str(item), "clicks": int(sessions.n_clicks)}


def recbole_config(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """RecBole settings: the files written here, the model's parameters, CPU, no evaluation split."""
    import yaml

    settings = {
        "data_path": str(args.work / "recbole_data"),
        "checkpoint_dir": str(args.work / "recbole_saved"),
        "USER_ID_FIELD": "session_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["session_id", "item_id", "timestamp"], "item": ["item_id"]},
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        "loss_type": "CE",
        "train_neg_sample_args": None,  # CE over all items; RecBole 1.2.1 refuses CE with sampled negatives
        "train_batch_size": args.batch,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "group_by": "user", "mode": "full"},
        "use_gpu": False,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "WARNING",
        "worker": 0,
        **params,
    }
    for assignment in args.recbole_set:
        key, _, value = assignment.partition("=")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def run_child(command: list[str], threads: int, cwd: Path, timeout: int) -> float:
    """Run a side's process with ``threads`` OpenMP/MKL threads; its wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, env=env, timeout=timeout or None)
    return time.perf_counter() - started


def measure_hiersrec(args: argparse.Namespace, model: str) -> dict[str, Any]:
    overrides = [
        *hiersrec_overrides(model, args.width),
        f"train.epochs={args.hiersrec_epochs}",
        f"train.batch_targets={args.batch}",
        f"train.threads={args.threads}",
        "train.device=cpu",
        "train.show_progress=false",
        "train.lr=0.001",
        f"train.precision={args.precision}",
        f"train.seed={args.seed}",
        *args.overrides,
    ]
    folder = args.work / f"hiersrec-{model}"
    folder.mkdir(parents=True, exist_ok=True)
    job = {
        "model": model, "overrides": overrides, "data": args.data, "split": args.split,
        "max_sessions": args.max_sessions, "run_dir": str(folder / "run"), "result": str(folder / "result.json"),
    }  # fmt: skip
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    Path(job["result"]).unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--hiersrec-worker", str(job_path)]
    load_before = os.getloadavg()
    wall = run_child(command, args.threads, REPO, args.timeout)
    result = json.loads(Path(job["result"]).read_text())
    return {**result, "overrides": overrides, "process_wall_seconds": wall, "command": shlex.join(command),
            "load_average_before": load_before, "load_average_after": os.getloadavg()}  # fmt: skip


def measure_recbole(args: argparse.Namespace, model: str) -> dict[str, Any]:
    model_class, params = recbole_params(model, args.width)
    folder = args.work / f"recbole-{model}"
    folder.mkdir(parents=True, exist_ok=True)
    runner = args.work / "recbole_runner.py"
    runner.write_text(RECBOLE_RUNNER.lstrip(), encoding="utf-8")
    job = {
        "model": model_class, "dataset": DATASET_NAME, "config": recbole_config(args, params),
        "threads": args.threads, "batches": args.recbole_batches, "warmup": args.warmup,
        "precision": args.precision, "result": str(folder / "result.json"),
    }  # fmt: skip
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    Path(job["result"]).unlink(missing_ok=True)
    command = [args.recbole_python, str(runner), str(job_path)]
    load_before = os.getloadavg()
    # cwd = the work folder: RecBole writes its ./log, ./log_tensorboard there, not in the repository.
    wall = run_child(command, args.threads, args.work, args.timeout)
    result = json.loads(Path(job["result"]).read_text())
    result["epoch_seconds"] = result["mean_batch_seconds"] * result["batches_per_epoch"]
    result["epoch_seconds_from_median"] = result["median_batch_seconds"] * result["batches_per_epoch"]
    result["epoch_cpu_seconds"] = result["mean_batch_cpu_seconds"] * result["batches_per_epoch"]
    result["epoch_seconds_extrapolated"] = not result["whole_epoch"]
    return {**result, "model_class": model_class, "settings": job["config"], "process_wall_seconds": wall,
            "command": shlex.join(command), "load_average_before": load_before,
            "load_average_after": os.getloadavg()}  # fmt: skip


def compare(h: dict[str, Any], r: dict[str, Any], threads: int) -> dict[str, Any]:
    return {
        "speedup": r["epoch_seconds"] / h["epoch_seconds"],
        "speedup_if_idle": r["epoch_cpu_seconds"] / h["epoch_cpu_seconds"],
        "hiersrec_epoch_seconds_if_idle": h["epoch_cpu_seconds"] / threads,
        "recbole_epoch_seconds_if_idle": r["epoch_cpu_seconds"] / threads,
        "targets_equal": h["train_targets"] == r["train_instances"],
        "n_items_equal": h["n_items"] == r["n_items"],
    }


def precision_note(precision: str) -> str:
    """How both sides computed, in words."""
    if precision == "fp32":
        return "fp32 on both sides"
    return (
        "bf16 on both sides: hiersrec `train.precision=bf16` (its bf16 autocast), RecBole's "
        "`calculate_loss` under `torch.autocast('cpu', dtype=torch.bfloat16)`, what RecBole's `enable_amp` does "
        "on a CPU"
    )


def how_measured(args: argparse.Namespace) -> str:
    if args.recbole_batches == 0:
        recbole = "RecBole's seconds per epoch are one whole timed epoch (not extrapolated)"
    else:
        recbole = (
            f"RecBole's seconds per epoch are **extrapolated**: after {args.warmup} untimed batches, "
            f"{args.recbole_batches} batches of {args.batch} prefix instances were timed (each from the end of "
            "the previous batch: the dataloader's fetch, `zero_grad`, `calculate_loss`, `backward`, `step`, "
            "`loss.item()`), and their mean seconds multiplied by the batches of one epoch (the median gives "
            "the figure in brackets)"
        )
    return (
        "**How it was measured.** Both toolkits trained on the same sessions, one model at a time, each side in "
        f"a fresh process with {args.threads} torch threads (`OMP_NUM_THREADS` and `torch.set_num_threads`), "
        "never two at once. hiersrec's seconds per epoch are the `train_seconds` of whole epochs of its real "
        f"training entry point (`hiersrec.train.run.fit_run`, {args.hiersrec_epochs} epoch(s), "
        f"`train.batch_targets={args.batch}`, no validation pass), read from the run's `train_log.jsonl`. "
        f"Precision {precision_note(args.precision)}. "
        f"{recbole}. RecBole {RECBOLE_VERSION} ran from its own virtual environment on atomic files written from "
        "the same sessions (`session_id:token item_id:token timestamp:float`, the timestamp a click's position in "
        "the file, and an `.item` file of every catalogue item), with its sequential dataset's prefix "
        "augmentation (`MAX_ITEM_LIST_LENGTH` 50), `loss_type: CE`, `train_neg_sample_args: ~`, Adam lr 1e-3; "
        "its dataset and dataloader preparation is timed separately and is not in the epoch. 'If idle' divides "
        "a side's process CPU seconds per epoch by its threads: an estimate of its wall time with the cores to "
        "itself, since the machine may have been shared (see the load averages). Peak memory is each process's "
        "peak resident set (`ru_maxrss`), RecBole's including its prepared dataset."
    )


def markdown(payload: dict[str, Any], args: argparse.Namespace) -> str:
    lines = header_lines(payload["settings"]) + ["", how_measured(args), ""]
    lines += [
        "| model | hiersrec s/epoch | RecBole s/epoch (median) | RecBole x slower | if idle: hiersrec / RecBole "
        "s/epoch, ratio | targets: hiersrec / RecBole | items: hiersrec / RecBole | steps/epoch: hiersrec / RecBole "
        "| parameters: hiersrec / RecBole | peak RSS MiB: hiersrec / RecBole | RecBole prep s "
        "| issue's RecBole s/epoch |",
        "|---" * 12 + "|",
    ]
    for row in payload["models"]:
        if "skipped" in row:
            lines.append(f"| {row['model']} | skipped: {row['skipped']} |" + " |" * 10)
            continue
        h, r, c = row["hiersrec"], row["recbole"], row["comparison"]
        label = "" if r["whole_epoch"] else f" extrapolated from {r['timed_batches']} batches"
        lines.append(
            f"| {row['model']} | {h['epoch_seconds']:.1f} | {r['epoch_seconds']:.1f} "
            f"({r['epoch_seconds_from_median']:.1f}){label} | {c['speedup']:.1f}x | "
            f"{c['hiersrec_epoch_seconds_if_idle']:.1f} / {c['recbole_epoch_seconds_if_idle']:.1f}, "
            f"{c['speedup_if_idle']:.1f}x | {h['train_targets']:,} / {r['train_instances']:,} | "
            f"{h['n_items']:,} / {r['n_items']:,} | {h['steps_per_epoch']} / {r['batches_per_epoch']} | "
            f"{h['parameters']:,} / {r['parameters']:,} | {h['peak_rss_mib']:.0f} / {r['peak_rss_mib']:.0f} | "
            f"{r['prepare_seconds']:.1f} | "
            f"{ISSUE_REFERENCE_SECONDS.get(row['model'], '-')} |"
        )
    lines += ["", "Commands (each side's process, as run):", ""]
    for row in payload["models"]:
        for side in ("hiersrec", "recbole"):
            if side in row:
                lines.append(f"- {row['model']}, {side}: `{row[side]['command']}`")
    lines += ["", "Settings of each side:", ""]
    for row in payload["models"]:
        if "hiersrec" in row:
            lines.append(f"- {row['model']}, hiersrec overrides: `{' '.join(row['hiersrec']['overrides'])}`")
            params = recbole_params(row["model"], args.width)[1]
            lines.append(f"- {row['model']}, RecBole {row['recbole']['model_class']}: `{json.dumps(params)}`")
    lines += ["", "Differences between the two sides (beyond the settings above):", ""]
    for scope, items in DIFFERENCES.items():
        if scope == "all models" or any(row["model"] == scope for row in payload["models"]):
            lines += [f"- {scope}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.hiersrec_worker:
        hiersrec_worker(args.hiersrec_worker)
        return
    if not args.data:
        raise SystemExit("--data is required: a prepared dataset folder (prepared/diginetica) or 'synthetic'")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    header = results_header(__file__, argv)
    from hiersrec.config import DataConfig

    started = time.perf_counter()
    data, sessions = timed_sessions(args.data, args.split, args.max_sessions, DataConfig().valid_fraction)
    exported = write_recbole_files(sessions, data.catalog.n_items, args.work / "recbole_data" / DATASET_NAME)
    exported["seconds"] = time.perf_counter() - started
    print(f"{sessions.n_sessions} sessions, {sessions.n_clicks} clicks -> {exported['inter']}", flush=True)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model in SKIPPED or model not in ISSUE_REFERENCE_SECONDS:
            reason = SKIPPED.get(model, "no matched RecBole configuration in this benchmark")
            rows.append({"model": model, "skipped": reason})
            print(f"{model}: skipped ({reason})", flush=True)
            continue
        h = measure_hiersrec(args, model)
        print(f"{model} hiersrec: {h['epoch_seconds']:.1f} s/epoch ({h['train_targets']} targets)", flush=True)
        r = measure_recbole(args, model)
        print(f"{model} RecBole: {r['epoch_seconds']:.1f} s/epoch ({r['train_instances']} instances, "
              f"{r['timed_batches']} of {r['batches_per_epoch']} batches timed)", flush=True)  # fmt: skip
        rows.append({"model": model, "hiersrec": h, "recbole": r, "comparison": compare(h, r, args.threads)})
    name = Path(args.data).name if args.data != "synthetic" else "synthetic"
    settings = {
        "data": args.data, "split": args.split, "max_sessions": args.max_sessions,
        "sessions": int(sessions.n_sessions), "clicks": int(sessions.n_clicks),
        "targets": int((sessions.lengths - 1).clip(min=0).sum()), "width": args.width, "batch": args.batch,
        "threads": args.threads, "precision": args.precision, "cpu_count": os.cpu_count(),
        "recbole_batches": args.recbole_batches,
        "warmup": args.warmup, "hiersrec_epochs": args.hiersrec_epochs, "seed": args.seed,
        "recbole_python": args.recbole_python, "recbole_files_seconds": exported["seconds"],
    }  # fmt: skip
    payload = {
        "settings": settings,
        "how_measured": how_measured(args),
        "issue_reference_recbole_seconds": ISSUE_REFERENCE_SECONDS,
        "differences": DIFFERENCES,
        "models": rows,
    }
    stem = resolve_stem(args.out, "recbole_speed", f"{name}-w{args.width}-b{args.batch}-{args.precision}")
    body = markdown(payload, args)
    title = f"Training seconds per epoch: hiersrec vs RecBole {RECBOLE_VERSION} on {name}"
    for path in write_results(stem, header, payload, title, body):
        print(path)
    print(body)


if __name__ == "__main__":
    main()
