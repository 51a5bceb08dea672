"""Merge the per-run JSON lines of several `hiersrec_accuracy.py` invocations on one dataset into one summary.

A GPU session may be cut at its time limit: its finished runs are in ``<stem>.jsonl`` even when the summary
was never written. This script summarises all runs of a dataset (mean +- std over seeds per variant) into
``<out>.json`` and ``<out>.md``. Their header describes this merge (its command, commit and machine); the
commands, commit, machine and date that produced the runs, given on the command line because the runs come
from another machine, are recorded beside it (``runs_commands``, ``runs_commit``, ...).

    python benchmarks/merge_runs.py --dataset diginetica --out benchmarks/results/hiersrec_ablation-diginetica \\
        --runs a.jsonl --runs b.jsonl --command "..." --command "..." --commit aa15d0a --machine "..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hiersrec_accuracy import markdown, summarise, title
from reporting import resolve_stem, results_header, write_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--runs", type=Path, action="append", required=True, help="a .jsonl of runs; repeatable")
    parser.add_argument("--command", action="append", default=[], help="a command that produced runs; repeatable")
    parser.add_argument("--commit", required=True, help="commit the runs were made at")
    parser.add_argument("--machine", required=True, help="machine the runs were made on")
    parser.add_argument("--date", required=True, help="date of the runs")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, help="results stem (default: benchmarks/results/hiersrec_ablation-...)")
    args = parser.parse_args(argv)
    records = [json.loads(line) for path in args.runs for line in path.read_text().splitlines() if line.strip()]
    settings = {
        "dataset": args.dataset,
        "runs_commands": " ; ".join(args.command),
        "runs_commit": args.commit,
        "runs_machine": args.machine,
        "runs_date": args.date,
        "protocol": "full ranking, pessimistic ties; checkpoint chosen by validation MRR@k, test evaluated once",
        "note": args.note,
    }
    summary = summarise(records)
    body = markdown(summary, settings)
    stem = resolve_stem(args.out, "hiersrec_ablation", args.dataset)
    write_results(
        stem, results_header(__file__, argv), {**settings, "summary": summary, "runs": records}, title(settings), body
    )
    print(body)


if __name__ == "__main__":
    main()
