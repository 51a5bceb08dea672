"""Regenerate the README's results tables from the committed results files.

Each generated table sits in README.md between two marker comments,

    <!-- results-table: NAME begin -->
    ...
    <!-- results-table: NAME end -->

and only what lies between them is rewritten; the prose around the tables is edited by hand. The results
files each table is made from are named in ``TABLES`` below: after committing a new run, point its table at
the new file and run this script.

    python benchmarks/readme_tables.py           # rewrite the tables in README.md
    python benchmarks/readme_tables.py --check   # exit 1, showing the difference, when README.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"

# The results files each table reads, relative to the results folder.
BASELINES = {"diginetica": "baselines-diginetica.json", "yoochoose1_64": "baselines-yoochoose1_64.json"}
ABLATIONS = {
    "diginetica": "hiersrec_ablation-diginetica.json",
    "yoochoose1_64": "hiersrec_ablation-yoochoose1_64.json",
}
TEXT_ABLATION = "hiersrec_text-amazon-scientific.json"
COMPARISONS = {  # dataset -> its compare.py run
    "diginetica": "compare-diginetica-2026-12-01-2.json",
    "yoochoose1_64": "compare-yoochoose1_64-2026-12-01.json",
}

BASELINE_NAMES = {  # results name -> README name, in table order
    "pop": "POP",
    "spop": "S-POP",
    "markov": "Markov",
    "sr": "SR",
    "itemknn": "item-kNN",
    "sknn": "SKNN",
    "vsknn": "V-SKNN",
    "stan": "STAN",
    "vstan": "VSTAN",
    "slist": "SLIST",
}
HIERSREC_NAMES = {
    "single": "HierSRec single-task (SASRec-like)",
    "flat": "HierSRec flat MTL",
    "hierarchical": "HierSRec hierarchical",
}
NEURAL_NAMES = {
    "stamp": "STAMP",
    "narm": "NARM",
    "gru4rec": "GRU4Rec",
    "sasrec": "SASRec",
    "core": "CORE-trm",
    "srgnn": "SR-GNN",
    "hiersrec": "HierSRec preset (fused with VSTAN, refitted)",
}
TEXT_NAMES = {"notext": "none", "hashed": "hashed title tokens", "minilm": "frozen MiniLM embeddings"}
SELECTION_METRIC = "mrr@20"  # every model was tuned or early-stopped on it

MARKER = re.compile(
    r"^<!-- results-table: (?P<name>[\w-]+) begin -->\n(?P<body>.*?)^<!-- results-table: (?P=name) end -->$",
    re.MULTILINE | re.DOTALL,
)


def load(results: Path, name: str) -> dict[str, Any]:
    return json.loads((results / name).read_text())


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def mean_std(metric: dict[str, float]) -> str:
    return f"{100 * metric['mean']:.2f} ± {100 * metric['std']:.2f}"


def bold(text: str) -> str:
    return f"**{text}**"


Row = tuple[str, list[tuple[float, str]]]  # (model name, [(value, value as shown), ...])


def column_best(rows: list[Row]) -> list[float]:
    """The highest value of each column."""
    return [max(cells[column][0] for _, cells in rows) for column in range(len(rows[0][1]))]


def emphasise_best(rows: list[Row]) -> list[list[str]]:
    """Cells as text, the best value of each column in bold (ties: all of them)."""
    best = column_best(rows)
    return [
        [name] + [bold(text) if value == best[column] else text for column, (value, text) in enumerate(cells)]
        for name, cells in rows
    ]


def markdown_table(head: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def seeds_label(ablations: dict[str, dict[str, Any]], variant: str) -> str:
    counts = dict.fromkeys(len(ablation["summary"][variant]["seeds"]) for ablation in ablations.values())
    return "/".join(str(count) for count in counts) + " seeds"


def accuracy_table(results: Path) -> str:
    """HR@20 / MRR@20 of the tuned baselines and of the HierSRec variants on diginetica and yoochoose1_64."""
    baselines = {dataset: load(results, name) for dataset, name in BASELINES.items()}
    ablations = {dataset: load(results, name) for dataset, name in ABLATIONS.items()}
    metrics = ("hr@20", SELECTION_METRIC)
    rows: list[Row] = []
    for model, label in BASELINE_NAMES.items():
        found = [[r for r in record["results"] if r["model"] == model] for record in baselines.values()]
        if not any(found):  # registered after these results were made (SLIST): no row until they include it
            continue
        cells = []
        for matches in found:  # a model in some results files only fails here (IndexError)
            row = matches[0]
            cells += [(row["metrics"][m], percent(row["metrics"][m])) for m in metrics]
        rows.append((label, cells))
    for variant, label in HIERSREC_NAMES.items():
        cells = []
        for ablation in ablations.values():
            test = ablation["summary"][variant]["test"]
            cells += [(test[m]["mean"], mean_std(test[m])) for m in metrics]
        rows.append((f"{label}, {seeds_label(ablations, variant)}", cells))
    table = emphasise_best(rows)
    # A model's name is bold where it is the best of all on a dataset by the metric every model was selected by.
    best = column_best(rows)
    selection_columns = range(metrics.index(SELECTION_METRIC), len(best), len(metrics))
    for row, (_, cells) in zip(table, rows, strict=True):
        if any(cells[column][0] == best[column] for column in selection_columns):
            row[0] = _bold_name(row[0])
    head = ["model"] + [f"{dataset} {m.upper()}" for dataset in BASELINES for m in metrics]
    return markdown_table(head, ["---"] + ["---:"] * (len(head) - 1), table)


def _bold_name(label: str) -> str:
    # "HierSRec hierarchical, 3 seeds": the name in bold, the seed count not.
    name, comma, rest = label.partition(", ")
    return bold(name) + comma + rest


def next_category_line(results: Path) -> str:
    """Next-category accuracy@1 of "repeat the last category" and of HierSRec's category head."""
    last = []
    for name in BASELINES.values():
        row = next(r for r in load(results, name)["results"] if r["model"] == "last_category")
        last.append(percent(row["metrics"]["cat_acc@1"]))
    head = [
        mean_std(load(results, name)["summary"]["hierarchical"]["test"]["cat_acc@1"]) for name in ABLATIONS.values()
    ]
    datasets = list(BASELINES)
    return (
        f'Next-category accuracy@1: "repeat the last category" {last[0]} ({datasets[0]}) / {last[1]} ({datasets[1]}); '
        f"HierSRec's\ncategory head {head[0]} / {head[1]}."
    )


def text_table(results: Path) -> str:
    """HR@10, NDCG@10, HR@20, MRR@20 on amazon-scientific without item text, with hashed tokens, with MiniLM."""
    summary = load(results, TEXT_ABLATION)["summary"]
    metrics = ("hr@10", "ndcg@10", "hr@20", "mrr@20")
    rows = [
        (label, [(summary[variant]["test"][m]["mean"], mean_std(summary[variant]["test"][m])) for m in metrics])
        for variant, label in TEXT_NAMES.items()
    ]
    head = ["item text", "HR@10", "NDCG@10", "HR@20", "MRR@20"]
    return markdown_table(head, ["---"] + ["---:"] * len(metrics), emphasise_best(rows))


def comparison_table(results: Path, dataset: str) -> str:
    """Every model of ``dataset``'s `compare.py` run, best MRR@20 first, with its paired tests against the best."""
    record = load(results, COMPARISONS[dataset])
    summary, reference = record["summary"], record["reference"]
    names = {**BASELINE_NAMES, **NEURAL_NAMES}
    order = sorted(summary, key=lambda model: -summary[model]["test"][SELECTION_METRIC]["mean"])
    rows = []
    for model in order:
        entry = summary[model]
        test = entry["test"]
        tests = record["paired"].get(model, [])
        verdict = "best" if model == reference else f"{sum(t['worse'] for t in tests)} of {len(tests)}"
        single = len(entry["seeds"]) == 1  # one fit or one seed: no spread to show
        metrics = [
            percent(test[m]["mean"]) if single else mean_std(test[m]) for m in ("hr@20", SELECTION_METRIC, "ndcg@20")
        ]
        costs = [_figure(entry["epoch_seconds"], 1), _figure(entry["peak_train_rss_gib"], 2)]
        lr = "-" if entry.get("lr") is None else f"{entry['lr']:g}"
        rows.append([names.get(model, model), str(len(entry["seeds"])), lr, *metrics, verdict, *costs,
                     _figure(entry["eval_seconds"], 0)])  # fmt: skip
    head = ["model", "runs", "lr", "HR@20", "MRR@20", "NDCG@20", "worse than the best (pairs)", "s/epoch (fit s)",
            "train peak GiB", "eval s"]  # fmt: skip
    return markdown_table(head, ["---", "---:", "---:", "---:", "---:", "---:", "---", "---:", "---:", "---:"], rows)


def _figure(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


TABLES: dict[str, Callable[[Path], str]] = {
    "diginetica-yoochoose": accuracy_table,
    "next-category": next_category_line,
    "amazon-scientific-text": text_table,
    **{f"compare-{dataset}": functools.partial(comparison_table, dataset=dataset) for dataset in COMPARISONS},
}


def regenerate(readme: str, results: Path) -> str:
    """``readme`` with every marked table rebuilt from ``results``; each table in ``TABLES`` must be marked."""
    found: list[str] = []

    def rebuild(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"README marks an unknown table {name!r}; known: {sorted(TABLES)}")
        found.append(name)
        return f"<!-- results-table: {name} begin -->\n{TABLES[name](results)}\n<!-- results-table: {name} end -->"

    updated = MARKER.sub(rebuild, readme)
    missing = sorted(set(TABLES) - set(found))
    if missing:
        raise SystemExit(f"README has no markers for {missing}")
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the README is current")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results files")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    updated = regenerate(current, args.results)
    if args.check:
        if updated == current:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), updated.splitlines(keepends=True), "README.md", "regenerated"
        )
        sys.stderr.write("".join(diff))
        sys.stderr.write("README.md is stale: run python benchmarks/readme_tables.py\n")
        return 1
    if updated != current:
        from hiersrec.files import write_bytes_atomic

        write_bytes_atomic(args.readme, updated.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
