"""Pool the per-seed test figures of several `fusion.py` results files into one table (mean ± std over seeds).

Seeds trained in different sessions land in different `fusion.py` results files (its ranks cache lives in a
work folder that does not outlive the machine). Every seed's figures there were read once, each against the
same tuned baseline; this script only gathers them: it checks the files agree (dataset, final partner,
baseline and its parameters, number of test cases), refuses a seed given twice, and writes each seed's row
(with the file and commit it came from), the mean ± std over the seeds of the neural runs, the fused runs and
their refits, and each seed's paired tests against the baseline.

    python benchmarks/fusion_seeds.py --label diginetica-gated \\
        benchmarks/results/fusion-diginetica-gated-2026-12-02-4.json \\
        benchmarks/results/fusion-diginetica-gated-s2-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from reporting import interval_cells, resolve_stem, results_header, write_results

STAGES = ("neural", "fused", "refit")
AGREEING_KEYS = ("dataset", "final_partner", "n_test_cases")
COMPARISONS = ("neural_minus_baseline", "fused_minus_baseline", "refit_minus_baseline")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="fusion.py results .json files")
    parser.add_argument("--label", default=None, help="results file label (default: the dataset name)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def pool(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The seeds of every document in one payload; raises SystemExit when the documents do not agree.

    Args:
        documents: fusion.py results payloads by the path they were read from.
    """
    first_path, first = next(iter(documents.items()))
    seeds: list[dict[str, Any]] = []
    for path, document in documents.items():
        for key in AGREEING_KEYS:
            if document[key] != first[key]:
                raise SystemExit(f"{path}: {key} is {document[key]!r}, {first_path} has {first[key]!r}")
        if _baseline_setting(document) != _baseline_setting(first):
            raise SystemExit(f"{path}: baseline {document['baseline']} differs from {first_path}'s")
        for row, comparison in zip(document["test"], document["comparisons"], strict=True):
            seeds.append({
                "run": row["run"],
                "source": path,
                "commit": document["header"]["commit"],
                **{stage: row[stage] for stage in STAGES if stage in row},
                "rule": row["rule"],
                "weight": row["weight"],
                "comparisons": {key: comparison[key] for key in COMPARISONS if key in comparison},
            })  # fmt: skip
    runs = [seed["run"] for seed in seeds]
    if len(set(runs)) != len(runs):
        raise SystemExit(f"a run appears twice: {sorted(runs)}")
    pooled = {}
    for stage in STAGES:
        rows = [seed[stage] for seed in seeds if stage in seed]
        if rows:
            pooled[stage] = {metric: _mean_std([row[metric] for row in rows]) for metric in rows[0]}
    return {
        **{key: first[key] for key in AGREEING_KEYS},
        "baseline": first["baseline"],
        "seeds": seeds,
        "pooled": pooled,
    }


def _baseline_setting(document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return document["baseline"]["name"], document["baseline"]["params"]


def _mean_std(values: list[float]) -> dict[str, float | int]:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def render(payload: dict[str, Any]) -> str:
    """The results page body: one row a seed, the pooled means, then the paired tests."""
    base = payload["baseline"]
    lines = [
        f"Test, {payload['n_test_cases']} cases (every prefix, full ranking, pessimistic ties); partner "
        f"{payload['final_partner']}; baseline {base['name']} tuned ({base['params']}): "
        f"HR@20 {100 * base['test']['hr@20']:.2f}, MRR@20 {100 * base['test']['mrr@20']:.2f}.",
        "",
        "| run | from | commit | rule, weight | alone HR@20 / MRR@20 | fused | fused, refitted |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for seed in payload["seeds"]:
        cells = [f"{100 * seed[s]['hr@20']:.2f} / {100 * seed[s]['mrr@20']:.2f}" if s in seed else "" for s in STAGES]
        lines.append(f"| {seed['run']} | {Path(seed['source']).name} | {seed['commit']} | {seed['rule']} "
                     f"{seed['weight']:g} | {' | '.join(cells)} |")  # fmt: skip
    lines += ["", "| stage | seeds | HR@20 | MRR@20 |", "|---|---:|---:|---:|"]
    for stage, metrics in payload["pooled"].items():
        hr, mrr = metrics["hr@20"], metrics["mrr@20"]
        lines.append(f"| {stage} | {hr['n']} | {100 * hr['mean']:.2f} ± {100 * hr['std']:.2f} | "
                     f"{100 * mrr['mean']:.2f} ± {100 * mrr['std']:.2f} |")  # fmt: skip
    lines += [
        "",
        f"Paired tests per seed against {base['name']} (A - B over the test cases; 99% bootstrap intervals; "
        "Wilcoxon on reciprocal rank), as each source file computed them:",
        "",
        "| run | comparison | MRR@20 diff (99% CI) | HR@20 diff (99% CI) | Wilcoxon p |",
        "|---|---|---:|---:|---:|",
    ]
    for seed in payload["seeds"]:
        for key, c in seed["comparisons"].items():
            lines.append(f"| {seed['run']} | {key.replace('_', ' ')} | {interval_cells(c)} | {c['wilcoxon_p']:.2g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    documents = {str(path): json.loads(path.read_text()) for path in args.results}
    payload = pool(documents)
    body = render(payload)
    stem = resolve_stem(args.out, "fusion_seeds", args.label or payload["dataset"])
    write_results(stem, header, payload, f"HierSRec fused with {payload['final_partner']}: seeds pooled", body)
    print(body)


if __name__ == "__main__":
    main()
