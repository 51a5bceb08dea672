"""Category candidates at scale: synthetic catalogues of millions of items, against exact scoring and FAISS.

For each catalogue size, one run measures side by side, on the same queries, with the methods interleaved
(each query, then each batch, goes through every method in turn, so that all see the same machine load):

* exact full scoring (`ExactIndex`: every item scored, top 20 kept);
* category candidates (`select_categories` + `CategoryIndex`) at budgets 1, 2, 4, 8, 16% of the catalogue;
* with ``--bf16``, the same exact search scored with a bf16 copy of the item matrix, the items that can still
  reach the top 20 re-scored in fp32 (`hiersrec.retrieval.survivors`: fp32 answers);
* FAISS IVF-Flat over a sweep of ``nprobe`` and HNSW-Flat over a sweep of ``efSearch`` (inner product);

with the latency of one session at a time (p50, p99) and of batches of 256 sessions, and the recall of the
exact top 20. The 4% candidate path is compared with exact scoring (speed-up) and with the fastest FAISS
setting that reaches at least its recall ("equal recall").

The catalogue has the shape of the diginetica model: ``--categories`` (995 on diginetica) with log-normal
sizes (sigma 1.65, as diginetica's), ``--dim`` item dimensions. Embeddings are lightly structured: an item is
its category centre plus Gaussian noise; a session query is its next category's centre, plus a share of a
second category's centre and noise; the category head's logits are the query's (noisy) similarity to the
centres. The item spread is calibrated so that the 4% candidates keep about the same share of the exact top 20
as they keep on diginetica with a trained HierSRec (``benchmarks/candidates.py``, column top20); the recall
figures describe this synthetic structure, the latencies hardly depend on it. FAISS's recall depends on how
clusterable the embeddings are, which this calibration does not match: noise-dominated items are hard for IVF
and HNSW, so compare with ``benchmarks/candidates.py``'s FAISS table on a trained model's embeddings.

Usage:
    python benchmarks/scale.py --items 1000000 --items 5000000 --hnsw-max-items 1000000
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, select_categories
from hiersrec.retrieval.index import CategoryIndex, ExactIndex
from reporting import count_label, resolve_stem, results_header, sibling, write_figure, write_results

logger = logging.getLogger("scale")
K = 20

Search = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (queries, category logits) -> (B, K) item_idx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, action="append", help="catalogue size; repeat (default 1000000)")
    parser.add_argument("--categories", type=int, default=995, help="categories (diginetica: 995)")
    parser.add_argument("--dim", type=int, default=128, help="item embedding dimension")
    parser.add_argument("--budgets", default="1%,2%,4%,8%,16%", help="candidate budgets, comma-separated")
    parser.add_argument(
        "--order",
        default="probability",
        choices=["probability", "density"],
        help="category order of the budgets; the synthetic head's logits are noisy similarities, not calibrated "
        "log-probabilities, so the probability-per-item order (hiersrec's default) has no meaning on them",
    )
    parser.add_argument("--single", type=int, default=200, help="sessions timed one at a time")
    parser.add_argument("--batch", type=int, default=256, help="sessions per batch")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed batches per method")
    parser.add_argument("--exact-chunk", type=int, default=32, help="queries scored at once by exact search")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32,64", help="IVF cells searched, comma-separated")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512", help="HNSW beam widths, comma-separated")
    parser.add_argument("--hnsw-m", type=int, default=16, help="HNSW links per node")
    parser.add_argument("--hnsw-max-items", type=int, default=1_000_000, help="skip HNSW above this size")
    parser.add_argument("--no-faiss", action="store_true", help="candidates and exact only")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time exact search with the bf16 matrix and exact fp32 re-scoring",
    )
    parser.add_argument(
        "--item-noise",
        type=float,
        default=3.1,
        help="item spread around its category centre (3.1: the 4%% candidates keep about the share of the exact "
        "top 20 that they keep with a HierSRec checkpoint on diginetica, 96.7%%)",
    )
    parser.add_argument("--query-noise", type=float, default=0.5, help="query noise")
    parser.add_argument("--query-mix", type=float, default=0.3, help="share of a second category in a query")
    parser.add_argument("--head-noise", type=float, default=0.3, help="noise of the category head's input")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and FAISS threads (1: the machine is shared, see README)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results stem (default results/scale-<sizes>-<date>)")
    return parser.parse_args(argv)


def make_catalogue(n_items: int, args: argparse.Namespace, rng: np.random.Generator):
    """Category sizes, item embeddings (V, D) laid out by category, category centres (C + 1, D)."""
    sizes = rng.lognormal(0.0, 1.65, args.categories)
    sizes = np.maximum(1, np.floor(sizes / sizes.sum() * n_items)).astype(np.int64)
    sizes[np.argmax(sizes)] += n_items - sizes.sum()
    item_category = np.concatenate([[0], np.repeat(np.arange(1, args.categories + 1), sizes)])
    generator = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.categories + 1, args.dim, generator=generator) / np.sqrt(args.dim)
    embeddings = torch.empty(n_items + 1, args.dim)
    for start in range(0, n_items + 1, 1 << 20):  # in slices: no second full-size temporary
        part = slice(start, min(start + (1 << 20), n_items + 1))
        noise = torch.randn(part.stop - part.start, args.dim, generator=generator) / np.sqrt(args.dim)
        embeddings[part] = centres[torch.from_numpy(item_category[part])] + args.item_noise * noise
    embeddings[0] = 0.0
    return item_category, embeddings, centres, sizes


def make_queries(n: int, centres: torch.Tensor, sizes: np.ndarray, args, rng: np.random.Generator):
    """Session queries (n, D) and category-head logits (n, C + 1), padding column -inf."""
    n_categories = sizes.size
    target = rng.choice(n_categories, n, p=sizes / sizes.sum()) + 1
    other = rng.integers(1, n_categories + 1, n)
    generator = torch.Generator().manual_seed(args.seed + 1)
    noise = torch.randn(n, centres.shape[1], generator=generator) / np.sqrt(centres.shape[1])
    queries = centres[target] + args.query_mix * centres[other] + args.query_noise * noise
    head_noise = torch.randn(n, centres.shape[1], generator=generator) / np.sqrt(centres.shape[1])
    logits = 8.0 * (queries + args.head_noise * head_noise) @ centres.T * np.sqrt(centres.shape[1])
    logits[:, 0] = float("-inf")
    return queries, logits


def time_methods(methods, queries, logits, singles: int, batch: int, repeats: int) -> list[dict]:
    """Latencies of every method, interleaved: for each query (then each batch repeat) all methods run in turn.

    On a shared machine the load changes from second to second; interleaving exposes every method to the
    same load, so their ratios stay meaningful even when the absolute figures are pessimistic.
    """
    timings = [{"single_ids": [], "single_ms": [], "batch_ms": []} for _ in methods]
    for row in range(singles):
        for (_, _, search, _), timing in zip(methods, timings, strict=True):
            started = time.perf_counter()
            timing["single_ids"].append(search(queries[row : row + 1], logits[row : row + 1]))
            timing["single_ms"].append(1e3 * (time.perf_counter() - started))
    batch_q, batch_l = queries[singles : singles + batch], logits[singles : singles + batch]
    for _ in range(repeats):
        for (_, _, search, _), timing in zip(methods, timings, strict=True):
            started = time.perf_counter()
            timing["batch_ids"] = search(batch_q, batch_l)
            timing["batch_ms"].append(1e3 * (time.perf_counter() - started))
    return timings


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row's exact top-K found."""
    return float(
        np.mean([len(set(a.tolist()) & set(b.tolist())) / exact.shape[1] for a, b in zip(found, exact, strict=True)])
    )


def run_size(n_items: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    item_category, embeddings, centres, sizes = make_catalogue(n_items, args, rng)
    queries, logits = make_queries(args.single + args.batch, centres, sizes, args, rng)
    layout = CategoryLayout.from_item_category(item_category, args.categories)
    exact_index, category_index = ExactIndex(embeddings), CategoryIndex(embeddings, layout)
    logger.info("%d items: catalogue built in %.1f s", n_items, time.perf_counter() - started)

    def exact(q, _logits):
        return torch.cat([exact_index.search(chunk, K)[0] for chunk in q.split(args.exact_chunk)])

    methods: list[tuple[str, str, Search, float]] = [("exact", "", exact, 0.0)]
    for spec in args.budgets.split(","):

        def candidates(q, lg, budget=CandidateBudget.parse(f"{spec}:{args.order}")):
            return category_index.search(q, K, selected=select_categories(lg, category_index.sizes, budget))[0]

        methods.append(("candidates", spec, candidates, 0.0))
    if args.bf16:
        exact_low = ExactIndex(embeddings, "bf16")

        def exact_bf16(q, _logits):
            return torch.cat([exact_low.search(chunk, K)[0] for chunk in q.split(args.exact_chunk)])

        methods.append(("exact-bf16", "", exact_bf16, 0.0))
    methods += [] if args.no_faiss else faiss_methods(embeddings, n_items, args)

    with torch.inference_mode():
        timings = time_methods(methods, queries, logits, args.single, args.batch, args.batch_repeats)
    exact_single, exact_batch = torch.cat(timings[0]["single_ids"]), timings[0]["batch_ids"]  # methods[0] is exact
    rows = []
    for (name, param, _, build_s), timing in zip(methods, timings, strict=True):
        single_ms, batch_ms = np.array(timing["single_ms"]), np.array(timing["batch_ms"])
        row = {
            "method": name,
            "param": param,
            "recall_single": recall(torch.cat(timing["single_ids"]), exact_single),
            "recall_batch": recall(timing["batch_ids"], exact_batch),
            "single_p50_ms": float(np.percentile(single_ms, 50)),
            "single_p99_ms": float(np.percentile(single_ms, 99)),
            "batch_p50_ms": float(np.percentile(batch_ms, 50)),
            "batch_ms_per_session": float(np.percentile(batch_ms, 50)) / args.batch,
            "build_s": build_s,
        }
        rows.append(row)
        logger.info("%s", row)
    selected = select_categories(logits, category_index.sizes, CandidateBudget.parse(f"4%:{args.order}"))
    return {
        "n_items": n_items,
        "candidate_order": args.order,
        "n_categories": args.categories,
        "dim": args.dim,
        "mean_candidates_4pct": float(category_index.n_candidates(selected).float().mean()),
        "mean_categories_4pct": float(selected.sum(1).float().mean()),
        "largest_category_share": float(sizes.max() / n_items),
        "rows": rows,
        "summary": summarise(rows),
    }


def faiss_methods(embeddings: torch.Tensor, n_items: int, args, k: int = K) -> list[tuple[str, str, Search, float]]:
    from hiersrec.retrieval.faiss_index import FaissIndex

    kinds = [("ivf", {"train_per_list": 64, "seed": args.seed}, "n_probe", args.nprobe)]
    if n_items <= args.hnsw_max_items:
        kinds.append(("hnsw", {"hnsw_m": args.hnsw_m, "ef_construction": 40}, "ef_search", args.ef_search))
    else:
        logger.info("HNSW skipped at %d items (--hnsw-max-items %d)", n_items, args.hnsw_max_items)
    methods = []
    for kind, build_options, knob, values in kinds:
        started = time.perf_counter()
        index = FaissIndex(embeddings, kind, **build_options)
        build_s = time.perf_counter() - started
        logger.info("FAISS %s built in %.0f s", kind, build_s)
        for value in [int(v) for v in values.split(",")]:

            def search(q, _logits, index=index, knob=knob, value=value):
                index.set_search_params(**{knob: value})
                return index.search(q, k)[0]

            methods.append((f"faiss-{kind}", f"{knob}={value}", search, build_s))
    return methods


RECALL_TARGETS = (0.90, 0.95, 0.99)


def summarise(rows: list[dict]) -> dict:
    """Speed-ups of the 4% candidates over exact scoring, and each method's fastest setting at equal recall.

    "Equal recall": for each target recall of the exact top 20 (and for the 4% candidates' own recall), every
    method family (category candidates over budgets, IVF over nprobe, HNSW over efSearch) is represented by its
    fastest setting that reaches the target, separately for one session (p50) and for a batch.
    """
    by_key = {(r["method"], r["param"]): r for r in rows}
    exact, cand = by_key[("exact", "")], by_key[("candidates", "4%")]
    summary: dict = {
        "candidates_4pct_recall": cand["recall_single"],
        "speedup_single_p50": exact["single_p50_ms"] / cand["single_p50_ms"],
        "speedup_single_p99": exact["single_p99_ms"] / cand["single_p99_ms"],
        "speedup_batch": exact["batch_p50_ms"] / cand["batch_p50_ms"],
        "equal_recall": [],
    }
    if ("exact-bf16", "") in by_key:  # bf16 scoring, fp32 answers
        exact_low = by_key[("exact-bf16", "")]
        summary["speedup_batch_exact_bf16"] = exact["batch_p50_ms"] / exact_low["batch_p50_ms"]
        summary["speedup_single_exact_bf16"] = exact["single_p50_ms"] / exact_low["single_p50_ms"]
        summary["speedup_batch_over_exact_bf16"] = exact_low["batch_p50_ms"] / cand["batch_p50_ms"]
    families = [m for m in ("candidates", "faiss-ivf", "faiss-hnsw") if any(r["method"] == m for r in rows)]
    for mode, recall_key, time_key in (
        ("single", "recall_single", "single_p50_ms"),
        ("batch", "recall_batch", "batch_p50_ms"),
    ):
        for target in (*RECALL_TARGETS, cand[recall_key]):
            entry = {"mode": mode, "target_recall": target}
            for family in families:
                reaching = [r for r in rows if r["method"] == family and r[recall_key] >= target - 1e-12]
                best = min(reaching, key=lambda r: r[time_key]) if reaching else None
                entry[family] = None if best is None else {"setting": best["param"], "ms": best[time_key]}
            summary["equal_recall"].append(entry)
    return summary


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4.5 * len(results)), squeeze=False)
    styles = {
        "exact": "k*",
        "exact-bf16": "kx",
        "candidates": "o-",
        "faiss-ivf": "s--",
        "faiss-hnsw": "^--",
    }
    for size_axes, result in zip(axes, results, strict=True):
        for ax, (time_key, recall_key, title) in zip(
            size_axes,
            [("single_p50_ms", "recall_single", "one session (p50)"), ("batch_p50_ms", "recall_batch", "batch")],
            strict=True,
        ):
            for method, style in styles.items():
                rows = [r for r in result["rows"] if r["method"] == method]
                if not rows:
                    continue
                xs, ys = [r[time_key] for r in rows], [r[recall_key] for r in rows]
                ax.plot(xs, ys, style, label=method, markersize=7)
                if method == "candidates":
                    for r in rows:
                        ax.annotate(
                            r["param"],
                            (r[time_key], r[recall_key]),
                            textcoords="offset points",
                            xytext=(4, -10),
                            fontsize=8,
                        )
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log scale)")
            ax.set_ylabel(f"recall of the exact top {K}")
            ax.set_title(f"{result['n_items']:,} items, {result['n_categories']} categories: {title}")
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower right")
    fig.tight_layout()
    write_figure(fig, path)


def markdown(payload: dict) -> str:
    lines = [
        f"Threads: {payload['threads']}; load average before/after: {payload['load_before']} / "
        f"{payload['load_after']} (other jobs shared the machine: timings are pessimistic).",
        "",
        "Synthetic catalogues (see the script's docstring); recall = share of the exact top 20 found. "
        "Batch latency is for one batch of sessions; exact scoring runs in chunks of "
        f"{payload['args']['exact_chunk']} queries to bound memory.",
        "",
        "Caveat on the FAISS columns: how much recall IVF and HNSW reach for a given cost depends on how clusterable "
        "the item embeddings are. These synthetic items are noise-dominated (the generator is calibrated only on the "
        "candidates' share of the exact top 20), which is unfavourable to both indexes. On a trained model's own "
        "embeddings the ranking can reverse: see the FAISS table of `benchmarks/candidates.py`'s results.",
    ]
    for result in payload["results"]:
        s = result["summary"]
        lines += [
            "",
            f"## {result['n_items']:,} items, {result['n_categories']} categories, D = {result['dim']}",
            "",
            f"4% budget (categories by {result['candidate_order']}): {result['mean_categories_4pct']:.1f} categories, "
            f"{result['mean_candidates_4pct']:,.0f} "
            f"candidates per session on average; largest category {100 * result['largest_category_share']:.2f}% "
            "of the catalogue.",
            "",
            f"Speed-up of 4% candidates over exact: one session p50 {s['speedup_single_p50']:.1f}x, "
            f"p99 {s['speedup_single_p99']:.1f}x; batch {s['speedup_batch']:.1f}x"
            + (
                f". Exact search with the bf16 matrix and fp32 re-scoring: {s['speedup_single_exact_bf16']:.1f}x "
                f"(one session p50) and {s['speedup_batch_exact_bf16']:.1f}x (batch) faster than in fp32; the 4% "
                f"candidates batch is {s['speedup_batch_over_exact_bf16']:.1f}x faster than it."
                if "speedup_batch_exact_bf16" in s
                else "."
            ),
            "",
            "| method | setting | recall (1 session) | p50 ms | p99 ms | recall (batch) | batch ms | ms/session "
            "in batch | build s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            lines.append(
                f"| {r['method']} | {r['param']} | {r['recall_single']:.4f} | {r['single_p50_ms']:.2f} | "
                f"{r['single_p99_ms']:.2f} | {r['recall_batch']:.4f} | {r['batch_p50_ms']:.1f} | "
                f"{r['batch_ms_per_session']:.3f} | {r['build_s']:.0f} |"
            )
        families = [f for f in ("candidates", "faiss-ivf", "faiss-hnsw") if f in s["equal_recall"][0]]
        lines += [
            "",
            "Fastest setting of each method that reaches a recall of the exact top 20 (the last target of each "
            "mode is the 4% candidates' own recall); '-' = no setting of the sweep reached it.",
            "",
            "| mode | target recall | " + " | ".join(families) + " |",
            "|---|---|" + "---|" * len(families),
        ]
        for entry in s["equal_recall"]:
            cells = ["-" if entry[f] is None else f"{entry[f]['ms']:.2f} ms ({entry[f]['setting']})" for f in families]
            lines.append(f"| {entry['mode']} | {entry['target_recall']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", f"![budget, recall and latency]({payload['plot']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        args.no_faiss = True
    sizes = args.items or [1_000_000]
    stem = resolve_stem(args.out, "scale", "-".join(count_label(n_items) for n_items in sizes) + "-items")
    load_before = os.getloadavg()
    results = []
    for n_items in sizes:
        results.append(run_size(n_items, args))
        gc.collect()
    header = results_header(__file__, argv)
    payload = {
        "threads": args.threads,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "plot": sibling(stem, ".png").name,
        "results": results,
    }
    plot(results, sibling(stem, ".png"))
    write_results(stem, header, payload, "Category candidates at scale", markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
