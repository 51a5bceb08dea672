"""Batch scoring at scale: ``hiersrec recommend RUN --input sessions.parquet --output recs.parquet``.

Writes an input file of ``--sessions`` sessions (one row per session, raw item ids; drawn with replacement from
the test-split prefixes of ``--data``, so their length distribution is the real one), then runs the command as a
user would, in a subprocess, and records its wall time, throughput and peak resident memory
(``os.wait4`` of the child). Several sizes in one call show whether memory stays flat as the input grows.
The output is read back (row count, session order, k items per row) before a size counts as done.

Usage:
    python benchmarks/batch_recommend.py --run runs/hiersrec-dgn --data ../shared/data/diginetica/srgnn_cat \\
        --sessions 100000,1000000,3000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hiersrec.data.ingest import open_dataset
from reporting import resolve_stem, results_header, write_results

WORK = Path(__file__).parent / "work"
WRITE_ROWS = 100_000  # sessions generated and written at a time (bounded memory here too)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--data", required=True, help="dataset whose test prefixes are the sessions")
    parser.add_argument("--sessions", default="100000,1000000", help="input sizes, comma-separated")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--candidate-budget", default=None, help="pass --candidate-budget (e.g. 4%%)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=WORK, help="where the input and output files go")
    parser.add_argument(
        "--out", type=Path, default=None, help="results stem (default results/batch_recommend-<run>-<date>)"
    )
    return parser.parse_args(argv)


def write_sessions(data: str, n_sessions: int, path: Path, seed: int) -> None:
    """``n_sessions`` test prefixes of ``data`` (raw ids), drawn with replacement, as a one-row-per-session file."""
    dataset = open_dataset(data)
    test = dataset.test
    targets = test.target_positions()
    starts = test.session_starts()
    item_ids = np.asarray(dataset.vocab.item_ids, dtype=object)
    rng = np.random.default_rng(seed)
    schema = pa.schema([("session_id", pa.string()), ("items", pa.list_(pa.string()))])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, n_sessions, WRITE_ROWS):
            size = min(WRITE_ROWS, n_sessions - first)
            chosen = rng.choice(targets, size=size)
            sessions = [item_ids[test.items[starts[t] : t]].tolist() for t in chosen]
            ids = [str(first + row) for row in range(size)]
            writer.write_table(pa.Table.from_pydict({"session_id": ids, "items": sessions}, schema=schema))


def run_command(args: argparse.Namespace, input_path: Path, output: Path) -> dict:
    """Run ``hiersrec recommend`` on one input; wall time and the child's peak resident memory."""
    command = [
        sys.executable,
        "-c",
        "from hiersrec.cli import main; main()",
        "recommend",
        str(args.run),
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--k",
        str(args.k),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.candidate_budget:
        command += ["--candidate-budget", args.candidate_budget]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use, peak memory included
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"hiersrec recommend exited with {child.returncode}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss / 2**20}


def check_output(output: Path, n_sessions: int, k: int) -> dict:
    """The output has one row per input session, in input order, with up to ``k`` items each."""
    file = pq.ParquetFile(output)
    if file.metadata.num_rows != n_sessions:
        raise SystemExit(f"{output}: {file.metadata.num_rows} rows for {n_sessions} sessions")
    expected, full = 0, 0
    for batch in file.iter_batches(columns=["session_id", "item_ids"], batch_size=1 << 16):
        ids = batch.column("session_id").to_numpy(zero_copy_only=False).astype(np.int64)
        if not np.array_equal(ids, np.arange(expected, expected + len(ids))):
            raise SystemExit(f"{output}: sessions out of input order near row {expected}")
        lengths = batch.column("item_ids").value_lengths().to_numpy()
        full += int((lengths == k).sum())
        expected += len(ids)
    return {"rows": expected, "rows_with_k_items": full}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = sorted(int(size) for size in args.sessions.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results = []
    for n_sessions in sizes:
        input_path = args.work / f"sessions-{n_sessions}.parquet"
        output = args.work / f"recs-{n_sessions}.parquet"
        if not input_path.is_file():
            write_sessions(args.data, n_sessions, input_path, args.seed)
        measured = run_command(args, input_path, output)
        row = {
            "sessions": n_sessions,
            "input_mib": input_path.stat().st_size / 2**20,
            "output_mib": output.stat().st_size / 2**20,
            **measured,
            "sessions_per_second": n_sessions / measured["seconds"],
            **check_output(output, n_sessions, args.k),
        }
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
        output.unlink()
    header = results_header(__file__, argv)
    payload = {
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "args": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "results": results,
    }
    rows = "\n".join(
        f"| {r['sessions']:,} | {r['input_mib']:.0f} | {r['output_mib']:.0f} | {r['seconds']:.0f} | "
        f"{r['sessions_per_second']:,.0f} | {r['peak_rss_gib']:.2f} | {r['rows_with_k_items']:,} |"
        for r in results
    )
    budget = f", --candidate-budget {args.candidate_budget}" if args.candidate_budget else " (full ranking)"
    markdown = (
        f"Load average before/after: {payload['load_before']} / {payload['load_after']}.\n\n"
        f"Sessions: test-split prefixes of {args.data} drawn with replacement (one row per session, raw ids); "
        f"k = {args.k}, batch size {args.batch_size}{budget}. Peak RSS is the command's whole process "
        "(model, torch, reader and writer; `wait4` of that process); the output is read back and checked "
        "(rows, order, k items).\n\n"
        "| sessions | input MiB | output MiB | wall s | sessions/s | peak RSS GiB | rows with k items |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
    )
    stem = resolve_stem(args.out, "batch_recommend", args.run.name)
    title = f"Batch scoring: `hiersrec recommend {args.run} --input ... --output ...`"
    write_results(stem, header, payload, title, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
