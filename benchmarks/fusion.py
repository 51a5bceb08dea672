"""HierSRec fused with a session-neighbour partner against the tuned baseline it has to beat (issue 12).

Steps, all choices on the validation tail:

1. every trained neural run (``--runs``, one per seed, all trained on ``--data``) is fused with every partner
   (``--partner NAME`` with its tuned hyperparameters, ``--partner-params NAME:key=value,...``): the rule and
   weight are chosen on validation (`hiersrec.train.run.fuse_run`); every (rule, weight) tried is listed;
2. the partner whose fused runs have the best mean validation MRR@20 is the final configuration;
3. test, read once per final configuration (every prefix, full ranking, pessimistic ties): the neural runs,
   their fused runs with the chosen partner, and the tuned baseline (``--baseline``, fitted on all training
   sessions with its tuned hyperparameters); per-case ranks are saved in the work folder, and each fused run
   is compared with the baseline and with its own neural run by paired tests over the test cases
   (`hiersrec.eval.significance.compare`: bootstrap 99% intervals and Wilcoxon signed-rank).

    python benchmarks/fusion.py --data prepared/diginetica --runs runs/dgn-full runs/dgn-seed1 runs/dgn-seed2

With ``--refits`` (one ``hiersrec refit`` of each chosen fused run), their test figures and paired tests are added:
the refit on all training sessions is the final form of the model, decided by protocol (tuned baselines are
refitted the same way), not by its test figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiersrec.artifact import load_artifact
from hiersrec.config import FusionConfig, config_from_dict
from hiersrec.data.ingest import open_dataset
from hiersrec.eval.significance import case_ranks, compare, per_case_metrics, significantly_better
from hiersrec.models import make_model
from hiersrec.train.run import TrainingData, fuse_run
from reporting import REPO, interval_cells, resolve_stem, results_header, write_results

# The diginetica baselines tuned on the validation tail (benchmarks/results/baselines-diginetica.json).
TUNED = {
    "vstan": {"k": 1000, "sample_size": 10000, "lambda_spw": 1.225, "lambda_snh": 10, "lambda_inh": 9.8,
              "lambda_ipw": 4.9, "lambda_idf": 10},
    "sr": {"steps": 10, "weighting": "div", "pruning": 20},
    "stan": {"k": 1000, "sample_size": 1000, "lambda_spw": 0.6125, "lambda_snh": 10, "lambda_inh": 1.225},
    "vsknn": {"k": 1500, "sample_size": 5000, "weighting": "linear", "weighting_score": "div", "idf_weight": 1},
}  # fmt: skip
logger = logging.getLogger("benchmarks.fusion")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the prepared dataset the runs were trained on")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="neural run directories (one per seed)")
    parser.add_argument("--partner", action="append", default=None, help="partner (repeatable; default vstan, sr)")
    parser.add_argument("--partner-params", action="append", default=[], help="NAME:key=value,... (default: TUNED)")
    parser.add_argument("--rules", default="probability,logit")
    parser.add_argument("--refits", nargs="*", type=Path, default=[], help="refits of the first runs' fused runs")
    parser.add_argument("--baseline", default="vstan", help="the tuned baseline to beat (its TUNED parameters)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "fusion")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--label", default=None, help="results file label (default: the dataset name)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def partner_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Partner name -> hyperparameters: TUNED, updated by ``--partner-params``."""
    names = args.partner or ["vstan", "sr"]
    settings = {name: dict(TUNED.get(name, {})) for name in names}
    for spec in args.partner_params:
        name, _, pairs = spec.partition(":")
        for pair in filter(None, pairs.split(",")):
            key, _, value = pair.partition("=")
            settings.setdefault(name, {})[key] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    return settings


def fused_run(run: Path, partner: str, params: dict, rules: tuple[str, ...], data: TrainingData, work: Path) -> Path:
    """The fused run of ``run`` with ``partner`` in ``work`` (fused now unless a finished one is there)."""
    out = work / f"{run.name}+{partner}"
    if (out / "meta.json").is_file():
        logger.info("%s: already fused", out)
        return out
    started = time.perf_counter()
    fuse_run(run, data, FusionConfig(partner=partner, partner_params=params, rules=rules), out)
    logger.info("%s: fused in %.0f s", out, time.perf_counter() - started)
    return out


def test_ranks(name: str, model: Any, data, max_len: int, work: Path) -> np.ndarray:
    """Per-case test ranks of ``model``, cached in ``work/ranks-<name>.npy``."""
    path = work / f"ranks-{name}.npy"
    if path.is_file():
        return np.load(path)
    started = time.perf_counter()
    ranks = case_ranks(model, data.test, data.catalog, max_len=max_len)
    np.save(path, ranks)
    logger.info("%s: test ranked in %.0f s, MRR@20 %.4f", name, time.perf_counter() - started,
                per_case_metrics(ranks)["mrr@20"].mean())  # fmt: skip
    return ranks


def valid_mrr(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["valid"]["mrr@20"]


def summary(ranks: np.ndarray) -> dict[str, float]:
    return {key: float(values.mean()) for key, values in per_case_metrics(ranks).items()}


def mean_std(rows: list[dict[str, float]], key: str) -> str:
    values = 100 * np.array([row[key] for row in rows])
    return f"{values.mean():.2f} ± {values.std(ddof=1) if values.size > 1 else 0.0:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    header = results_header(__file__, argv)
    dataset = open_dataset(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    partners = partner_settings(args)
    rules = tuple(args.rules.split(","))
    valid_rows: list[dict[str, Any]] = []
    fused: dict[str, dict[str, Path]] = {name: {} for name in partners}
    for run in args.runs:
        config = config_from_dict(json.loads((run / "config.json").read_text()))
        data = TrainingData.from_prepared(dataset, config.data.valid_fraction)
        neural_valid = json.loads((run / "metrics.json").read_text())["valid"]
        valid_rows.append({"run": run.name, "partner": None, "rule": None, "weight": None, "metrics": neural_valid})
        for name, params in partners.items():
            out = fused_run(run, name, params, rules, data, args.work)
            fused[name][run.name] = out
            metrics = json.loads((out / "metrics.json").read_text())
            for trial in metrics["fusion"]["trials"]:
                valid_rows.append({"run": run.name, "partner": name, **trial})
    chosen_valid = {name: float(np.mean([valid_mrr(out) for out in runs.values()])) for name, runs in fused.items()}
    final = max(chosen_valid, key=chosen_valid.get)
    logger.info("final partner (validation MRR@20 of the fused runs): %s %s", final, chosen_valid)

    baseline = make_model(args.baseline, TUNED.get(args.baseline, {})).fit(dataset.train, dataset.catalog)
    baseline_ranks = test_ranks(f"baseline-{args.baseline}", baseline, dataset, 50, args.work)
    test_rows, comparisons = [], []
    for run in args.runs:
        neural = load_artifact(run)
        fused_artifact = load_artifact(fused[final][run.name])
        neural_ranks = test_ranks(run.name, neural.model, dataset, neural.max_len, args.work)
        fused_ranks = test_ranks(f"{run.name}+{final}", fused_artifact.model, dataset, fused_artifact.max_len,
                                 args.work)  # fmt: skip
        fusion = fused_artifact.config.fusion
        test_rows.append({"run": run.name, "neural": summary(neural_ranks), "fused": summary(fused_ranks),
                          "rule": fusion.rule, "weight": fusion.weight})  # fmt: skip
        comparisons.append({
            "run": run.name,
            "fused_minus_baseline": compare(fused_ranks, baseline_ranks, n_boot=args.bootstrap),
            "fused_minus_neural": compare(fused_ranks, neural_ranks, n_boot=args.bootstrap),
            "neural_minus_baseline": compare(neural_ranks, baseline_ranks, n_boot=args.bootstrap),
        })  # fmt: skip
    if len(args.refits) > len(args.runs):
        raise SystemExit("--refits: at most one refit per --runs entry, in the same order")
    for row, comp, refit in zip(test_rows[: len(args.refits)], comparisons, args.refits, strict=False):
        refitted = load_artifact(refit)
        if Path(refitted.metrics.get("refit_of", "")).resolve() != fused[final][row["run"]].resolve():
            raise SystemExit(f"{refit} is not the refit of {fused[final][row['run']]}")
        refit_ranks = test_ranks(refit.name, refitted.model, dataset, refitted.max_len, args.work)
        row["refit"] = summary(refit_ranks)
        fused_ranks = np.load(args.work / f"ranks-{row['run']}+{final}.npy")
        comp["refit_minus_baseline"] = compare(refit_ranks, baseline_ranks, n_boot=args.bootstrap)
        comp["refit_minus_fused"] = compare(refit_ranks, fused_ranks, n_boot=args.bootstrap)
    payload = {
        "dataset": dataset.name,
        "partners": partners,
        "validation": valid_rows,
        "validation_mrr20_of_fused_runs": chosen_valid,
        "final_partner": final,
        "baseline": {"name": args.baseline, "params": TUNED.get(args.baseline, {}), "test": summary(baseline_ranks)},
        "test": test_rows,
        "comparisons": comparisons,
        "n_test_cases": int(baseline_ranks.size),
    }
    body = render(payload, args)
    stem = resolve_stem(args.out, "fusion", args.label or dataset.name)
    write_results(stem, header, payload, f"HierSRec fused with a session-neighbour partner on {dataset.name}", body)
    print(body)


def render(payload: dict[str, Any], args: argparse.Namespace) -> str:
    """The results page body: validation of every variant, then the final configuration's test figures."""
    lines = [
        "## Validation (every variant tried; selection by MRR@20)",
        "",
        "| run | partner | rule | weight | HR@20 | MRR@20 |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in payload["validation"]:
        metrics = row["metrics"]
        partner = row["partner"] or "none (neural run alone)"
        weight = "" if row["weight"] is None else f"{row['weight']:g}"
        lines.append(f"| {row['run']} | {partner} | {row['rule'] or ''} | {weight} | {100 * metrics['hr@20']:.2f} "
                     f"| {100 * metrics['mrr@20']:.2f} |")  # fmt: skip
    chosen = ", ".join(f"{name} {100 * value:.2f}" for name, value in payload["validation_mrr20_of_fused_runs"].items())
    lines += ["", f"Mean validation MRR@20 of the fused runs (each at its chosen rule and weight): {chosen}. "
              f"Final partner: **{payload['final_partner']}**.", ""]  # fmt: skip
    base = payload["baseline"]
    lines += [
        f"## Test (read once per final configuration; {payload['n_test_cases']} cases, every prefix, full ranking, "
        "pessimistic ties)",
        "",
        "| model | HR@20 | MRR@20 |",
        "|---|---:|---:|",
        f"| {base['name']} tuned ({base['params']}) | {100 * base['test']['hr@20']:.2f} | "
        f"{100 * base['test']['mrr@20']:.2f} |",
        f"| neural runs ({len(payload['test'])} seeds) | {mean_std([r['neural'] for r in payload['test']], 'hr@20')} | "
        f"{mean_std([r['neural'] for r in payload['test']], 'mrr@20')} |",
        f"| fused with {payload['final_partner']} | {mean_std([r['fused'] for r in payload['test']], 'hr@20')} | "
        f"{mean_std([r['fused'] for r in payload['test']], 'mrr@20')} |",
    ]
    refits = [r["refit"] for r in payload["test"] if "refit" in r]
    if refits:
        label = f"fused, refitted on all training sessions ({len(refits)} seeds)"
        lines.append(f"| {label} | {mean_std(refits, 'hr@20')} | {mean_std(refits, 'mrr@20')} |")
    lines += [
        "",
        "Paired tests per seed (A - B over the test cases; 99% bootstrap intervals; Wilcoxon on reciprocal rank):",
        "",
        "| run | rule, weight | comparison | MRR@20 diff (99% CI) | HR@20 diff (99% CI) | Wilcoxon p | "
        "better on both (p < 0.01) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row, comp in zip(payload["test"], payload["comparisons"], strict=True):
        keys = ["fused_minus_baseline", "fused_minus_neural", "neural_minus_baseline"]
        for key in [*keys, "refit_minus_baseline", "refit_minus_fused"]:
            if key not in comp:
                continue
            c = comp[key]
            cells = interval_cells(c)
            lines.append(f"| {row['run']} | {row['rule']} {row['weight']:g} | {key.replace('_', ' ')} | {cells} | "
                         f"{c['wilcoxon_p']:.2g} | {'yes' if significantly_better(c) else 'no'} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
