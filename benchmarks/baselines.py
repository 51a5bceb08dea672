"""Tune every non-neural baseline on validation, refit it on all of train, evaluate it on test once.

For each dataset (SR-GNN TSV folders under ``--data-dir``) and each baseline:

1. random search (``--trials`` configurations, the documented defaults first) fitted on the head of the
   training sessions and scored by MRR@20 (``cat_acc@1`` for ``last_category``) on the earliest
   ``--max-valid-sessions`` sessions of the chronological tail (``--valid-fraction``); baselines without
   hyperparameters are not tuned;
2. refit with the best configuration on the full training split (timed);
3. one evaluation on the test split: every prefix of every test session, full ranking, pessimistic ties.

Writes, per dataset, ``benchmarks/results/baselines-<dataset>-<date>.json`` (every trial, the chosen
parameters, test metrics, timings; the command, commit, machine and date in its header) and the same name
``.md`` (the table), through ``reporting.py``.

    .venv/bin/python benchmarks/baselines.py                      # both datasets, default budget
    .venv/bin/python benchmarks/baselines.py --datasets diginetica --trials 4 --models sr sknn
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiersrec.data.ingest.srgnn import read_srgnn_dir
from hiersrec.eval.protocol import evaluate
from hiersrec.models import BASELINES, make_baseline, search_space
from hiersrec.tuning import tune_baseline
from reporting import REPO, RESULTS, results_header, results_stem, write_results

TEST_KS = (5, 10, 20)
TABLE_METRICS = ("hr@10", "hr@20", "mrr@10", "mrr@20", "ndcg@10", "ndcg@20", "cat_acc@1")

logger = logging.getLogger("benchmarks.baselines")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--datasets", nargs="+", default=["diginetica", "yoochoose1_64"])
    parser.add_argument("--models", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--trials", type=int, default=10, help="configurations tried per baseline (defaults incl.)")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--max-valid-sessions", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    return parser.parse_args(argv)


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Tune, refit and test every requested baseline on one dataset; return the JSON-ready record."""
    data = read_srgnn_dir(args.data_dir / name / "srgnn_cat", name=name)
    logger.info(
        "%s: %d train / %d test sessions, %d items",
        name,
        data.train.n_sessions,
        data.test.n_sessions,
        data.catalog.n_items,
    )
    rows = []
    for model_name in args.models:
        metric = "cat_acc@1" if model_name == "last_category" else "mrr@20"
        started = time.perf_counter()
        tuning = None
        params: dict[str, Any] = {}
        if search_space(model_name):
            tuning = tune_baseline(
                model_name,
                data.train,
                data.catalog,
                n_trials=args.trials,
                seed=args.seed,
                valid_fraction=args.valid_fraction,
                max_valid_sessions=args.max_valid_sessions,
                metric=metric,
            )
            params = tuning.best_params
        tuning_seconds = time.perf_counter() - started
        fit_started = time.perf_counter()
        model = make_baseline(model_name, **params).fit(data.train, data.catalog)
        fit_seconds = time.perf_counter() - fit_started
        report = evaluate(model, data.test, data.catalog, ks=TEST_KS)
        logger.info(
            "%s %s %s: test %s = %.4f (fit %.1f s, eval %.1f s, tuning %.0f s)",
            name,
            model_name,
            params,
            metric,
            report.metrics[metric],
            fit_seconds,
            report.seconds,
            tuning_seconds,
        )
        rows.append(
            {
                "model": model_name,
                "params": model.describe(),
                "metrics": report.metrics,
                "fit_seconds": fit_seconds,
                "eval_seconds": report.seconds,
                "tuning_seconds": tuning_seconds,
                "tuning": None if tuning is None else tuning.to_dict(),
                "test_cases": report.n_cases,
                "n_items": report.n_items,
            }
        )
    return {
        "dataset": name,
        "train_sessions": data.train.n_sessions,
        "test_sessions": data.test.n_sessions,
        "protocol": "all_prefixes, full ranking, pessimistic ties",
        "validation": {
            "fraction": args.valid_fraction,
            "max_sessions": args.max_valid_sessions,
            "trials": args.trials,
            "seed": args.seed,
            "metric": "mrr@20 (cat_acc@1 for last_category)",
        },
        "results": rows,
        "numpy_version": np.__version__,
    }


def markdown(record: dict[str, Any]) -> str:
    """The results table of one dataset (metrics in %) with how the baselines were tuned and tested."""
    validation = record["validation"]
    lines = [
        f"{record['train_sessions']:,} train / {record['test_sessions']:,} test sessions; test: "
        f"{record['results'][0]['test_cases']:,} prefixes ranked against all {record['results'][0]['n_items']:,} "
        f"items ({record['protocol']}). Tuning: {validation['trials']} random configurations (defaults first), "
        f"fitted on the first {1 - validation['fraction']:.0%} of the training sessions and scored by "
        f"{validation['metric']} on the first {validation['max_sessions']:,} sessions of the last "
        f"{validation['fraction']:.0%}; the chosen one refitted on all training sessions; test evaluated once.",
        "",
        "| model | " + " | ".join(TABLE_METRICS) + " | fit s | eval s | chosen parameters |",
        "|---|" + "---:|" * (len(TABLE_METRICS) + 2) + "---|",
    ]
    for row in record["results"]:
        cells = [f"{100 * row['metrics'][m]:.2f}" if m in row["metrics"] else "" for m in TABLE_METRICS]
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items() if k != "name") or "-"
        lines.append(
            f"| {row['model']} | "
            + " | ".join(cells)
            + f" | {row['fit_seconds']:.1f} | {row['eval_seconds']:.1f} | {params} |"
        )
    lines += [
        "",
        f"numpy {record['numpy_version']}. Times are wall seconds on shared cores (pessimistic); eval s includes "
        "the evaluator's ranking of all items.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        header = results_header(__file__, argv)
        record = run_dataset(name, args)
        stem = results_stem("baselines", name, directory=args.out)
        _, markdown_path = write_results(stem, header, record, f"Non-neural baselines on {name}", markdown(record))
        logger.info("wrote %s", markdown_path)


if __name__ == "__main__":
    main()
