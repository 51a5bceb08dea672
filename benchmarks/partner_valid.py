"""Validation figures of fused runs, partner by partner, pooled over seeds (the fusion step's own trials).

A fused run's ``metrics.json`` holds every (partner, rule, weight) its fusion step tried on the validation
split, beside the neural model's own figures. This script reads them (no model is scored again, and the test
split is never opened) and writes, per label and per partner, the best (rule, weight) of each seed and the
mean ± std over seeds of its validation figures; the row marked "chosen" is what each run shipped.

    python benchmarks/partner_valid.py --label amazon-scientific-text \\
        --run notext=runs/sci-none-s0-text,runs/sci-none-s1-text,runs/sci-none-s2-text \\
        --run hashed=runs/sci-hashed-s0-text,runs/sci-hashed-s1-text,runs/sci-hashed-s2-text
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from reporting import resolve_stem, results_header, write_results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR,DIR", help="fused runs, a seed each")
    parser.add_argument("--label", required=True, help="results file label")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def read_run(run_dir: Path) -> dict[str, Any]:
    """The neural and per-partner best validation figures of one fused run; SystemExit if it is not fused."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fusion = metrics.get("fusion")
    if not fusion or not fusion.get("trials"):
        raise SystemExit(f"{run_dir}: no fusion trials in metrics.json (not a fused run)")
    selected_by = fusion["selected_by"]
    best: dict[str, dict[str, Any]] = {}
    for trial in fusion["trials"]:
        held = best.get(trial["partner"])
        if held is None or trial["metrics"][selected_by] > held["metrics"][selected_by]:
            best[trial["partner"]] = trial
    return {
        "run": str(run_dir),
        "neural": {key: value for key, value in metrics["neural_valid"].items() if not key.startswith("cat_")},
        "partners": best,
        "chosen": fusion["partner"],
        "selected_by": selected_by,
    }


def pooled(values: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample std (ddof 1, as the other results files; 0 for one seed) over seeds of every metric."""
    spread = (lambda column: float(np.std(column, ddof=1))) if len(values) > 1 else (lambda column: 0.0)
    return {key: (float(np.mean([v[key] for v in values])), spread([v[key] for v in values])) for key in values[0]}


def markdown(groups: dict[str, list[dict[str, Any]]]) -> str:
    keys = list(next(iter(groups.values()))[0]["neural"])
    lines = [
        f"| variant | partner | seeds | rule, weight per seed | {' | '.join(keys)} | chosen in |",
        "|---|---|---:|---|" + "---:|" * len(keys) + "---|",
    ]
    for name, runs in groups.items():
        cells = pooled([run["neural"] for run in runs])
        row = " | ".join(f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in cells.values())
        lines.append(f"| {name} | none (neural alone) | {len(runs)} | - | {row} | - |")
        for partner in runs[0]["partners"]:
            trials = [run["partners"][partner] for run in runs]
            cells = pooled([trial["metrics"] for trial in trials])
            row = " | ".join(f"{100 * cells[key][0]:.2f} ± {100 * cells[key][1]:.2f}" for key in keys)
            settings = ", ".join(f"{trial['rule']} {trial['weight']:g}" for trial in trials)
            chosen = sum(run["chosen"] == partner for run in runs)
            lines.append(f"| {name} | {partner} | {len(runs)} | {settings} | {row} | {chosen} of {len(runs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in args.run:
        name, _, dirs = entry.partition("=")
        if not name or not dirs:
            raise SystemExit(f"--run wants NAME=DIR,DIR,..., got {entry!r}")
        groups[name] = [read_run(Path(d)) for d in dirs.split(",")]
        partners = {tuple(run["partners"]) for run in groups[name]}
        if len(partners) != 1:
            raise SystemExit(f"{name}: its runs tried different partners {sorted(partners)}")
    selected_by = {run["selected_by"] for runs in groups.values() for run in runs}
    body = (
        f"Validation only (the fusion step's trials, selected by {', '.join(sorted(selected_by))}); each partner's "
        "row is its best (rule, weight) per seed, mean ± std over seeds; test never read.\n\n" + markdown(groups)
    )
    stem = resolve_stem(args.out, "partner_valid", args.label)
    paths = write_results(stem, header, {"groups": groups}, f"Fusion partners on validation: {args.label}", body)
    print("\n".join(str(path) for path in paths))


if __name__ == "__main__":
    main()
