"""Merge the per-run JSON lines of several `hiersrec_accuracy.py` invocations on one dataset into one summary.

A GPU session may be cut at its time limit: its finished runs are in ``<stem>.jsonl`` even when the summary
was never written. This script summarises all runs of a dataset (mean +- std over seeds per variant) into
``<out>.json`` and ``<out>.md``, with the commands that produced them.

    python benchmarks/merge_runs.py --dataset diginetica --out benchmarks/results/hiersrec_ablation-diginetica \\
        --runs a.jsonl --runs b.jsonl --command "..." --command "..." --commit aa15d0a --machine "..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hiersrec_accuracy import markdown, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--runs", type=Path, action="append", required=True, help="a .jsonl of runs; repeatable")
    parser.add_argument("--command", action="append", default=[], help="a command that produced runs; repeatable")
    parser.add_argument("--commit", required=True)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = [json.loads(line) for path in args.runs for line in path.read_text().splitlines() if line.strip()]
    header = {
        "dataset": args.dataset,
        "commands": " ; ".join(args.command),
        "commit": args.commit,
        "machine": args.machine,
        "date": args.date,
        "protocol": "full ranking, pessimistic ties; checkpoint chosen by validation MRR@k, test evaluated once",
        "note": args.note,
    }
    summary = summarise(records)
    args.out.with_suffix(".json").write_text(json.dumps({**header, "summary": summary, "runs": records}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(summary, header))
    print(markdown(summary, header))


if __name__ == "__main__":
    main()
