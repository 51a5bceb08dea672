"""Category candidates of a trained HierSRec run against its full ranking, on a dataset's test split.

For each budget (1, 2, 4, 8, 16 and 100% of the catalogue by default, each with categories taken in both
orders: by probability per item, the default, and by probability, the paper's): candidate recall (the target
is among the candidates), the overlap with the full ranking's top 20, HR@20 and MRR@20 with candidates only,
each relative to full ranking, the mean share of the catalogue ranked, and the search latency (batched, and one
session at a time). The budgets are fixed in advance and the two orders are first compared on the run's
validation split (the train tail it was early-stopped on): nothing is chosen on the test split.

Targets (issue 4) at the 4% budget: candidate recall >= 95%, HR@20 >= 98% and MRR@20 >= 99% of full ranking.

Usage:
    python benchmarks/candidates.py --run runs/hiersrec-dgn --data ../shared/data/diginetica/srgnn_cat
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from hiersrec.artifact import check_compatible, load_artifact
from hiersrec.data.ingest import open_dataset
from hiersrec.retrieval.category import CATEGORIES_ONLY, CandidateBudget
from hiersrec.retrieval.evaluate import DEFAULT_BUDGETS, CandidateReport, evaluate_candidates, format_candidate_table
from hiersrec.train.run import TrainingData
from reporting import resolve_stem, results_header, sibling, write_figure, write_results

TARGETS = {"candidate_recall": 0.95, "hr": 0.98, "mrr": 0.99}  # at the 4% budget (issue 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--data", required=True, help="prepared dataset or SR-GNN folder the run was trained on")
    parser.add_argument("--budgets", default=",".join(DEFAULT_BUDGETS), help="comma-separated budgets")
    parser.add_argument(
        "--orders",
        default="density,probability",
        help="category orders of the fraction budgets, compared side by side (the FAISS comparison takes --budgets "
        "as written, i.e. in the default order)",
    )
    parser.add_argument(
        "--session-items",
        choices=("with", "without", "both"),
        default="both",
        help="budgets with the session's own items among the candidates (the default of the library), without "
        "them (':categories-only', the paper's set), or both side by side",
    )
    parser.add_argument(
        "--valid", action=argparse.BooleanOptionalAction, default=True, help="compare the orders on validation first"
    )
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
    parser.add_argument(
        "--out", type=Path, default=None, help="results stem (default results/candidates-<dataset>-<date>)"
    )
    return parser.parse_args(argv)


def check_targets(report: CandidateReport, label: str = "4%") -> dict[str, dict[str, float | bool]]:
    """The issue's targets at the 4% budget (``label``), each with its measured value and whether it is met."""
    row = next((r for r in report.budgets if r.budget == label), None)
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


def budget_specs(budgets: str, orders: str, session_items: str = "with") -> list[str]:
    """Every fraction budget in every order (``"4%"``, ``"4%:probability"``), count budgets and 100% once.

    ``session_items`` ``"without"`` or ``"both"`` adds (or keeps only) each budget's ``":categories-only"`` form.
    """
    suffixes = {"with": [""], "without": [CATEGORIES_ONLY], "both": ["", CATEGORIES_ONLY]}[session_items]
    specs: dict[str, str] = {}  # label -> spec, in first-seen order
    for suffix in suffixes:
        for order in orders.split(","):
            for budget in budgets.split(","):
                parsed = CandidateBudget.parse(budget)
                spec = budget if parsed.fraction is None or parsed.is_exhaustive else f"{budget}:{order}"
                spec += "" if parsed.is_exhaustive else suffix
                specs.setdefault(CandidateBudget.parse(spec).label, spec)
    return list(specs.values())


def plot(report: CandidateReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for order, style in [("density", "o-"), ("probability", "s--")]:
        rows = [r for r in report.budgets if _order_of(r.budget) in (order, "both")]
        fractions = [100 * r.mean_candidate_fraction for r in rows]
        for color, (label, values) in enumerate(
            [
                ("candidate recall", [r.candidate_recall for r in rows]),
                (f"top-{report.k} overlap", [r.top_overlap for r in rows]),
                (f"HR@{report.k} / full", [r.relative[f"hr@{report.k}"] for r in rows]),
                (f"MRR@{report.k} / full", [r.relative[f"mrr@{report.k}"] for r in rows]),
            ]
        ):
            left.plot(fractions, values, style, color=f"C{color}", label=f"{label} ({order})")
    left.set_xscale("log")
    left.set_xlabel("mean share of the catalogue ranked (%, log scale)")
    left.set_ylabel("share of full ranking")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    rows = [r for r in report.budgets if _order_of(r.budget) in ("density", "both")]
    fractions = [100 * r.mean_candidate_fraction for r in rows]
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
    write_figure(fig, path)


def _order_of(label: str) -> str | None:
    # Labels of `CandidateBudget.label`: "4%" (density), "4%:probability", "100%" (both), "5 categories"; the plot
    # shows the library's default candidates (with the session's items), not the ":categories-only" rows.
    if label.endswith(CATEGORIES_ONLY):
        return None
    if label == "100%":
        return "both"
    if label.endswith("%"):
        return "density"
    return label.partition(":")[2] or None


def ann_comparison(model, dataset, budgets: list[str], max_len: int, args) -> list[dict]:
    """Candidates vs FAISS IVF and HNSW on the trained model's own item embeddings and session queries.

    On the first ``--ann-sample`` test cases: recall of the exact top k and one-session latency of each
    method, timed interleaved (`benchmarks/scale.py`'s harness). Nothing here is tuned on these cases: the
    sweeps are the fixed lists of the command line.
    """
    from argparse import Namespace

    from hiersrec.data.batching import prefix_batch
    from hiersrec.retrieval.category import select_categories
    from hiersrec.retrieval.index import CategoryIndex, ExactIndex
    from scale import faiss_methods, recall, time_methods  # the same harness as the scale benchmark

    # The ANN indexes search inner products: the comparison is for feeds without per-category score terms.
    targets = dataset.test.target_positions()[: args.ann_sample]
    with torch.inference_mode():
        query = model.query(prefix_batch(dataset.test, dataset.catalog, targets, max_len))
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
    timings = time_methods(methods, query.vectors, query.category_logits, len(targets), 0, 0)
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
    check_compatible(artifact, dataset, args.run)
    max_len = artifact.max_len or 50
    specs = budget_specs(args.budgets, args.orders, args.session_items)
    load_before = os.getloadavg()
    options = {"k": args.k, "batch_size": args.batch_size, "max_len": max_len, "show_progress": True}
    valid_report = None
    if args.valid:
        # The validation split the run was early-stopped on (recorded in its meta.json), never the test split.
        split = TrainingData.from_prepared(dataset, artifact.config.data.valid_fraction)
        recorded = (artifact.meta.get("validation_split") or {}).get("sessions_sha256")
        if recorded != split.validation["sessions_sha256"]:
            raise SystemExit(f"the validation split of {args.data} is not the one {args.run} was trained with")
        valid = split.valid
        valid_report = evaluate_candidates(
            artifact.model.eval(), valid, dataset.catalog, budgets=specs, timed_cases=0, **options
        )
    report = evaluate_candidates(
        artifact.model.eval(),
        dataset.test,
        dataset.catalog,
        budgets=specs,
        single_session_sample=args.single_sample,
        **options,
    )
    ann = ann_comparison(artifact.model, dataset, args.budgets.split(","), max_len, args) if args.ann_sample else []
    report.extra.update(
        {
            "ann_comparison": ann,
            "valid": valid_report.to_dict() if valid_report else None,
            "dataset": dataset.name,
            "split": "test",
            "run": str(args.run),
            "threads": args.threads,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "targets_at_4pct": check_targets(report),
            "targets_at_4pct_paper_order": check_targets(report, "4%:probability"),
        }
    )
    header = results_header(__file__, argv)
    stem = resolve_stem(args.out, "candidates", dataset.name)
    plot(report, sibling(stem, ".png"))
    valid_section = (
        f"Validation split ({valid_report.n_cases} cases of the train tail the run was early-stopped on; "
        f"how the two orders compare before any test figure is read):\n\n```\n{format_candidate_table(valid_report)}"
        "\n```\n\n"
        if valid_report
        else ""
    )
    markdown = (
        f"Threads: {args.threads}; load average before/after: {list(load_before)} / "
        f"{report.extra['load_after']} (a shared machine: latencies are pessimistic).\n\n"
        "Budgets: `4%` takes categories by probability per item (the default), `4%:probability` most probable "
        "first (the paper's order).\n\n"
        + valid_section
        + f"Test split:\n\n```\n{format_candidate_table(report)}\n```\n\n"
        f"Targets (issue 4, relative to full ranking), default order:\n\n"
        f"{_targets_markdown(report.extra['targets_at_4pct'])}\n\n"
        f"The paper's order:\n\n{_targets_markdown(report.extra['targets_at_4pct_paper_order'])}\n\n"
        + ann_markdown(ann, args)
        + f"![budgets]({sibling(stem, '.png').name})\n"
    )
    title = f"Category candidates vs full ranking: {dataset.name} test split"
    write_results(stem, header, report.to_dict(), title, markdown)
    print(markdown)


def _targets_markdown(targets: dict[str, dict[str, float | bool]]) -> str:
    return "\n".join(
        f"- {name} at 4%: {100 * t['value']:.2f}% (target {100 * t['target']:.0f}%): {'met' if t['met'] else 'NOT met'}"
        for name, t in targets.items()
    )


if __name__ == "__main__":
    main()
