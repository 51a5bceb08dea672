"""Would an ensemble of two neural runs, fused with SR, beat either on validation? (issue 12, before building one)

Two unfused neural runs trained and selected on the same validation tail (``--runs A B``; fused runs are read
for their neural model, since their saved partner was fitted on the validation tail too) are mixed in log
space, ``(1 - w) log_softmax(A) + w log_softmax(B)``, and the mixture is fused with SR fitted on the sessions
before the tail by the logit rule (`hiersrec.models.fusion.fuse_scores`) at each ``--sr-weights``. Every
(w, SR weight) pair's validation HR/MRR/NDCG at 20 is listed; the test split is never read.

    python benchmarks/ensemble_probe.py --runs runs/yc-ycpreset-s42 runs/yc-dgnpreset-s42 --data prepared/yoochoose1_64
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from hiersrec.artifact import check_compatible, load_artifact
from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.ingest import open_dataset
from hiersrec.eval.metrics import MetricSums, target_ranks
from hiersrec.models import make_model
from hiersrec.models.fusion import FusedModel, fuse_scores
from hiersrec.progress import progress
from hiersrec.train.run import TrainingData
from reporting import resolve_stem, results_header, write_results

K = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0],
                        help="weights w of run B in the mixture (0: A alone, 1: B alone)")  # fmt: skip
    parser.add_argument("--sr-weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def neural_model(run: Path, dataset: Any) -> Any:
    """The run's neural model (a fused run's, without its partner), checked against ``dataset``."""
    artifact = load_artifact(run)
    check_compatible(artifact, dataset, run)
    return artifact.model.neural if isinstance(artifact.model, FusedModel) else artifact.model


@torch.inference_mode()
def probe(models: list[Any], partner: Any, data: TrainingData, grid: list[tuple[float, float]]) -> list[dict]:
    """Validation metrics at ``K`` of every (mixture weight, SR weight) in ``grid``."""
    max_len = max(model.config.max_len for model in models)
    targets = data.valid.target_positions("all_prefixes")
    sums = [MetricSums() for _ in grid]
    batches = iter_prefix_batches(data.valid, data.catalog, targets, 512, max_len)
    with progress(total=targets.size, desc="ensemble", unit="case") as bar:
        for batch in batches:
            logs = [torch.log_softmax(model.score(batch).float(), dim=1) for model in models]
            evidence = partner.score(batch)
            for cell, (weight, sr_weight) in zip(sums, grid, strict=True):
                # The ends are the runs themselves: 0 * -inf would turn the padding column into NaN.
                mixed = (
                    logs[0] if weight == 0 else logs[1] if weight == 1 else (1 - weight) * logs[0] + weight * logs[1]
                )
                cell.add_ranks(target_ranks(fuse_scores(mixed, evidence, "logit", sr_weight), batch.target_items), [K])
            bar.update(len(batch))
    n_cases = int(targets.size)
    return [
        {"weight": w, "sr_weight": f, "metrics": cell.means(n_cases)} for cell, (w, f) in zip(sums, grid, strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = results_header(__file__, argv)
    dataset = open_dataset(args.data)
    models = [neural_model(run, dataset) for run in args.runs]
    data = TrainingData.from_prepared(dataset)
    partner = make_model("sr").fit(data.train, data.catalog)  # the sessions before the tail, as fusion fits it
    grid = [(weight, sr_weight) for weight in args.weights for sr_weight in args.sr_weights]
    rows = probe(models, partner, data, grid)
    best = max(rows, key=lambda row: row["metrics"][f"mrr@{K}"])
    lines = [f"A = `{args.runs[0]}`, B = `{args.runs[1]}`; validation tail, {data.valid.n_sessions} sessions, every "
             "prefix, full ranking, pessimistic ties; SR fitted on the sessions before the tail.", "",
             f"| w (B's share) | SR weight | HR@{K} | MRR@{K} | NDCG@{K} |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        m = row["metrics"]
        lines.append(f"| {row['weight']:g} | {row['sr_weight']:g} | {100 * m[f'hr@{K}']:.2f} | "
                     f"{100 * m[f'mrr@{K}']:.2f} | {100 * m[f'ndcg@{K}']:.2f} |")  # fmt: skip
    lines += ["", f"Best by MRR@{K}: w {best['weight']:g}, SR weight {best['sr_weight']:g}."]
    stem = resolve_stem(args.out, "ensemble_probe", dataset.name)
    payload = {"runs": [str(run) for run in args.runs], "rows": rows, "best": best}
    for path in write_results(
        stem, header, payload, "Ensemble of two runs, fused with SR: validation", "\n".join(lines)
    ):
        print(path)


if __name__ == "__main__":
    main()
