"""Does HierSRec's category head beat "repeat the last category", overall and where the category changes? (issue 12)

For a trained run, next-category accuracy@1 and @5 of the run's category head and of the ``last_category``
baseline, on the validation tail and on test (every prefix), split into the cases whose next click stays in
the last click's category and those where it switches (11.5% of diginetica prefixes). "Repeat the last
category" is right on every stay case and wrong on every switch case by construction, so the question is
how much the head loses on stays for what it gains on switches.

    python benchmarks/category_switch.py --run runs/dgn-full --data prepared/diginetica
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.artifact import check_compatible, load_artifact
from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.ingest import open_dataset
from hiersrec.eval.metrics import category_hits_at
from hiersrec.models import make_model
from hiersrec.train.run import TrainingData
from reporting import resolve_stem, results_header, write_results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


@torch.inference_mode()
def accuracy_by_switch(models: dict[str, Any], sessions, catalog, max_len: int) -> dict[str, dict[str, float]]:
    """Per model: cat_acc@1/@5 over all cases, the stay cases and the switch cases; plus the case counts."""
    hits = {name: {f"{part}@{k}": [] for part in ("all",) for k in (1, 5)} for name in models}
    switch_flags = []
    for batch in iter_prefix_batches(sessions, catalog, sessions.target_positions(), 1024, max_len):
        switch_flags.append((batch.categories[:, -1] != batch.target_categories).numpy())
        for name, model in models.items():
            scores = model.score_categories(batch).float()
            for k in (1, 5):
                hits[name][f"all@{k}"].append(category_hits_at(scores, batch.target_categories, k).numpy())
    switch = np.concatenate(switch_flags)
    out: dict[str, dict[str, float]] = {"cases": {"all": int(switch.size), "switch": int(switch.sum()),
                                                  "switch_share": float(switch.mean())}}  # fmt: skip
    for name in models:
        row = {}
        for k in (1, 5):
            values = np.concatenate(hits[name][f"all@{k}"])
            row[f"cat_acc@{k}"] = float(values.mean())
            row[f"cat_acc@{k} stay"] = float(values[~switch].mean())
            row[f"cat_acc@{k} switch"] = float(values[switch].mean())
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    dataset = open_dataset(args.data)
    artifact = load_artifact(args.run)
    check_compatible(artifact, dataset, args.run)
    data = TrainingData.from_prepared(dataset, artifact.config.data.valid_fraction)
    results = {}
    for split, sessions, fit_on in (("validation", data.valid, data.train), ("test", dataset.test, dataset.train)):
        baseline = make_model("last_category").fit(fit_on, dataset.catalog)
        models = {"hiersrec category head": artifact.model, "repeat the last category": baseline}
        results[split] = accuracy_by_switch(models, sessions, dataset.catalog, artifact.max_len)
    lines = []
    for split, table in results.items():
        cases = table["cases"]
        lines += [f"## {split}: {cases['all']} cases, {cases['switch']} ({100 * cases['switch_share']:.1f}%) switch "
                  "category", "", "| predictor | acc@1 | acc@1 stay | acc@1 switch | acc@5 | acc@5 switch |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, row in table.items():
            if name == "cases":
                continue
            lines.append(f"| {name} | {100 * row['cat_acc@1']:.2f} | {100 * row['cat_acc@1 stay']:.2f} | "
                         f"{100 * row['cat_acc@1 switch']:.2f} | {100 * row['cat_acc@5']:.2f} | "
                         f"{100 * row['cat_acc@5 switch']:.2f} |")  # fmt: skip
        lines.append("")
    body = "\n".join(lines)
    stem = resolve_stem(args.out, "category_switch", f"{dataset.name}-{args.run.name}")
    write_results(stem, header, {"run": str(args.run), "results": results}, "Next category: stay or switch", body)
    print(body)


if __name__ == "__main__":
    main()
