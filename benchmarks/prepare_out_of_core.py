"""Prepare a synthetic click log in memory and out of core; wall time and peak memory of each, same result.

    python benchmarks/prepare_out_of_core.py --clicks 10000000 --paths in-memory,out-of-core
    python benchmarks/prepare_out_of_core.py --clicks 100000000 --paths out-of-core --workdir /work/ooc-100m

Step 1 (not timed) writes the log of ``prepare_10m.py`` (sessions of geometric length, mean 5, over 30 days,
Zipf items over 200,000, 3% repeats, 1,000 categories), in parts of 10M clicks with their own seeds, so that
a 100M-click log is written within a few GiB; part 0 is the 10M log of ``prepare_10m.py``. Step 2 runs, for
each path, in its own child process,

    hiersrec data prepare --source clicklog -i log.parquet --items items.parquet --out prepared-<path> \
        --consecutive-duplicates drop --test-days 7 --json [--out-of-core --memory-limit 2GiB]

and measures its wall time and peak resident memory (``ru_maxrss`` of that child, from ``wait4``, which
includes Python start-up and imports). Target of the out-of-core path: under 2 GiB. When both paths run,
their fingerprints must be equal. The log (about 0.5 GB per 10M clicks, plus twice that in temporary files
while preparing) and the prepared folders are deleted at the end. Results:
``benchmarks/results/prepare_out_of_core-<clicks>-clicks-<date>.json`` and ``.md`` (``reporting.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from prepare_10m import synthetic_log
from reporting import count_label, resolve_stem, results_header, write_results

TARGET_BYTES = 2 * 1024**3
PART_CLICKS = 10_000_000
PATHS = ("in-memory", "out-of-core")


def write_log(directory: Path, n_clicks: int) -> tuple[Path, Path]:
    """The log in parts of `PART_CLICKS` clicks (sessions numbered on), and the item table of part 0."""
    log_path, items_path = directory / "log.parquet", directory / "items.parquet"
    writer, first_session, written = None, 0, 0
    for part in range(-(-n_clicks // PART_CLICKS)):
        clicks, items = synthetic_log(min(PART_CLICKS, n_clicks - written), seed=part, first_session=first_session)
        if part == 0:
            items.write_parquet(items_path)
        table = clicks.to_arrow()
        writer = writer or pq.ParquetWriter(log_path, table.schema, compression="zstd")
        writer.write_table(table)
        first_session = int(clicks["session_id"].max()) + 1
        written += clicks.height
        print(f"wrote {written:,} clicks", file=sys.stderr)
    writer.close()
    return log_path, items_path


def run_prepare(command: list[str], log: Path) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS bytes, JSON summary) of one ``hiersrec`` child process; its stderr to ``log``."""
    started = time.perf_counter()
    with open(log, "w") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stdout = child.stdout.read()
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the largest of all children so far.
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    messages = log.read_text()
    sys.stderr.write(messages[-3000:])
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"prepare failed ({os.waitstatus_to_exitcode(status)}): {messages[-3000:]}")
    summary = json.loads(stdout)
    summary["log"] = messages.splitlines()[-40:]  # the passes' progress lines, kept in the results
    return wall, usage.ru_maxrss * 1024, summary  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=100_000_000)
    parser.add_argument("--paths", default="out-of-core", help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--memory-limit", default="2GiB", help="--memory-limit of the out-of-core path")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hiersrec-prepare-out-of-core"))
    parser.add_argument("--out", type=Path, help="results stem (default results/prepare_out_of_core-<clicks>-...)")
    args = parser.parse_args(argv)
    paths = args.paths.split(",")
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths: choose from {PATHS}")
    header = results_header(__file__, argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    try:
        started = time.perf_counter()
        log_path, items_path = write_log(args.workdir, args.clicks)
        print(f"wrote the log in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        hiersrec = str(Path(sys.executable).with_name("hiersrec"))
        runs = {}
        for path in paths:
            out = args.workdir / f"prepared-{path}"
            # -v (progress lines) only out of core: in memory it makes every step count distinct sessions.
            verbose = ["-v"] if path == "out-of-core" else []
            command = [hiersrec, *verbose, "data", "prepare", "--source", "clicklog", "-i", str(log_path)]
            command += ["--items", str(items_path), "--out", str(out), "--consecutive-duplicates", "drop"]
            command += ["--test-days", "7", "--json"]
            if path == "out-of-core":
                command += ["--out-of-core", "--memory-limit", args.memory_limit]
            wall, peak, summary = run_prepare(command, args.workdir / f"{path}.log")
            runs[path] = {
                "timed_command": " ".join(["hiersrec", *command[1:]]),
                "wall_seconds": round(wall, 2),
                "peak_rss_gib": round(peak / 1024**3, 3),
                "fingerprint": summary["fingerprint"],
                "train": summary["train"],
                "test": summary["test"],
                "items": summary["items"],
                "log": summary["log"],
            }
            shutil.rmtree(out)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    fingerprints = {run["fingerprint"] for run in runs.values()}
    result = {
        "clicks_in": args.clicks,
        "memory_limit": args.memory_limit,
        "runs": runs,
        "same_dataset": len(fingerprints) == 1 if len(runs) > 1 else None,
        "out_of_core_meets_target": runs["out-of-core"]["peak_rss_gib"] * 1024**3 < TARGET_BYTES
        if "out-of-core" in runs
        else None,
    }
    lines = [
        f"- {path}: {run['wall_seconds']} s wall, {run['peak_rss_gib']} GiB peak RSS (`{run['timed_command']}`)"
        for path, run in runs.items()
    ]
    sample = next(iter(runs.values()))
    markdown = (
        f"{args.clicks:,} synthetic clicks prepared through each path, each in its own child process (peak "
        "resident memory from wait4, Python start-up and imports included):\n\n"
        + "\n".join(lines)
        + f"\n\nOut-of-core target: under {TARGET_BYTES / 1024**3:.0f} GiB: "
        f"{'met' if result['out_of_core_meets_target'] else 'NOT met' if 'out-of-core' in runs else 'not run'}. "
        f"Same prepared dataset (fingerprints equal): {result['same_dataset']}.\n\n"
        f"Output: {sample['train']['sessions']:,} train and {sample['test']['sessions']:,} test sessions, "
        f"{sample['items']:,} items (all counts in the JSON).\n"
    )
    stem = resolve_stem(args.out, "prepare_out_of_core", f"{count_label(args.clicks)}-clicks")
    write_results(stem, header, result, "Preparing a synthetic click log out of core", markdown)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
