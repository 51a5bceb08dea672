"""Prepare a synthetic 10M-click log end to end through the generic click-log importer; time and peak memory.

    .venv/bin/python benchmarks/prepare_10m.py [--clicks 10000000] [--workdir /tmp/hiersrec-prepare-10m]

Step 1 (not timed) writes a Parquet click log shaped like a shop's: sessions of geometric length (mean 5)
spread over 30 days, Zipf item popularity over 200,000 items, 3% consecutive repeats, plus an item table
with 1,000 categories (2% of items without one). Step 2 runs, in a child process,

    hiersrec data prepare --source clicklog -i log.parquet --items items.parquet --out prepared \
        --consecutive-duplicates drop --test-days 7

(SR-GNN thresholds otherwise: min session length 2, min item support 5) and measures its wall time and peak
resident memory (``ru_maxrss`` of the child, which includes Python start-up and imports). Targets: under
60 s and under 4 GB. The result goes to ``benchmarks/results/prepare_10m-<clicks>-clicks-<date>.json`` and
``.md`` (``reporting.py``); earlier runs are the lines of ``benchmarks/results/prepare_10m.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from reporting import count_label, resolve_stem, results_header, write_results

TARGET_SECONDS, TARGET_BYTES = 60.0, 4 * 1024**3
N_ITEMS, N_CATEGORIES = 200_000, 1_000


def write_log(directory: Path, n_clicks: int, seed: int = 0) -> tuple[Path, Path]:
    """The synthetic click log and item table (vectorised; ~10 s for 10M clicks)."""
    log, table = synthetic_log(n_clicks, seed)
    log_path, items_path = directory / "log.parquet", directory / "items.parquet"
    log.write_parquet(log_path)
    table.write_parquet(items_path)
    return log_path, items_path


def synthetic_log(n_clicks: int, seed: int = 0, first_session: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clicks, item table): ``n_clicks`` clicks of whole sessions numbered from ``first_session``.

    A bigger log is made of parts with other seeds and first sessions (`prepare_out_of_core.py`).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(1 / 5, size=n_clicks // 4)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_clicks) + 1]
    lengths[-1] -= lengths.sum() - n_clicks
    lengths = lengths[lengths > 0]
    session_start = np.sort(rng.integers(1_600_000_000, 1_600_000_000 + 30 * 86_400, lengths.size))
    session = np.repeat(np.arange(lengths.size), lengths)
    within = np.arange(n_clicks) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (rng.zipf(1.3, n_clicks) - 1) % N_ITEMS
    repeat = rng.random(n_clicks) < 0.03
    repeat[np.cumsum(lengths) - lengths] = False  # a session's first click repeats nothing
    items = np.where(repeat, np.roll(items, 1), items)
    log = pl.DataFrame(
        {
            "session_id": session + first_session,
            "item_id": items,
            "timestamp": session_start[session] + within * rng.integers(5, 120, n_clicks),
        }
    )
    category = rng.integers(0, N_CATEGORIES, N_ITEMS).astype(str).astype(object)
    category[rng.random(N_ITEMS) < 0.02] = None
    table = pl.DataFrame({"item_id": np.arange(N_ITEMS), "category": pl.Series(category, dtype=pl.Utf8)})
    return log, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hiersrec-prepare-10m"))
    parser.add_argument("--out", type=Path, help="results stem (default results/prepare_10m-<clicks>-clicks-<date>)")
    args = parser.parse_args(argv)
    header = results_header(__file__, argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    started = time.perf_counter()
    log_path, items_path = write_log(args.workdir, args.clicks)
    print(f"wrote {args.clicks:,} clicks in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    out = args.workdir / "prepared"
    command = [
        *("hiersrec", "data", "prepare", "--source", "clicklog", "-i", str(log_path), "--items", str(items_path)),
        *("--out", str(out), "--consecutive-duplicates", "drop", "--test-days", "7", "--json"),
    ]
    hiersrec = Path(sys.executable).with_name("hiersrec")
    started = time.perf_counter()
    child = subprocess.run([str(hiersrec), *command[1:]], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"prepare failed ({child.returncode}): {child.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    summary = json.loads(child.stdout)
    result = {
        "timed_command": " ".join(command),
        "clicks_in": args.clicks,
        "wall_seconds": round(wall, 2),
        "peak_rss_gib": round(peak / 1024**3, 3),
        "meets_targets": wall < TARGET_SECONDS and peak < TARGET_BYTES,
        "train": summary["train"],
        "test": summary["test"],
        "items": summary["items"],
        "categories": summary["categories"],
        "items_without_category_unknown": summary.get("items_without_category_unknown"),
    }
    verdict = "met" if result["meets_targets"] else "NOT met"
    markdown = (
        f"Timed command: `{result['timed_command']}`\n\n"
        f"{args.clicks:,} synthetic clicks prepared in {result['wall_seconds']} s (wall) with "
        f"{result['peak_rss_gib']} GiB peak resident memory (the child process, start-up and imports included). "
        f"Targets (under {TARGET_SECONDS:.0f} s and {TARGET_BYTES / 1024**3:.0f} GiB): {verdict}.\n\n"
        f"Output: {_count(result['train'])} train and {_count(result['test'])} test sessions, "
        f"{_count(result['items'])} items, {_count(result['categories'])} categories (all counts in the JSON).\n"
    )
    stem = resolve_stem(args.out, "prepare_10m", f"{count_label(args.clicks)}-clicks")
    write_results(stem, header, result, "Preparing a synthetic click log end to end", markdown)
    print(json.dumps(result, indent=2))


def _count(value: object) -> str:
    # A count of `hiersrec data prepare --json`: a number, or a split's summary ({"sessions": ..., ...}).
    if isinstance(value, dict) and "sessions" in value:
        value = value["sessions"]
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
