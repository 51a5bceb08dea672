"""A fitted model's run directory scores exactly as fitting it in place: the same test metrics, both ways.

Fits one baseline (default: VSTAN with the tuned diginetica values of benchmarks/results/baselines.md) twice
on a dataset's training sessions: once through ``fit_run`` into a run directory that is then loaded back
(what ``hiersrec train --model NAME`` + ``hiersrec evaluate RUN`` do), once directly (what ``hiersrec evaluate
--model NAME`` does), and evaluates both on the test split by full ranking. Writes
``benchmarks/results/run_parity-<dataset>-<date>.{json,md}``.

    python benchmarks/run_parity.py --data ../shared/data/diginetica/srgnn_cat
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hiersrec.artifact import load_artifact
from hiersrec.config import FittedModelConfig, RunConfig
from hiersrec.data.ingest import open_dataset
from hiersrec.eval.protocol import evaluate
from hiersrec.models import make_model
from hiersrec.train.run import TrainingData, fit_run
from reporting import resolve_stem, results_header, write_results

TUNED_VSTAN = "k=1000,sample_size=10000,lambda_spw=1.225,lambda_snh=10,lambda_inh=9.8,lambda_ipw=4.9,lambda_idf=10"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset: prepared folder, SR-GNN folder or 'synthetic'")
    parser.add_argument("--model", default="vstan", help="a fitted model's registry name")
    parser.add_argument("--params", default=TUNED_VSTAN, help="comma-separated NAME=VALUE hyperparameters")
    parser.add_argument("--out", type=Path, default=None, help="results stem (default: the naming scheme)")
    return parser.parse_args(argv)


def _params(text: str) -> dict:
    params = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        params[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return params


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    dataset = open_dataset(args.data)
    params = _params(args.params)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        config = RunConfig(model=FittedModelConfig(name=args.model, params=params))
        fit_run(config, TrainingData.from_prepared(dataset), Path(scratch) / "run")
        loaded = load_artifact(Path(scratch) / "run").model
        report = evaluate(loaded, dataset.test, dataset.catalog, ks=(20,))
        rows["run directory (train --model, evaluate RUN)"] = (report, time.perf_counter() - started)
    started = time.perf_counter()
    direct = make_model(args.model, params).fit(dataset.train, dataset.catalog)
    report = evaluate(direct, dataset.test, dataset.catalog, ks=(20,))
    rows["fitted in place (evaluate --model)"] = (report, time.perf_counter() - started)
    reports = [report for report, _ in rows.values()]
    identical = reports[0].metrics == reports[1].metrics
    payload = {
        "dataset": dataset.name,
        "model": args.model,
        "params": params,
        "n_cases": reports[0].n_cases,
        "identical": identical,
        "rows": {name: {"metrics": r.metrics, "seconds": s} for name, (r, s) in rows.items()},
    }
    lines = ["| path | HR@20 | MRR@20 | NDCG@20 | seconds (fit + evaluate) |", "|---|---:|---:|---:|---:|"]
    for name, (report, seconds) in rows.items():
        m = report.metrics
        lines.append(
            f"| {name} | {100 * m['hr@20']:.2f} | {100 * m['mrr@20']:.2f} | {100 * m['ndcg@20']:.2f} | {seconds:.1f} |"
        )
    verdict = "identical" if identical else "DIFFERENT"
    body = "\n".join(
        [
            f"{args.model} ({args.params}) on {dataset.name}, test split, every prefix ({reports[0].n_cases} cases),",
            f"full ranking, pessimistic ties. The two paths' metrics are **{verdict}**.",
            "",
            *lines,
        ]
    )
    stem = resolve_stem(args.out, "run_parity", dataset.name)
    write_results(stem, header, payload, f"Run directory parity: {args.model}", body)
    print(body)
    print(f"wrote {stem}.json and .md")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
