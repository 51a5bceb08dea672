"""Category candidates of a trained HierSRec run against its full ranking, on a dataset's test split.

For each budget (1, 2, 4, 8, 16 and 100% of the catalogue by default): candidate recall (the target is among
the candidates), the overlap with the full ranking's top 20, HR@20 and MRR@20 with candidates only, each
relative to full ranking, the mean share of the catalogue ranked, and the search latency (batched, and one
session at a time). The budgets are fixed in advance: nothing is chosen on the test split.

Targets (issue 4) at the 4% budget: candidate recall >= 95%, HR@20 >= 98% and MRR@20 >= 99% of full ranking.

Usage:
    python benchmarks/candidates.py --run runs/hiersrec-dgn --data ../shared/data/diginetica/srgnn_cat
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from hiersrec.data.storage import open_dataset
from hiersrec.provenance import provenance
from hiersrec.retrieval.evaluate import DEFAULT_BUDGETS, CandidateReport, evaluate_candidates, format_candidate_table
from hiersrec.train.artifact import load_artifact

RESULTS = Path(__file__).parent / "results"
TARGETS = {"candidate_recall": 0.95, "hr": 0.98, "mrr": 0.99}  # at the 4% budget (issue 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--data", required=True, help="prepared dataset or SR-GNN folder the run was trained on")
    parser.add_argument("--budgets", default=",".join(DEFAULT_BUDGETS), help="comma-separated budgets")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--single-sample", type=int, default=500, help="cases also timed one session at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument(
        "--ann-sample",
        type=int,
        default=1000,
        help="test cases on which candidates are compared with FAISS IVF and HNSW on the model's own embeddings "
        "(0: skip)",
    )
    parser.add_argument("--nprobe", default="1,2,4,8,16,32,64,128", help="IVF cells searched (comparison)")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512,1024", help="HNSW beam widths (comparison)")
    parser.add_argument("--out", type=Path, default=None, help="results stem (default results/candidates-...)")
    return parser.parse_args(argv)


def check_targets(report: CandidateReport) -> dict[str, dict[str, float | bool]]:
    """The issue's targets at the 4% budget, each with its measured value and whether it is met."""
    row = next((r for r in report.budgets if r.budget == "4%"), None)
    if row is None:
        return {}
    measured = {
        "candidate_recall": row.candidate_recall,
        "hr": row.relative[f"hr@{report.k}"],
        "mrr": row.relative[f"mrr@{report.k}"],
    }
    return {
        name: {"value": measured[name], "target": target, "met": measured[name] >= target}
        for name, target in TARGETS.items()
    }


def plot(report: CandidateReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.budgets if r.budget.endswith("%")]
    fractions = [100 * r.mean_candidate_fraction for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, values in [
        ("candidate recall", [r.candidate_recall for r in rows]),
        (f"top-{report.k} overlap", [r.top_overlap for r in rows]),
        (f"HR@{report.k} / full", [r.relative[f"hr@{report.k}"] for r in rows]),
        (f"MRR@{report.k} / full", [r.relative[f"mrr@{report.k}"] for r in rows]),
    ]:
        left.plot(fractions, values, "o-", label=label)
    left.set_xscale("log")
    left.set_xlabel("mean share of the catalogue ranked (%, log scale)")
    left.set_ylabel("share of full ranking")
    left.grid(True, alpha=0.3)
    left.legend()
    single = [r.single_ms_p50 for r in rows]
    if all(value is not None for value in single):
        right.plot(fractions, single, "o-", label="candidates, one session (p50)")
        right.axhline(report.full.single_ms_p50, color="k", linestyle="--", label="full ranking, one session (p50)")
        right.set_xscale("log")
        right.set_xlabel("mean share of the catalogue ranked (%, log scale)")
        right.set_ylabel("search latency (ms)")
        right.grid(True, alpha=0.3)
        right.legend()
    fig.suptitle(f"{report.extra.get('dataset', '')}: category candidates vs full ranking ({report.n_cases} cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ann_comparison(model, dataset, budgets: list[str], max_len: int, args) -> list[dict]:
    """Candidates vs FAISS IVF and HNSW on the trained model's own item embeddings and session queries.

    On the first ``--ann-sample`` test cases: recall of the exact top k and one-session latency of each
    method, timed interleaved (`benchmarks/scale.py`'s harness). Nothing here is tuned on these cases: the
    sweeps are the fixed lists of the command line.
    """
    from argparse import Namespace

    from hiersrec.data.batching import prefix_batch
    from hiersrec.retrieval.category import CandidateBudget, select_categories
    from hiersrec.retrieval.index import CategoryIndex, ExactIndex
    from scale import faiss_methods, recall, time_methods  # the same harness as the scale benchmark

    targets = dataset.test.target_positions()[: args.ann_sample]
    with torch.inference_mode():
        query = model.encode(prefix_batch(dataset.test, dataset.catalog, targets, max_len))
        embeddings = model.item_output_embeddings().detach().float().clone()
    exact_index, category_index = ExactIndex(embeddings), CategoryIndex.from_catalog(embeddings, dataset.catalog)
    methods = [("exact", "", lambda q, _c: exact_index.search(q, args.k)[0], 0.0)]
    for budget in [CandidateBudget.parse(b) for b in budgets if b != "100%"]:
        methods.append(
            (
                "candidates",
                budget.label,
                lambda q, c, budget=budget: category_index.search(
                    q, args.k, selected=select_categories(c, category_index.sizes, budget)
                )[0],
                0.0,
            )
        )
    options = Namespace(nprobe=args.nprobe, ef_search=args.ef_search, hnsw_m=16, hnsw_max_items=10**9, seed=0, k=args.k)
    methods += faiss_methods(embeddings, dataset.catalog.n_items, options, k=args.k)
    timings = time_methods(methods, query.item_query, query.category_logits, len(targets), 0, 0)
    exact_ids = torch.cat(timings[0]["single_ids"])
    return [
        {
            "method": name,
            "param": param,
            f"recall_top{args.k}": recall(torch.cat(t["single_ids"]), exact_ids),
            "single_p50_ms": float(np.percentile(t["single_ms"], 50)),
            "single_p99_ms": float(np.percentile(t["single_ms"], 99)),
            "build_s": build_s,
        }
        for (name, param, _, build_s), t in zip(methods, timings, strict=True)
    ]


def ann_markdown(rows: list[dict], args) -> str:
    if not rows:
        return ""
    lines = [
        f"Candidates vs FAISS on this model's embeddings and queries (first {args.ann_sample} test cases; "
        f"recall of the exact top {args.k}; one session at a time, methods interleaved):",
        "",
        "| method | setting | recall | p50 ms | p99 ms | build s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['param']} | {row[f'recall_top{args.k}']:.4f} | {row['single_p50_ms']:.3f} | "
            f"{row['single_p99_ms']:.3f} | {row['build_s']:.1f} |"
        )
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    artifact = load_artifact(args.run)
    dataset = open_dataset(args.data)
    if dataset.vocab.item_ids != artifact.vocab.item_ids:
        raise SystemExit(f"{args.data} does not have the item vocabulary of the run {args.run}")
    max_len = getattr(getattr(artifact.model, "config", None), "max_len", 50)
    load_before = os.getloadavg()
    report = evaluate_candidates(
        artifact.model.eval(),
        dataset.test,
        dataset.catalog,
        budgets=args.budgets.split(","),
        k=args.k,
        batch_size=args.batch_size,
        max_len=max_len,
        single_session_sample=args.single_sample,
        show_progress=True,
    )
    ann = ann_comparison(artifact.model, dataset, args.budgets.split(","), max_len, args) if args.ann_sample else []
    report.extra.update(
        {
            "ann_comparison": ann,
            "dataset": dataset.name,
            "split": "test",
            "run": str(args.run),
            "command": " ".join(["python", "benchmarks/candidates.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "threads": args.threads,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "targets_at_4pct": check_targets(report),
            **provenance(),
        }
    )
    stem = args.out or RESULTS / f"candidates-{dataset.name}-{dt.date.today().isoformat()}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    plot(report, stem.with_suffix(".png"))
    table = format_candidate_table(report)
    targets = "\n".join(
        f"- {name} at 4%: {100 * t['value']:.2f}% (target {100 * t['target']:.0f}%): {'met' if t['met'] else 'NOT met'}"
        for name, t in report.extra["targets_at_4pct"].items()
    )
    markdown = (
        f"# Category candidates vs full ranking: {dataset.name} test split ({report.extra['date']})\n\n"
        f"Command: `{report.extra['command']}`  \nCommit: {report.extra['commit']}; machine: "
        f"{report.extra['machine']}; threads: {args.threads}; load average before/after: {list(load_before)} / "
        f"{report.extra['load_after']} (a shared machine: latencies are pessimistic).\n\n"
        f"```\n{table}\n```\n\nTargets (issue 4, relative to full ranking):\n\n{targets}\n\n"
        + ann_markdown(ann, args)
        + f"![budgets]({stem.with_suffix('.png').name})\n"
    )
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
