"""Does the shipped diginetica preset travel to a shop where repeats rule? (issue 12, the "default must travel")

A synthetic shop with long sessions where about half of the test targets repeat an earlier click of their
session (`SyntheticShopConfig(repeat_prob=...)`): what kNN models and S-POP do well. Steps, all selection on the
validation tail of the training sessions:

1. the baselines S-POP, SR, SKNN, V-SKNN, STAN and VSTAN, each tuned by random search (``--trials``) on the
   validation tail and refitted on all training sessions;
2. HierSRec with the ``diginetica_hiersrec`` preset, untouched (its own early stopping on the validation tail);
3. one test evaluation of each (every prefix, full ranking, pessimistic ties) with per-case reciprocal ranks
   and hits, and HierSRec against every baseline by a paired test over the test cases (Wilcoxon signed-rank
   on reciprocal rank; a paired bootstrap 99% interval of the MRR@20 and HR@20 differences);
4. HierSRec's category candidates at fixed budgets with and without the session's own items.

    python benchmarks/repeat_shop.py --work benchmarks/work/repeat_shop
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from hiersrec.config import load_config
from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.metrics import target_ranks
from hiersrec.retrieval.evaluate import evaluate_candidates, format_candidate_table
from hiersrec.train.run import TrainingData, fit_run
from hiersrec.tuning import tune_and_fit
from reporting import REPO, resolve_stem, results_header, write_results

BASELINES = ("spop", "sr", "sknn", "vsknn", "stan", "vstan")
BUDGETS = ("2%", "4%", "8%", "2%:categories-only", "4%:categories-only", "8%:categories-only", "100%")
logger = logging.getLogger("benchmarks.repeat_shop")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--mean-length", type=float, default=30.0)
    parser.add_argument("--repeat-prob", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=10, help="random-search trials per baseline")
    parser.add_argument("--preset", default="diginetica_hiersrec")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="preset override (report it)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "repeat_shop")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def per_case(model: Any, sessions, catalog, max_len: int) -> dict[str, np.ndarray]:
    """Reciprocal rank (0 past 20) and hit@20 of every test case, in case order."""
    rr, hit = [], []
    with torch.inference_mode():
        for batch in iter_prefix_batches(sessions, catalog, sessions.target_positions(), 512, max_len):
            ranks = target_ranks(model.score(batch).float(), batch.target_items)
            rr.append(torch.where(ranks <= 20, 1.0 / ranks, 0.0).numpy())
            hit.append((ranks <= 20).float().numpy())
    return {"rr": np.concatenate(rr), "hit": np.concatenate(hit)}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n_boot: int, rng: np.random.Generator) -> dict:
    """a - b over the same cases: mean differences, Wilcoxon p on reciprocal rank, bootstrap 99% intervals."""
    n = a["rr"].size
    draws = rng.integers(0, n, (n_boot, n))
    out: dict[str, Any] = {}
    for key, name in (("rr", "mrr@20"), ("hit", "hr@20")):
        diff = a[key] - b[key]
        boot = diff[draws].mean(axis=1)
        out[name] = {
            "difference": float(diff.mean()),
            "ci99": [float(np.percentile(boot, 0.5)), float(np.percentile(boot, 99.5))],
        }
    nonzero = (a["rr"] - b["rr"]) != 0
    out["wilcoxon_p_rr"] = float(stats.wilcoxon(a["rr"][nonzero], b["rr"][nonzero]).pvalue) if nonzero.any() else 1.0
    return out


def repeat_share(sessions) -> float:
    repeats = total = 0
    for i in range(sessions.n_sessions):
        seen: set[int] = set()
        for j, item in enumerate(sessions.items[sessions.offsets[i] : sessions.offsets[i + 1]].tolist()):
            if j:
                total += 1
                repeats += item in seen
            seen.add(item)
    return repeats / max(total, 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    header = results_header(__file__, argv)
    shop = SyntheticShopConfig(
        n_sessions=args.sessions,
        mean_length=args.mean_length,
        max_length=100,
        repeat_prob=args.repeat_prob,
        seed=args.seed,
    )
    data = make_synthetic_shop(shop)
    training = TrainingData.from_prepared(data)
    rows: dict[str, dict[str, Any]] = {}
    cases: dict[str, dict[str, np.ndarray]] = {}
    for name in BASELINES:
        started = time.perf_counter()
        fitted = tune_and_fit(name, {}, data.train, data.catalog, tune_trials=args.trials)
        cases[name] = per_case(fitted.model, data.test, data.catalog, 50)
        rows[name] = {"params": fitted.params, "valid_mrr@20": fitted.tuning.best_score if fitted.tuning else None}
        rows[name]["seconds"] = time.perf_counter() - started
        logger.info("%s: test MRR@20 %.4f", name, cases[name]["rr"].mean())
    config = load_config(preset=args.preset, overrides=[*args.overrides, "train.show_progress=false"])
    run_dir = args.work / f"hiersrec-{args.preset}"
    started = time.perf_counter()
    artifact, result = fit_run(config, training, run_dir, resume=(run_dir / "checkpoint.pt").is_file())
    max_len = artifact.max_len
    cases["hiersrec"] = per_case(artifact.model, data.test, data.catalog, max_len)
    rows["hiersrec"] = {
        "preset": args.preset,
        "overrides": args.overrides,
        "best_epoch": result.best_epoch,
        "valid_mrr@20": result.best_metrics.get("mrr@20"),
        "seconds": time.perf_counter() - started,
    }
    for name, values in cases.items():
        rows[name].update({"test_hr@20": float(values["hit"].mean()), "test_mrr@20": float(values["rr"].mean())})
    rng = np.random.default_rng(0)
    comparisons = {name: paired(cases["hiersrec"], cases[name], args.bootstrap, rng) for name in BASELINES}
    report = evaluate_candidates(artifact.model, data.test, data.catalog, budgets=BUDGETS, max_len=max_len)
    payload = {
        "shop": {
            **shop.__dict__,
            "test_repeat_share": repeat_share(data.test),
            "n_cases": int(cases["spop"]["rr"].size),
        },
        "models": rows,
        "hiersrec_minus_baseline": comparisons,
        "candidates": report.to_dict(),
    }
    lines = [
        f"Synthetic shop: {args.sessions} sessions, mean length {args.mean_length}, repeat_prob {args.repeat_prob}: "
        f"{100 * payload['shop']['test_repeat_share']:.1f}% of the {payload['shop']['n_cases']} test targets repeat "
        "an earlier click of their session. Test, every prefix, full ranking, pessimistic ties.",
        "",
        "| model | selected on validation | test HR@20 | test MRR@20 | HierSRec - model: MRR@20 (99% CI) "
        "| HR@20 (99% CI) | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        chosen = row["params"] if "params" in row else f"{args.preset} untouched, epoch {row['best_epoch']}"
        comp = comparisons.get(name)
        cells = (
            "| | |"
            if comp is None
            else (
                f"{100 * comp['mrr@20']['difference']:+.2f} ({100 * comp['mrr@20']['ci99'][0]:+.2f}, "
                f"{100 * comp['mrr@20']['ci99'][1]:+.2f}) | {100 * comp['hr@20']['difference']:+.2f} "
                f"({100 * comp['hr@20']['ci99'][0]:+.2f}, {100 * comp['hr@20']['ci99'][1]:+.2f}) | "
                f"{comp['wilcoxon_p_rr']:.2g} |"
            )
        )
        lines.append(f"| {name} | {chosen} | {100 * row['test_hr@20']:.2f} | {100 * row['test_mrr@20']:.2f} | {cells}")
    lines += ["", "HierSRec's category candidates (test), with and without the session's own items:", "", "```"]
    lines += [format_candidate_table(report), "```"]
    body = "\n".join(lines)
    stem = resolve_stem(args.out, "repeat_shop", f"repeat{args.repeat_prob:g}")
    write_results(stem, header, payload, "A repeat-heavy shop: the diginetica preset against tuned kNN", body)
    print(body)


if __name__ == "__main__":
    main()
