"""Per-case ranks and paired significance: is model A better than model B on the same test cases?

A comparison of two models over the same cases is paired: both rank each case, so the per-case differences
of reciprocal rank (MRR@k) and hit (HR@k) carry the evidence. `compare` reports the mean differences, a
paired bootstrap confidence interval of each (cases resampled with replacement), and the Wilcoxon
signed-rank test on the reciprocal-rank differences (cases with equal values left out, as the test asks).
Ranks are saved per case (`case_ranks`), so breakdowns and tests need no re-scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import stats

from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import TiePolicy, target_ranks
from hiersrec.progress import progress


@torch.inference_mode()
def case_ranks(
    model: Any,
    sessions: SessionData,
    catalog: ItemCatalog,
    *,
    protocol: str = "all_prefixes",
    ties: TiePolicy = "pessimistic",
    max_len: int = 50,
    batch_size: int = 512,
    show_progress: bool = False,
) -> np.ndarray:
    """(N,) float32 full-ranking rank of every case's target, in case order (the order `evaluate` reads them)."""
    targets = sessions.target_positions(protocol)
    ranks = []
    with progress(total=targets.size, desc="ranks", unit="case", disable=not show_progress, leave=False) as bar:
        for batch in iter_prefix_batches(sessions, catalog, targets, batch_size, max_len):
            ranks.append(target_ranks(model.score(batch).float(), batch.target_items, ties).numpy())
            bar.update(len(batch))
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.float32)


def per_case_metrics(ranks: np.ndarray, k: int = 20) -> dict[str, np.ndarray]:
    """Per-case reciprocal rank (0 beyond ``k``) and hit at ``k``: their means are MRR@k and HR@k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    inside = ranks <= k
    return {f"mrr@{k}": np.where(inside, 1.0 / ranks, 0.0), f"hr@{k}": inside.astype(np.float64)}


def compare(
    ranks_a: np.ndarray,
    ranks_b: np.ndarray,
    *,
    k: int = 20,
    n_boot: int = 2000,
    confidence: float = 0.99,
    seed: int = 0,
) -> dict[str, Any]:
    """A minus B over the same cases: mean differences of MRR@k and HR@k, bootstrap intervals, Wilcoxon p.

    Args:
        ranks_a: (N,) ranks of model A (`case_ranks`).
        ranks_b: (N,) ranks of model B on the same cases in the same order.
        k: the cutoff.
        n_boot: bootstrap resamples of the cases.
        confidence: two-sided level of the intervals.
        seed: the resampling seed.

    Returns:
        ``{"mrr@k": {"difference", "ci"}, "hr@k": {...}, "wilcoxon_p": ..., "n_cases": N, "confidence": ...}``;
        ``wilcoxon_p`` is for the reciprocal ranks (1.0 when every case is equal).
    """
    ranks_a, ranks_b = np.asarray(ranks_a), np.asarray(ranks_b)
    if ranks_a.shape != ranks_b.shape or ranks_a.ndim != 1:
        raise ValueError(f"paired ranks need the same cases: shapes {ranks_a.shape} and {ranks_b.shape}")
    a, b = per_case_metrics(ranks_a, k), per_case_metrics(ranks_b, k)
    rng = np.random.default_rng(seed)
    n = ranks_a.size
    tail = 100 * (1 - confidence) / 2
    out: dict[str, Any] = {"n_cases": int(n), "confidence": confidence}
    for key in a:
        diff = a[key] - b[key]
        # Resampled in blocks so that memory stays at (block, N) whatever n_boot is.
        means = np.concatenate(
            [diff[rng.integers(0, n, (min(200, n_boot - i), n))].mean(axis=1) for i in range(0, n_boot, 200)]
        )
        out[key] = {"difference": float(diff.mean()), "ci": [float(np.percentile(means, tail)),
                                                             float(np.percentile(means, 100 - tail))]}  # fmt: skip
    rr_diff = a[f"mrr@{k}"] - b[f"mrr@{k}"]
    nonzero = rr_diff != 0
    out["wilcoxon_p"] = float(stats.wilcoxon(rr_diff[nonzero]).pvalue) if nonzero.any() else 1.0
    return out


def significantly_better(comparison: dict[str, Any], k: int = 20, alpha: float = 0.01) -> bool:
    """True when A beats B on both MRR@k and HR@k: both intervals above 0 and the Wilcoxon p below ``alpha``."""
    return (
        comparison[f"mrr@{k}"]["ci"][0] > 0 and comparison[f"hr@{k}"]["ci"][0] > 0 and comparison["wilcoxon_p"] < alpha
    )
