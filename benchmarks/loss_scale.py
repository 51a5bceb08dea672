"""Next-item losses at catalogue scale: step time and peak memory of each ``train.loss`` on synthetic tables.

For each catalogue size (``--items``) and each loss (`hiersrec.models.item_loss`: ``full``, ``chunked``,
``chunked-bf16`` = the chunked kernel under bf16 autocast, ``sampled``, ``gbce``), one step is the forward
and backward pass of the loss alone: ``--rows`` query vectors and the (items, ``--dim``) item table are leaf
tensors that require gradients, the targets are drawn uniformly from the catalogue (so about ``--rows``
unique targets: the most candidate columns the sampled softmax gets), the logQ correction reads Zipf-like
training counts. Reported per case: the median step time over ``--repeats`` steps after ``--warmup`` steps,
and the step's peak memory: every case runs in a fresh process, which resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) just before its steps and reads it (``VmHWM``) after them, minus the RSS before
them. That peak includes the table's gradient (items x dim float32), which every loss needs.

A case is skipped, with the bytes it would need, when its estimated logits do not fit in
``--memory-limit-gib``: ``full`` keeps 3 (rows, items) float32 copies (logits, their log-softmax saved for
backward, their gradient), ``chunked`` two (chunk, items) buffers, the sampled losses 3 (rows, candidates).

The multiply-adds per target of the scoring are also listed, COMPUTED from the shapes (not measured): items x
dim for the exact losses, candidates x dim for the sampled ones, and for a category-factorised softmax
(categories, then the items of the target's category) ``(C + size of the target's category) x dim``, with
``--categories`` categories of equal sizes or of Zipf-like sizes (size of the c-th largest ~ 1/c); with
uniform targets a target falls in a category in proportion to its size, so its expected size is
``sum(s^2) / sum(s)``, not the mean size.

    python benchmarks/loss_scale.py --items 1000000,5000000 --dim 64 --rows 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from reporting import count_label, header_lines, resolve_stem, results_header, write_results

LOSSES = ("full", "chunked", "chunked-bf16", "sampled", "gbce")
FULL_COPIES = 3  # (rows, items) float32 tensors the full loss holds at once: logits, log-softmax, gradient
SAMPLED_COPIES = 3  # the same for the (rows, candidates) scores of the sampled losses
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1000000,5000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=64, help="width of the queries and item vectors")
    parser.add_argument("--rows", type=int, default=2048, help="training targets per step")
    parser.add_argument("--losses", default=",".join(LOSSES), help=f"losses, comma-separated, of {LOSSES}")
    parser.add_argument("--negatives", type=int, default=1024, help="train.negatives of sampled and gbce")
    parser.add_argument("--chunk", type=int, default=256, help="rows per chunk of the chunked kernel")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0, help="skip cases whose logits need more")
    parser.add_argument("--categories", type=int, default=1000, help="categories of the factorised FLOP count")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one case may take")
    parser.add_argument("--out", type=Path, help="output stem (default: benchmarks/results/loss_scale-...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: JSON job of one case
    args = parser.parse_args(argv)
    args.item_counts = [int(value) for value in args.items.split(",") if value.strip()]
    args.loss_names = [value.strip() for value in args.losses.split(",") if value.strip()]
    unknown = sorted(set(args.loss_names) - set(LOSSES))
    if unknown:
        parser.error(f"unknown losses {unknown}; choose among {list(LOSSES)}")
    return args


# -- one case, in its own process ----------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    # Linux: writing 5 resets the peak-RSS mark (VmHWM) to the current RSS, so the steps' own peak is read.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _targets(n_items: int, n_rows: int) -> np.ndarray:
    return np.random.default_rng([SEED, n_items]).integers(1, n_items, n_rows)


def _zipf_counts(n_items: int) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.int64)
    counts[1:] = np.maximum(1, (1e6 / np.arange(1, n_items)).astype(np.int64))
    return counts


def case_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Time one (items, loss) case in this process; its median step time and peak memory."""
    import torch

    from hiersrec.models.item_loss import ItemLoss

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(SEED)
    n_items, loss_name = job["items"], job["loss"]
    kind = "chunked" if loss_name == "chunked-bf16" else loss_name
    query = (0.1 * torch.randn(job["rows"], job["dim"])).requires_grad_()
    table = (0.1 * torch.randn(n_items, job["dim"])).requires_grad_()
    targets = torch.from_numpy(_targets(n_items, job["rows"]))
    loss = ItemLoss(kind, negatives=job["negatives"], item_counts=_zipf_counts(n_items))

    def step() -> float:
        query.grad = table.grad = None
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=loss_name == "chunked-bf16"):
            value = loss(query, table, targets, chunk_size=job["chunk"])
        value.backward()
        return time.perf_counter() - started

    query.grad = table.grad = None
    rss_before_kib = _status_kib("VmRSS")
    _reset_peak_rss()
    for _ in range(job["warmup"]):
        step()
    seconds = [step() for _ in range(job["repeats"])]
    peak_kib = _status_kib("VmHWM")
    return {
        "step_seconds": seconds,
        "median_step_seconds": statistics.median(seconds),
        "rss_before_bytes": rss_before_kib * 1024,
        "peak_step_bytes": (peak_kib - rss_before_kib) * 1024,
        "threads": torch.get_num_threads(),
    }


def run_case(args: argparse.Namespace, n_items: int, loss_name: str) -> dict[str, Any]:
    """One case in a fresh process (so that its peak memory is its own)."""
    with tempfile.TemporaryDirectory() as scratch:
        job = {
            "items": n_items, "loss": loss_name, "rows": args.rows, "dim": args.dim, "negatives": args.negatives,
            "chunk": args.chunk, "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
            "result": str(Path(scratch) / "result.json"),
        }  # fmt: skip
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
        subprocess.run(command, check=True, timeout=args.timeout)
        return json.loads(Path(job["result"]).read_text())


# -- what is computed, not measured --------------------------------------------------------------------------


def candidate_columns(args: argparse.Namespace, n_items: int, loss_name: str) -> int:
    """Columns each row is scored against by ``loss_name`` in this benchmark's step."""
    if loss_name == "sampled":
        return int(np.unique(_targets(n_items, args.rows)).size) + args.negatives
    if loss_name == "gbce":
        return 1 + args.negatives
    return n_items


def logits_bytes(args: argparse.Namespace, n_items: int, loss_name: str) -> int:
    """Estimated bytes of the scores ``loss_name`` holds at once (the skip rule; see the module docstring)."""
    if loss_name == "full":
        return FULL_COPIES * args.rows * n_items * 4
    if loss_name.startswith("chunked"):
        return 2 * min(args.chunk, args.rows) * n_items * (2 if loss_name == "chunked-bf16" else 4)
    return SAMPLED_COPIES * args.rows * candidate_columns(args, n_items, loss_name) * 4


def category_sizes(n_items: int, n_categories: int, shape: str) -> np.ndarray:
    """Sizes of ``n_categories`` categories over ``n_items`` items: ``"equal"`` or ``"zipf"`` (c-th ~ 1/c)."""
    weights = np.ones(n_categories) if shape == "equal" else 1.0 / np.arange(1, n_categories + 1)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n_items)).astype(np.int64)
    sizes[0] += n_items - sizes.sum()  # rounding goes to the largest category
    return sizes


def flop_counts(args: argparse.Namespace, n_items: int) -> dict[str, Any]:
    """Multiply-adds per target of the scoring of each loss (computed from the shapes)."""
    counts: dict[str, Any] = {
        loss: candidate_columns(args, n_items, loss) * args.dim for loss in ("full", "sampled", "gbce")
    }
    for shape in ("equal", "zipf"):
        sizes = category_sizes(n_items, args.categories, shape)
        target_category = float((sizes.astype(np.float64) ** 2).sum() / sizes.sum())
        counts[f"factorised_{shape}"] = round((args.categories + target_category) * args.dim)
        counts[f"factorised_{shape}_target_category_size"] = target_category
    return counts


# -- report --------------------------------------------------------------------------------------------------


def _mib(count: float) -> str:
    return f"{count / 2**20:,.0f}"


def markdown(payload: dict[str, Any]) -> str:
    settings = payload["settings"]
    lines = [
        *header_lines({k: v for k, v in settings.items() if k not in ("item_counts", "loss_names")}),
        f"- cpu_count: {payload['cpu_count']}",
        f"- load average before / after: {payload['load_average_before']} / {payload['load_average_after']}",
        "",
        "Forward + backward of the loss alone (queries and item table are leaf tensors). Peak memory: the step's "
        "peak RSS above the RSS before it, in a fresh process per case; it includes the item table's gradient "
        f"({settings['dim']} float32 per item). Skipped: estimated scores over --memory-limit-gib.",
        "",
        "| items | loss | status | median step s | steps s | peak step MiB | est. scores MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in payload["cases"]:
        steps = ", ".join(f"{s:.3f}" for s in case.get("step_seconds", []))
        median = f"{case['median_step_seconds']:.3f}" if "median_step_seconds" in case else "-"
        peak = _mib(case["peak_step_bytes"]) if "peak_step_bytes" in case else "-"
        lines.append(
            f"| {case['items']:,} | {case['loss']} | {case['status']} | {median} | {steps or '-'} | {peak} | "
            f"{_mib(case['estimated_scores_bytes'])} |"
        )
    lines += [
        "",
        "COMPUTED, not measured: multiply-adds per target of the scoring (forward; backward repeats them twice). "
        f"Factorised: {settings['categories']} categories, then the target's category, of equal or Zipf-like sizes "
        "(the c-th largest ~ 1/c); the target's category is size-weighted (uniform targets), its expected size "
        "in brackets.",
        "",
        "| items | full / chunked | sampled | gbce | factorised, equal sizes | factorised, Zipf sizes |",
        "|---|---|---|---|---|---|",
    ]
    for row in payload["flops"]:
        lines.append(
            f"| {row['items']:,} | {row['full']:,} | {row['sampled']:,} | {row['gbce']:,} | "
            f"{row['factorised_equal']:,} ({row['factorised_equal_target_category_size']:,.0f}) | "
            f"{row['factorised_zipf']:,} ({row['factorised_zipf_target_category_size']:,.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        Path(job["result"]).write_text(json.dumps(case_worker(job)))
        return
    header = results_header(__file__, argv)
    load_before = os.getloadavg()
    limit = args.memory_limit_gib * 2**30
    cases = []
    for n_items in args.item_counts:
        for loss_name in args.loss_names:
            estimate = logits_bytes(args, n_items, loss_name)
            case = {"items": n_items, "loss": loss_name, "estimated_scores_bytes": estimate}
            if estimate > limit:
                case["status"] = f"skipped: needs {estimate / 2**30:.1f} GiB"
            else:
                case.update(run_case(args, n_items, loss_name), status="ran")
            cases.append(case)
            print(json.dumps({k: v for k, v in case.items() if k != "step_seconds"}), flush=True)
    payload = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cases": cases,
        "flops": [{"items": n_items, **flop_counts(args, n_items)} for n_items in args.item_counts],
    }
    label = "-".join(count_label(n) for n in args.item_counts) + f"-items-d{args.dim}"
    stem = resolve_stem(args.out, "loss_scale", label)
    for path in write_results(stem, header, payload, "Next-item losses at catalogue scale", markdown(payload)):
        print(path)


if __name__ == "__main__":
    main()
