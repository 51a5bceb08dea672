"""Does HierSRec's category head beat "repeat the last category", overall and where the category changes? (issue 12)

For a trained run, next-category accuracy@1 and @5 of the run's category head and of the ``last_category``
baseline, on the validation tail and on test (every prefix), split into the cases whose next click stays in
the last click's category and those where it switches (11.5% of diginetica prefixes). "Repeat the last
category" is right on every stay case and wrong on every switch case by construction, so the question is
how much the head loses on stays for what it gains on switches.

Then the head's switch calls by confidence: where its top category is not the last click's, the margin
between the two logits. Predicting "stay" unless the margin exceeds a threshold (a stay bonus on the last
category's logit) is the best use of the head at acc@1 when its confident switch calls are right more often
than wrong; the threshold is chosen on validation, read once on test, and compared with the rule by an exact
sign test over the cases where the two disagree.

    python benchmarks/category_switch.py --run runs/dgn-full --data prepared/diginetica
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

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
def accuracy_by_switch(
    models: dict[str, Any], sessions, catalog, max_len: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per model: cat_acc@1/@5 over all cases, the stay cases and the switch cases; plus the case counts.

    Also returns, per case, what `stay_margin` needs of the first model (the head): whether its top category
    is right, whether the last click's category is right (the stay cases), and the logit margin of the top
    category over the last click's (0 where they are the same).
    """
    hits = {name: {f"{part}@{k}": [] for part in ("all",) for k in (1, 5)} for name in models}
    calls = {"head_right": [], "rule_right": [], "margin": []}
    head = next(iter(models))
    for batch in iter_prefix_batches(sessions, catalog, sessions.target_positions(), 1024, max_len):
        last = batch.categories[:, -1]
        calls["rule_right"].append((last == batch.target_categories).numpy())
        for name, model in models.items():
            scores = model.score_categories(batch).float()
            for k in (1, 5):
                hits[name][f"all@{k}"].append(category_hits_at(scores, batch.target_categories, k).numpy())
            if name == head:
                top = scores.argmax(dim=1)
                calls["head_right"].append((top == batch.target_categories).numpy())
                margin = scores.gather(1, top[:, None]) - scores.gather(1, last[:, None])
                calls["margin"].append(margin.squeeze(1).clamp(min=0).numpy())
    head_calls = {key: np.concatenate(values) for key, values in calls.items()}
    switch = ~head_calls["rule_right"]
    out: dict[str, Any] = {"cases": {"all": int(switch.size), "switch": int(switch.sum()),
                                     "switch_share": float(switch.mean())}}  # fmt: skip
    for name in models:
        row = {}
        for k in (1, 5):
            values = np.concatenate(hits[name][f"all@{k}"])
            row[f"cat_acc@{k}"] = float(values.mean())
            row[f"cat_acc@{k} stay"] = float(values[~switch].mean())
            row[f"cat_acc@{k} switch"] = float(values[switch].mean())
        out[name] = row
    return out, head_calls


def stay_margin(calls: dict[str, np.ndarray]) -> dict[str, Any]:
    """The stay threshold that maximises acc@1 on these cases, and how the head's switch calls fare by margin.

    A case is called "switch" when the head's margin exceeds the threshold, else "stay" (the rule's answer).
    Returns the best threshold (``inf``: never switch, the rule itself), the acc@1 gain over the rule it gives,
    and the switch calls' precision in margin bands (most confident first).
    """
    margin, gain = calls["margin"], calls["head_right"].astype(int) - calls["rule_right"].astype(int)
    order = np.argsort(-margin, kind="stable")
    order = order[margin[order] > 0]
    cumulative = np.concatenate([[0], np.cumsum(gain[order])])
    best = int(np.argmax(cumulative))  # 0 calls when no prefix gains: the rule
    if best == 0:
        threshold = float("inf")
    else:  # halfway between the last call kept and the next one (0: every call kept)
        below = float(margin[order[best]]) if best < order.size else 0.0
        threshold = (float(margin[order[best - 1]]) + below) / 2
    bands = []
    for low, high in ((8.0, np.inf), (4.0, 8.0), (2.0, 4.0), (1.0, 2.0), (0.0, 1.0)):
        inside = order[(margin[order] > low) & (margin[order] <= high)]
        bands.append({"margin": [low, high], "calls": int(inside.size),
                      "head_right": int(calls["head_right"][inside].sum()),
                      "rule_right": int(calls["rule_right"][inside].sum())})  # fmt: skip
    return {"threshold": threshold, "calls": best, "gain_cases": int(cumulative[best]), "bands": bands}


def apply_threshold(calls: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """acc@1 of "switch when the head's margin exceeds ``threshold``" against the rule, with an exact sign test."""
    switch = calls["margin"] > threshold
    right = np.where(switch, calls["head_right"], calls["rule_right"])
    wins = int((right & ~calls["rule_right"]).sum())
    losses = int((~right & calls["rule_right"]).sum())
    p = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    return {"cat_acc@1": float(right.mean()), "rule_cat_acc@1": float(calls["rule_right"].mean()),
            "switch_calls": int(switch.sum()), "wins": wins, "losses": losses, "sign_test_p": p}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    dataset = open_dataset(args.data)
    artifact = load_artifact(args.run)
    check_compatible(artifact, dataset, args.run)
    data = TrainingData.from_prepared(dataset, artifact.config.data.valid_fraction)
    results, calls = {}, {}
    for split, sessions, fit_on in (("validation", data.valid, data.train), ("test", dataset.test, dataset.train)):
        baseline = make_model("last_category").fit(fit_on, dataset.catalog)
        models = {"hiersrec category head": artifact.model, "repeat the last category": baseline}
        results[split], calls[split] = accuracy_by_switch(models, sessions, dataset.catalog, artifact.max_len)
    margins = {split: stay_margin(calls[split]) for split in results}
    threshold = margins["validation"]["threshold"]  # chosen on validation; test only reads it
    thresholded = {split: apply_threshold(calls[split], threshold) for split in results}
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
    lines += margin_section(margins, thresholded)
    body = "\n".join(lines)
    stem = resolve_stem(args.out, "category_switch", f"{dataset.name}-{args.run.name}")
    payload = {"run": str(args.run), "results": results, "stay_margin": margins, "thresholded": thresholded}
    write_results(stem, header, payload, "Next category: stay or switch", body)
    print(body)


def margin_section(margins: dict[str, Any], thresholded: dict[str, Any]) -> list[str]:
    """Markdown: the head's switch calls by margin band, and the threshold validation chose, on both splits."""
    lines = ["## The head's switch calls by confidence", "",
             "Cases where the head's top category is not the last click's, by the logit margin between the two.", "",
             "| split | margin | calls | head right | last category right |", "|---|---|---:|---:|---:|"]  # fmt: skip
    for split, margin in margins.items():
        for band in margin["bands"]:
            low, high = band["margin"]
            lines.append(f"| {split} | ({low:g}, {high:g}] | {band['calls']} | {band['head_right']} | "
                         f"{band['rule_right']} |")  # fmt: skip
    chosen = margins["validation"]
    where = "never switch: the rule" if chosen["calls"] == 0 else f"switch above margin {chosen['threshold']:.3f}"
    lines += ["", f"Threshold chosen on validation: {where} ({chosen['calls']} validation calls, "
              f"{chosen['gain_cases']:+d} cases against the rule).", "",
              "| split | acc@1, head with the threshold | acc@1, last category | switch calls | wins | losses | "
              "sign test p |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for split, row in thresholded.items():
        accuracy = f"{100 * row['cat_acc@1']:.2f} | {100 * row['rule_cat_acc@1']:.2f}"
        lines.append(f"| {split} | {accuracy} | {row['switch_calls']} | {row['wins']} | {row['losses']} | "
                     f"{row['sign_test_p']:.2g} |")  # fmt: skip
    return [*lines, ""]


if __name__ == "__main__":
    main()
