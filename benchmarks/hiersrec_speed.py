"""HierSRec training speed: one epoch over a dataset's training sessions, fp32 vs bf16, CPU or GPU.

Each configuration runs in a fresh process (so peak memory is its own): one full training epoch over the
head of the training sessions (validation tail excluded, as in a real run) with the preset's model at the
given width, then one validation pass. Reported: epoch seconds (wall and process CPU), sessions/s and
training targets (predicted clicks)/s, validation seconds, peak resident memory (CPU) or peak allocated
GPU memory, and the machine's load average before and after. On a shared machine wall time is
pessimistic; "if idle" divides the epoch's process CPU time by its thread count (an estimate of the wall
time with those cores to itself; cache and memory-bandwidth sharing still slow the CPU time itself).

Reference point: RecBole 1.2.1 SASRec at width 64, batch 512, took about 24 minutes per epoch over
diginetica's prefix-augmented training set on this kind of 2-core machine (issue 3).

    .venv/bin/python benchmarks/hiersrec_speed.py --dataset diginetica --precisions fp32,bf16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

from hiersrec_common import DATASETS, resolve
from reporting import header_lines, results_header, write_results

RECBOLE_SASREC_MINUTES = 24.0  # RecBole SASRec, width 64, diginetica, this kind of 2-core machine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="diginetica", help=f"{sorted(DATASETS)} or a dataset folder")
    parser.add_argument("--preset", help="config preset (default: the dataset's)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--width", type=int, default=64, help="model.d_model (RecBole's SASRec used 64)")
    parser.add_argument("--seeds", default="0", help="one timed epoch per seed and precision")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    parser.add_argument("--out", type=Path, help="output stem (default: benchmarks/results/hiersrec_speed-...)")
    return parser.parse_args(argv)


def time_epoch(job: dict[str, Any]) -> dict[str, Any]:
    """One training epoch and one validation pass in this (fresh) process."""
    import resource

    import torch

    from hiersrec.config import load_config
    from hiersrec.data.ingest import open_dataset
    from hiersrec.models.hiersrec import HierSRec, ItemFeatures
    from hiersrec.train.loop import resolve_device, train
    from hiersrec.train.run import TrainingData

    config = load_config(preset=job["preset"], overrides=job["overrides"])
    data = TrainingData.from_prepared(open_dataset(job["dataset"]), config.data.valid_fraction)
    model_config = config.model.with_catalog(data.catalog)
    torch.manual_seed(config.train.seed)
    model = HierSRec(model_config, ItemFeatures.from_catalog(data.catalog, model_config))
    device = resolve_device(config.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()
    result = train(model, data.train, data.valid, data.catalog, config.train, valid_protocol=data.protocol)
    record = result.history[0]
    return {
        "precision": config.train.precision,
        "seed": config.train.seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "d_model": model_config.d_model,
        "train_sessions": data.train.n_sessions,
        "train_targets": int((data.train.lengths - 1).clip(min=0).sum()),
        "epoch_seconds": record["train_seconds"],
        "epoch_minutes": record["train_seconds"] / 60,
        "epoch_cpu_seconds": record["train_cpu_seconds"],
        # What the epoch would take with its threads to itself: CPU time / threads (an estimate).
        "epoch_minutes_if_idle": record["train_cpu_seconds"] / torch.get_num_threads() / 60,
        "sessions_per_second": record["sessions_per_second"],
        "targets_per_second": record["targets_per_second"],
        "validation_seconds": record["validation_seconds"],
        "valid_mrr@20_after_one_epoch": record.get("valid_mrr@20"),
        "speedup_vs_recbole_sasrec": RECBOLE_SASREC_MINUTES * 60 / record["train_seconds"],
        "speedup_vs_recbole_sasrec_if_idle": RECBOLE_SASREC_MINUTES
        * 60
        * torch.get_num_threads()
        / record["train_cpu_seconds"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def markdown(records: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The settings as bullet lines, then the timings as a markdown table."""
    lines = header_lines(settings)
    lines += [
        "",
        "| precision | device | threads | epoch (min, wall) | epoch CPU (s) | epoch (min) if idle | sessions/s "
        "| targets/s | validation (s) | peak memory (MiB) | vs RecBole SASRec (24 min): wall / if idle "
        "| load avg before/after |",
        "|---" * 12 + "|",
    ]
    for r in records:
        memory = r["peak_gpu_mib"] if r["peak_gpu_mib"] is not None else r["peak_rss_mib"]
        lines.append(
            f"| {r['precision']} | {r['device']} | {r['threads']} | {r['epoch_minutes']:.2f} | "
            f"{r['epoch_cpu_seconds']:.0f} | {r['epoch_minutes_if_idle']:.2f} | {r['sessions_per_second']:.0f} | "
            f"{r['targets_per_second']:.0f} | {r['validation_seconds']:.1f} | {memory:.0f} | "
            f"{r['speedup_vs_recbole_sasrec']:.1f}x / {r['speedup_vs_recbole_sasrec_if_idle']:.1f}x | "
            f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dataset, preset, name, out = resolve(args.dataset, args.preset, "hiersrec_speed", args.out)
    common = [
        "train.epochs=1",
        f"train.device={args.device}",
        f"train.threads={args.threads}",
        f"model.d_model={args.width}",
        "train.show_progress=false",
        *args.overrides,
    ]
    jobs = [
        {"dataset": str(dataset), "preset": preset, "overrides": [*common, f"train.precision={p}", f"train.seed={s}"]}
        for s in args.seeds.split(",")
        for p in args.precisions.split(",")
    ]
    header = results_header(__file__, argv)
    settings = {"dataset": name, "preset": preset, "common_overrides": common}
    records = []
    context = multiprocessing.get_context("spawn")
    for job in jobs:  # one at a time: concurrent runs would time each other
        with context.Pool(1) as pool:
            record = pool.apply(time_epoch, (job,))
        records.append(record)
        print(json.dumps(record), flush=True)
    body = markdown(records, settings)
    write_results(out, header, {**settings, "runs": records}, f"HierSRec training speed on {name}", body)
    print(body)


if __name__ == "__main__":
    main()
