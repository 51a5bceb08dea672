"""Data-parallel training throughput on this CPU: 1 process vs 2 gloo processes, the same global batches.

Each configuration trains HierSRec (width 64) from scratch in fresh processes on the same synthetic shop
(`make_synthetic_shop`) for a fixed number of epochs without validation, with the same global batch of
``--global-batch`` targets per step: one process takes it whole, each of 2 processes half of it (so both
make the same number of optimiser steps over the same targets). Reported per configuration: training
targets per second of each epoch (rank 0's wall clock; the ranks step together) and of the last epoch,
the speed-up over one process with one thread, and the machine's load average before and after.

On a 2-core machine the honest comparison is 2 processes of 1 thread each against 1 process of 2 threads:
both use both cores. Both are reported, whatever they show.

    .venv/bin/python benchmarks/ddp_throughput.py --sessions 4000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from reporting import header_lines, resolve_stem, results_header, write_results

# (label, processes, threads per process)
CONFIGURATIONS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4000, help="synthetic sessions (train + test)")
    parser.add_argument("--items", type=int, default=2000, help="synthetic items")
    parser.add_argument("--width", type=int, default=64, help="model.d_model")
    parser.add_argument("--global-batch", type=int, default=1024, help="training targets per optimiser step")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration")
    parser.add_argument("--timeout", type=int, default=240, help="seconds one configuration may take")
    parser.add_argument("--out", type=Path, help="output stem (default: benchmarks/results/ddp_throughput-...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: JSON job of one training process
    return parser.parse_args(argv)


def train_worker(job: dict[str, Any]) -> None:
    """Train in this process (one rank under torchrun); rank 0 writes the epoch records to ``job["result"]``."""
    import torch

    from hiersrec.config import TrainConfig
    from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
    from hiersrec.models import make_model
    from hiersrec.train import distributed
    from hiersrec.train.loop import train

    shop = make_synthetic_shop(SyntheticShopConfig(n_items=job["items"], n_sessions=job["sessions"], seed=0))
    cfg = TrainConfig(
        epochs=job["epochs"], batch_targets=job["batch_targets"], threads=job["threads"], device="cpu",
        show_progress=False, warmup_steps=10,
    )  # fmt: skip
    with distributed.process_group(torch.device("cpu")) as world:
        torch.manual_seed(0)
        model = make_model("hiersrec", {"d_model": job["width"], "max_len": 20}, shop.catalog)
        result = train(model, shop.train, None, shop.catalog, cfg)
    if world.is_main:
        records = [{k: v for k, v in r.items() if k in ("epoch", "steps", "train_seconds", "targets_per_second")}
                   for r in result.history]  # fmt: skip
        Path(job["result"]).write_text(json.dumps({"world_size": world.size, "epochs": records}))


def run_configuration(args: argparse.Namespace, processes: int, threads: int) -> dict[str, Any]:
    """One configuration in fresh processes (torchrun for several); its rank 0's epoch records."""
    with tempfile.TemporaryDirectory() as scratch:
        job = {
            "sessions": args.sessions, "items": args.items, "width": args.width, "epochs": args.epochs,
            "threads": threads, "batch_targets": args.global_batch // processes,
            "result": str(Path(scratch) / "result.json"),
        }  # fmt: skip
        script = [str(Path(__file__).resolve()), "--worker", json.dumps(job)]
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([*launcher, *script], check=True, timeout=args.timeout, env=env)
        return json.loads(Path(job["result"]).read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        train_worker(json.loads(args.worker))
        return
    header = results_header(__file__, argv)
    load_before = os.getloadavg()
    rows = []
    for label, processes, threads in CONFIGURATIONS:
        measured = run_configuration(args, processes, threads)
        last = measured["epochs"][-1]
        rows.append({"configuration": label, "processes": processes, "threads": threads, **measured,
                     "last_epoch_targets_per_second": last["targets_per_second"]})  # fmt: skip
        print(f"{label}: {last['targets_per_second']:.0f} targets/s (last epoch)", flush=True)
    baseline = rows[0]["last_epoch_targets_per_second"]
    for row in rows:
        row["speedup_over_1x1"] = row["last_epoch_targets_per_second"] / baseline
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "configurations": rows,
    }
    table = ["| configuration | steps / epoch | targets/s per epoch | last epoch | vs 1x1 |", "|---|---|---|---|---|"]
    for row in rows:
        per_epoch = ", ".join(f"{r['targets_per_second']:.0f}" for r in row["epochs"])
        steps = row["epochs"][0]["steps"]
        table.append(f"| {row['configuration']} | {steps} | {per_epoch} | "
                     f"{row['last_epoch_targets_per_second']:.0f} | {row['speedup_over_1x1']:.2f} |")  # fmt: skip
    settings = header_lines(payload["settings"] | {"cpu_count": payload["cpu_count"]})
    load = f"Load average before {load_before}, after {payload['load_average_after']}."
    body = "\n".join([*settings, "", *table, "", load])
    stem = resolve_stem(args.out, "ddp_throughput", f"synthetic{args.sessions}-w{args.width}")
    for path in write_results(stem, header, payload, "Data-parallel training throughput (CPU, gloo)", body):
        print(path)


if __name__ == "__main__":
    main()
