"""Choosing a fused model's partner weight on the validation tail, and fitting its partner.

`attach_partner` takes a trained neural model and a `FusionConfig`: it fits the partner on the training
sessions the neural model was trained on (never the validation tail), ranks every validation case once per
(rule, weight) of the configured grid in one pass (each batch is scored by both models once), keeps the
pair with the best validation MRR@k, then refits the partner on all training sessions (validation tail
included, as a tuned baseline is refitted) for the model that is saved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hiersrec.config import FusionConfig
from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import MetricSums, target_ranks
from hiersrec.models import make_model
from hiersrec.models.fusion import FusedModel, fuse_scores
from hiersrec.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionSearch:
    """The validation figures of every (rule, weight) tried, and the chosen pair.

    Attributes:
        rule: the chosen rule.
        weight: the chosen weight.
        trials: one ``{"rule", "weight", "metrics"}`` per pair, in grid order.
        selected_by: the metric that chose (``"mrr@20"``).
        seconds: wall time of fitting the partner and ranking the validation cases.
    """

    rule: str
    weight: float
    trials: list[dict[str, Any]]
    selected_by: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "rule": self.rule,
            "weight": self.weight,
            "selected_by": self.selected_by,
            "seconds": self.seconds,
            "trials": self.trials,
        }


def fusion_grid(config: FusionConfig) -> list[tuple[str, float]]:
    """The (rule, weight) pairs to try: the configured weight alone, else every rule with every grid weight."""
    if config.weight is not None:
        return [(config.rule, config.weight)]
    grid = {"probability": config.probability_weights, "logit": config.logit_weights}
    return [(rule, weight) for rule in config.rules for weight in grid[rule]]


@torch.no_grad()
def search_fusion(
    neural: Any,
    partner: Any,
    valid: SessionData,
    catalog: ItemCatalog,
    grid: list[tuple[str, float]],
    *,
    k: int = 20,
    protocol: str = "all_prefixes",
    batch_size: int = 512,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Validation metrics (HR, MRR, NDCG at ``k``) of every (rule, weight) in ``grid``, in one pass.

    Every prefix of ``valid`` (``protocol``), its most recent ``neural.config.max_len`` clicks, full ranking
    and pessimistic ties, as `hiersrec.eval.protocol.evaluate` ranks them.
    """
    max_len = getattr(getattr(neural, "config", None), "max_len", 50)
    targets = valid.target_positions(protocol)
    sums = [MetricSums() for _ in grid]
    batches = iter_prefix_batches(valid, catalog, targets, batch_size, max_len)
    with progress(total=targets.size, desc="fusion", unit="case", disable=not show_progress, leave=False) as bar:
        for batch in batches:
            neural_scores = neural.score(batch).float()
            partner_scores = partner.score(batch).float()
            for pair_sums, (rule, weight) in zip(sums, grid, strict=True):
                fused = fuse_scores(neural_scores, partner_scores, rule, weight)
                pair_sums.add_ranks(target_ranks(fused, batch.target_items), [k])
            bar.update(len(batch))
    n_cases = int(targets.size)
    return [
        {"rule": rule, "weight": weight, "metrics": pair_sums.means(n_cases)}
        for pair_sums, (rule, weight) in zip(sums, grid, strict=True)
    ]


def attach_partner(
    neural: Any,
    config: FusionConfig,
    train: SessionData,
    valid: SessionData | None,
    all_train: SessionData | None,
    catalog: ItemCatalog,
    *,
    k: int = 20,
    protocol: str = "all_prefixes",
    show_progress: bool = False,
) -> tuple[FusedModel, FusionSearch]:
    """The neural model fused with its configured partner, the weight chosen on ``valid``.

    Args:
        neural: the trained neural model (eval mode).
        config: partner, its hyperparameters, rules and weight grid (or a fixed weight).
        train: the sessions the neural model was trained on (the partner is fitted on them for the search).
        valid: the validation tail; None only with a fixed ``config.weight`` (a refit has no validation).
        all_train: every training session (the partner of the saved model is refitted on them); None: ``train``.
        catalog: item attributes.
        k: the cutoff of the selection metric MRR@k.
        protocol: the validation cases (``"all_prefixes"`` or ``"last_item"``).
        show_progress: progress bar over the validation cases.
    """
    started = time.perf_counter()
    grid = fusion_grid(config)
    selected_by = f"mrr@{k}"
    if len(grid) == 1 and valid is None:
        trials: list[dict[str, Any]] = [{"rule": grid[0][0], "weight": grid[0][1], "metrics": {}}]
        rule, weight = grid[0]
    else:
        if valid is None:
            raise ValueError("choosing the fusion weight needs validation sessions; set fusion.weight for a refit")
        partner = make_model(config.partner, config.partner_params).fit(train, catalog)
        trials = search_fusion(neural, partner, valid, catalog, grid, k=k, protocol=protocol,
                               show_progress=show_progress)  # fmt: skip
        best = int(np.argmax([trial["metrics"][selected_by] for trial in trials]))  # first of equals: grid order
        rule, weight = grid[best]
        logger.info("fusion with %s: %s weight %g (validation %s %.4f)", config.partner, rule, weight, selected_by,
                    trials[best]["metrics"][selected_by])  # fmt: skip
    final_partner = make_model(config.partner, config.partner_params).fit(
        all_train if all_train is not None else train, catalog
    )
    search = FusionSearch(rule, weight, trials, selected_by, time.perf_counter() - started)
    return FusedModel(neural, final_partner, rule, weight), search
