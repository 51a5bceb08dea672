"""HierSRec ablation: variants x seeds, each checkpoint chosen on validation, test evaluated once per run.

Every run trains on the head of the training sessions, selects its epoch by validation MRR@k on their
chronological tail (``data.valid_fraction``; or on the source's validation split for leave-one-out data),
and only then is its selected checkpoint evaluated once on the test split (the dataset's protocol: every
prefix, or the last item for leave-one-out data; full ranking, pessimistic ties). ``--breakdown`` adds
HR/NDCG by the target item's popularity in train. ``--refit`` also retrains each run on all training
sessions (validation tail included) for the number of epochs it chose, the way the baselines are refitted
after tuning, and reports that model's test metrics separately. ``--valid-only`` never reads test at all:
use it for tuning sweeps. Variants differ by configuration only:

    hierarchical      category task fed into the item head (HierSRec; ``category_feed`` of the preset)
    flat              both heads on the shared state, nothing fed across (flat multi-task learning)
    single            next item only (lambda = 0, no feed): a SASRec-style Transformer
    *_nocat           the same without the category embedding in the item representation
    factorised        log P(category) + log P(item | category)
    expected          the expected category embedding fed into the item head
    notext / hashed / minilm   item text: none, hashed token bags, frozen MiniLM sentence embeddings
    NAME:k=v,k=v      any named set of overrides (for sweeps)

Runs go in parallel worker processes (``--parallel``), one torch thread each; results are appended to
``<out>.jsonl`` as each run finishes, and summarised (mean +- std over seeds) in ``<out>.json`` and
``<out>.md`` with the command, commit, machine and date (``<out>`` defaults to
``benchmarks/results/hiersrec_accuracy-<dataset>-<date>``, see ``reporting.py``).

    .venv/bin/python benchmarks/hiersrec_accuracy.py --dataset diginetica --seeds 0,1,2 \\
        --variants hierarchical,flat,single,hierarchical_nocat,single_nocat --device auto --parallel 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiersrec_common import DATASETS, REPO, resolve
from reporting import header_lines, paired_cells, results_header, sibling, write_results

VARIANTS = {
    "hierarchical": [],
    "flat": ["model.category_feed=none"],
    "single": ["model.category_feed=none", "model.category_loss_weight=0"],
    "factorised": ["model.category_feed=factorised"],
    "expected": ["model.category_feed=expected"],
    "notext": ["model.text_features=none"],
    "hashed": ["model.text_features=hashed"],
    "minilm": ["model.text_features=minilm"],
}
TEST_KS = (5, 10, 20)
POPULARITY_BUCKETS = ((0, 4), (5, 9), (10, 19), (20, 49), (50, 10**9))  # target's clicks in train
TABLE = ("hr@10", "hr@20", "mrr@10", "mrr@20", "ndcg@20", "cat_acc@1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="diginetica", help=f"{sorted(DATASETS)} or a dataset folder")
    parser.add_argument("--preset", help="config preset (default: the dataset's)")
    parser.add_argument("--variants", default="hierarchical,flat,single,hierarchical_nocat,single_nocat")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (default: the preset's)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (worker processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    parser.add_argument("--valid-only", action="store_true", help="never evaluate on test (tuning sweeps)")
    parser.add_argument("--breakdown", action="store_true", help="test metrics by target popularity in train")
    parser.add_argument("--refit", action="store_true", help="also refit on all train for the chosen epochs")
    parser.add_argument(
        "--compare-to",
        default=None,
        help="a variant every other one is compared with, seed by seed, by paired tests over the test cases",
    )
    parser.add_argument("--out", type=Path, help="output stem (default: benchmarks/results/hiersrec_accuracy-...)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "benchmarks" / "work" / "runs")
    return parser.parse_args(argv)


def variant_overrides(name: str) -> list[str]:
    """The overrides of a variant name (see the module docstring)."""
    if ":" in name:
        return [item for item in name.split(":", 1)[1].split(",") if item]
    base, nocat = name.removesuffix("_nocat"), name.endswith("_nocat")
    if base not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)} (+ _nocat) or NAME:k=v,...")
    return VARIANTS[base] + (["model.use_category_input=false"] if nocat else [])


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (variant, seed) and evaluate its selected checkpoint (test once, unless valid-only)."""
    import torch

    torch.set_num_threads(job["threads"])
    from hiersrec.config import load_config
    from hiersrec.data.ingest import open_dataset
    from hiersrec.eval.protocol import evaluate
    from hiersrec.eval.significance import case_ranks
    from hiersrec.train.run import TrainingData, fit_run

    config = load_config(preset=job["preset"], overrides=job["overrides"])
    dataset = open_dataset(job["dataset"])
    data = TrainingData.from_prepared(dataset, config.data.valid_fraction)
    del dataset  # training sees train + validation only; the test split is reopened below, after selection
    started = time.perf_counter()
    artifact, result = fit_run(config, data, job["run_dir"])
    record = {
        "variant": job["variant"],
        "seed": job["seed"],
        "overrides": job["overrides"],
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_wall_seconds": time.perf_counter() - started,
        "mean_epoch_seconds": artifact.metrics["mean_epoch_seconds"],
        "valid": result.best_metrics,
        "validation_split": data.validation,
    }
    models = {"test": artifact.model}
    if job["refit"]:
        # Same configuration and schedule on all training sessions, stopped at the epoch chosen above.
        refit_data = TrainingData.for_refit(open_dataset(job["dataset"]), config.data.valid_fraction)
        refit, _ = fit_run(config, refit_data, Path(job["run_dir"]) / "refit", stop_after=result.best_epoch)
        models["test_refit"] = refit.model
    if job["valid_only"]:
        return record
    full = open_dataset(job["dataset"])
    options = {"max_len": config.model.max_len, "protocol": full.default_protocol}
    for split, trained in models.items():
        model = _OnDevice(trained, config.train.device)
        report = evaluate(model, full.test, data.catalog, ks=TEST_KS, batch_size=1024, **options)
        record.update({split: report.metrics, "test_cases": report.n_cases, "protocol": full.default_protocol})
        if job["case_ranks"]:  # for paired tests between variants over the same test cases
            ranks = case_ranks(model, full.test, data.catalog, batch_size=1024, **options)
            np.save(Path(job["run_dir"]) / f"{split}_ranks.npy", ranks)
        if job["breakdown"]:
            record[f"{split}_by_popularity"] = popularity_breakdown(model, full, **options)
    return record


def popularity_breakdown(model, dataset, max_len: int, protocol: str) -> dict[str, dict[str, float]]:
    """HR@10 / NDCG@10 / HR@20 of the test cases grouped by their target's click count in train."""
    import torch

    from hiersrec.data.batching import iter_prefix_batches
    from hiersrec.eval.metrics import hit_rate_at, ndcg_at, target_ranks

    counts = dataset.train.item_counts(dataset.catalog.n_items)
    targets = dataset.test.target_positions(protocol)
    ranks = []
    with torch.inference_mode():
        for batch in iter_prefix_batches(dataset.test, dataset.catalog, targets, 1024, max_len):
            ranks.append(target_ranks(model.score(batch), batch.target_items))
    ranks = torch.cat(ranks)
    popularity = counts[dataset.test.items[targets]]
    groups = {}
    for low, high in POPULARITY_BUCKETS:
        inside = torch.from_numpy((popularity >= low) & (popularity <= high))
        if inside.any():
            chosen = ranks[inside]
            groups[f"{low}-{high if high < 10**9 else 'max'}"] = {
                "cases": int(inside.sum()),
                "hr@10": float(hit_rate_at(chosen, 10).mean()),
                "ndcg@10": float(ndcg_at(chosen, 10).mean()),
                "hr@20": float(hit_rate_at(chosen, 20).mean()),
            }
    return groups


class _OnDevice:
    # The evaluator builds CPU batches; score them on the device the run trained on.
    def __init__(self, model, device: str) -> None:
        from hiersrec.train.loop import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device)

    def score(self, batch):
        return self.model.score(batch.to(self.device)).cpu()

    def score_categories(self, batch):
        return self.model.score_categories(batch.to(self.device)).cpu()

    def describe(self):
        return self.model.describe()


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k.startswith(("hr@", "mrr@", "ndcg@")))


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation over seeds of each variant's validation and test metrics."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in records):
        runs = [r for r in records if r["variant"] == variant]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "best_epochs": [r["best_epoch"] for r in runs]}
        for split in ("valid", "test", "test_refit"):
            if all(split in r for r in runs):
                keys = runs[0][split].keys()
                values = {k: np.array([r[split][k] for r in runs]) for k in keys}
                entry[split] = {k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
                                for k, v in values.items()}  # fmt: skip
        entry["mean_epoch_seconds"] = float(np.mean([r["mean_epoch_seconds"] for r in runs]))
        summary[variant] = entry
    return summary


def paired_tests(records: list[dict[str, Any]], variant: str, reference: str, jobs: list[dict[str, Any]]) -> list:
    """Per seed and test split: ``variant`` minus ``reference`` over the same test cases (`compare`)."""
    from hiersrec.eval.significance import compare, significantly_better

    run_dirs = {(job["variant"], job["seed"]): Path(job["run_dir"]) for job in jobs}
    results = []
    for record in records:
        if record["variant"] != variant or variant == reference or (reference, record["seed"]) not in run_dirs:
            continue
        for split in ("test", "test_refit"):
            mine, theirs = (run_dirs[(v, record["seed"])] / f"{split}_ranks.npy" for v in (variant, reference))
            if mine.is_file() and theirs.is_file():
                comparison = compare(np.load(mine), np.load(theirs))
                comparison["significantly_better"] = significantly_better(comparison)
                results.append({"seed": record["seed"], "split": split, **comparison})
    return sorted(results, key=lambda r: (r["split"], r["seed"]))


def title(settings: dict[str, Any]) -> str:
    """The results page's title."""
    return f"HierSRec ablation on {settings['dataset']}"


def markdown(summary: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    """The settings as bullet lines, then the summary as markdown tables (metrics in %, mean +- std over seeds)."""
    lines = header_lines(settings)
    titles = {
        "valid": "validation (selection split)",
        "test": "test (evaluated once per selected checkpoint)",
        "test_refit": "test of the refits (all training sessions, the epochs chosen on validation)",
    }
    for split, heading in titles.items():
        rows = [(name, entry[split]) for name, entry in summary.items() if split in entry]
        if not rows:
            continue
        lines += ["", f"## {heading}", "", "| variant | " + " | ".join(TABLE) + " | best epochs |"]
        lines.append("|---" * (len(TABLE) + 2) + "|")
        for name, metrics in rows:
            cells = [
                f"{100 * metrics[k]['mean']:.2f} ± {100 * metrics[k]['std']:.2f}" if k in metrics else "-"
                for k in TABLE
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary[name]['best_epochs']} |")
    paired = [(name, row) for name, entry in summary.items() for row in entry.get("paired", [])]
    if paired:
        lines += [
            "",
            f"## paired tests against {settings['compared_to']} (same seed, same test cases; 99% bootstrap intervals)",
            "",
            "| variant | split | seed | MRR@20 diff | 99% CI | HR@20 diff | 99% CI | Wilcoxon p |",
            "|---|---|---:|---:|---|---:|---|---:|",
        ]
        for name, row in paired:
            lines.append(f"| {name} | {row['split']} | {row['seed']} | {paired_cells(row)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    benchmark = "hiersrec_accuracy_valid_only" if args.valid_only else "hiersrec_accuracy"
    dataset, preset, name, out = resolve(args.dataset, args.preset, benchmark, args.out)
    common = [f"train.device={args.device}", "train.show_progress=false", *args.overrides]
    if args.precision:
        common.append(f"train.precision={args.precision}")
    jobs = [
        {
            "variant": variant.split(":")[0],
            "seed": seed,
            "preset": preset,
            "dataset": str(dataset),
            "overrides": [*variant_overrides(variant), f"train.seed={seed}", *common],
            "threads": args.threads,
            "valid_only": args.valid_only,
            "breakdown": args.breakdown,
            "refit": args.refit,
            "case_ranks": args.compare_to is not None,
            "run_dir": str(args.runs_dir / out.name / f"{variant.split(':')[0]}-seed{seed}"),
        }
        for variant in args.variants.split(";" if ":" in args.variants else ",")
        for seed in (int(s) for s in args.seeds.split(","))
    ]
    header = results_header(__file__, argv)
    settings = {
        "dataset": name,
        "preset": preset,
        "common_overrides": common,
        "protocol": "full ranking, pessimistic ties; checkpoint chosen by validation MRR@k, test evaluated once",
    }
    records = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.parallel) as pool, open(sibling(out, ".jsonl"), "a") as log:
        for record in pool.imap_unordered(run_one, jobs):
            records.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(f"{record['variant']} seed {record['seed']}: epoch {record['best_epoch']}/{record['epochs_run']}"
                  f" valid {_short(record['valid'])} | test {_short(record.get('test', {}))}"
                  f" | refit {_short(record.get('test_refit', {}))}", flush=True)  # fmt: skip
    summary = summarise(records)
    if args.compare_to and not args.valid_only:
        settings["compared_to"] = args.compare_to
        for variant, entry in summary.items():
            entry["paired"] = paired_tests(records, variant, args.compare_to, jobs)
    body = markdown(summary, settings)
    write_results(out, header, {**settings, "summary": summary, "runs": records}, title(settings), body)
    print(body)


if __name__ == "__main__":
    main()
