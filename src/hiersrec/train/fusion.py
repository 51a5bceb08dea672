"""Choosing a fused model's partner and its weight on the validation tail, and fitting the partner.

`attach_partner` takes a trained neural model and a `FusionConfig`: it fits the partner (and every one of
``alternatives``) on the training sessions the neural model was trained on (never the validation tail),
ranks every validation case once per (partner, rule, weight) of the configured grid in one pass (each batch
is scored by every model once), keeps the triple with the best validation MRR@k, then refits the chosen
partner on all training sessions (validation tail included, as a tuned baseline is refitted) for the model
that is saved.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hiersrec.config import FusionConfig
from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import MetricSums
from hiersrec.models import MODELS, make_model
from hiersrec.models.fusion import FusedModel
from hiersrec.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionSearch:
    """The validation figures of every (partner, rule, weight) tried, and the chosen triple.

    Attributes:
        partner: the chosen partner's name.
        partner_params: its hyperparameters (``{}``: its defaults).
        rule: the chosen rule.
        weight: the chosen weight.
        trials: one ``{"partner", "rule", "weight", "metrics"}`` per triple, partner by partner in grid order.
        selected_by: the metric that chose (``"mrr@20"``).
        seconds: wall time of fitting the partners and ranking the validation cases.
        skipped: alternatives not tried, each with the reason (text-kNN on a catalogue without text).
    """

    partner: str
    partner_params: dict[str, Any]
    rule: str
    weight: float
    trials: list[dict[str, Any]]
    selected_by: str
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def chosen_metrics(self) -> dict[str, float]:
        """The validation metrics of the chosen triple (empty for a fixed weight without validation)."""
        chosen = (self.partner, self.rule, self.weight)
        return next(t["metrics"] for t in self.trials if (t["partner"], t["rule"], t["weight"]) == chosen)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "partner": self.partner,
            "rule": self.rule,
            "weight": self.weight,
            "selected_by": self.selected_by,
            "seconds": self.seconds,
            "skipped": self.skipped,
            "trials": self.trials,
        }


def fusion_grid(config: FusionConfig) -> list[tuple[str, float]]:
    """The (rule, weight) pairs to try: the configured weight alone, else every rule with every grid weight."""
    if config.weight is not None:
        return [(config.rule, config.weight)]
    grid = {"probability": config.probability_weights, "logit": config.logit_weights}
    return [(rule, weight) for rule in config.rules for weight in grid[rule]]


def fusion_partners(config: FusionConfig) -> dict[str, dict[str, Any]]:
    """Partner name -> hyperparameters to try: ``config.partner`` with its own, each alternative with its defaults."""
    return {config.partner: dict(config.partner_params), **{name: {} for name in config.alternatives}}


@torch.no_grad()
def search_fusion(
    neural: Any,
    partners: Mapping[str, Any],
    valid: SessionData,
    catalog: ItemCatalog,
    grid: list[tuple[str, float]],
    *,
    k: int = 20,
    protocol: str = "all_prefixes",
    batch_size: int = 512,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Validation metrics (HR, MRR, NDCG at ``k``) of every fitted partner with every (rule, weight), in one pass.

    Every prefix of ``valid`` (``protocol``), its most recent ``neural.config.max_len`` clicks, full ranking
    and pessimistic ties, as `hiersrec.eval.protocol.evaluate` ranks them; the ranks are `FusedRanker`'s. Each
    batch is scored by the neural model once, whatever the number of partners.

    Returns:
        One ``{"partner", "rule", "weight", "metrics"}`` per triple: partner by partner (``partners``' order),
        each in ``grid`` order.
    """
    max_len = getattr(getattr(neural, "config", None), "max_len", 50)
    targets = valid.target_positions(protocol)
    triples = [(name, rule, weight) for name in partners for rule, weight in grid]
    sums = [MetricSums() for _ in triples]
    batches = iter_prefix_batches(valid, catalog, targets, batch_size, max_len)
    with progress(total=targets.size, desc="fusion", unit="case", disable=not show_progress, leave=False) as bar:
        for batch in batches:
            neural_scores = neural.score(batch)  # shared: a ranker only sets its padding column to -inf
            rankers = {name: FusedRanker(neural_scores, partner.score(batch), batch.target_items)
                       for name, partner in partners.items()}  # fmt: skip
            for triple_sums, (name, rule, weight) in zip(sums, triples, strict=True):
                triple_sums.add_ranks(rankers[name].ranks(rule, weight), [k])
            bar.update(len(batch))
    n_cases = int(targets.size)
    return [
        {"partner": name, "rule": rule, "weight": weight, "metrics": triple_sums.means(n_cases)}
        for triple_sums, (name, rule, weight) in zip(sums, triples, strict=True)
    ]


class FusedRanker:
    """Pessimistic target ranks under `fuse_scores` for many (rule, weight) pairs, without (B, V) work per pair.

    A fused score differs from a monotone shift of the neural score only where the partner has evidence, and
    the partner scores few items of each row. So the items without evidence are sorted once per batch by
    their neural score and, for each pair, counted by a binary search against the target's fused score;
    the items with evidence are scored one by one. The ranks are those of
    ``target_ranks(fuse_scores(neural, partner, rule, weight), targets)`` (up to float rounding of
    near-equal scores).

    Args:
        neural: (B, V) neural scores, column 0 = -inf.
        partner: (B, V) partner scores (-inf or 0 where it has no evidence).
        targets: (B,) target item indices.
    """

    def __init__(self, neural: torch.Tensor, partner: torch.Tensor, targets: torch.Tensor) -> None:
        neural = neural.float()
        neural[:, 0] = float("-inf")
        evidence = torch.nan_to_num(partner.float(), nan=0.0, neginf=0.0, posinf=0.0).clamp_(min=0.0)
        evidence[:, 0] = 0.0
        tiny = torch.finfo(torch.float32).tiny
        self._targets = targets.unsqueeze(1)
        rows, columns = evidence.nonzero(as_tuple=True)
        self._rows = rows
        self._n_rows = neural.shape[0]
        without = evidence == 0  # these rank by the neural score alone
        base = {"logit": neural, "probability": torch.log_softmax(neural, dim=1)}
        # Sorted neural scores of the items without evidence (the others set to -inf, never counted).
        self._sorted = {rule: values.masked_fill(~without, float("-inf")).sort(dim=1).values
                        for rule, values in base.items()}  # fmt: skip
        self._base = {rule: values[rows, columns] for rule, values in base.items()}
        self._target_base = {rule: values.gather(1, self._targets) for rule, values in base.items()}
        share = evidence / evidence.sum(dim=1, keepdim=True).clamp(min=tiny)
        scaled = evidence / evidence.amax(dim=1, keepdim=True).clamp(min=tiny)
        self._evidence = {"probability": share[rows, columns], "logit": scaled[rows, columns]}
        self._target_evidence = {
            "probability": share.gather(1, self._targets),
            "logit": scaled.gather(1, self._targets),
        }
        self._target_without = without.gather(1, self._targets)
        self._is_target = columns == targets[rows]

    def ranks(self, rule: str, weight: float) -> torch.Tensor:
        """(B,) float32 pessimistic ranks of the targets under ``rule`` and ``weight``."""
        target = _combine(rule, weight, self._target_base[rule], self._target_evidence[rule])  # (B, 1)
        shift = math.log1p(-weight) if rule == "probability" else 0.0  # an item without evidence: base + shift
        # A target without evidence is compared by its own base score: it always counts itself, exactly.
        threshold = torch.where(self._target_without, self._target_base[rule], target - shift)
        sorted_base = self._sorted[rule]
        without = sorted_base.shape[1] - torch.searchsorted(sorted_base, threshold.contiguous(), side="left").squeeze(1)
        scored = _combine(rule, weight, self._base[rule], self._evidence[rule])
        # The target counts itself once, not through a comparison with its own score computed a second time
        # (the two computations may round differently).
        beaten = ((scored >= target.squeeze(1)[self._rows]) & ~self._is_target).float()
        with_evidence = torch.zeros(self._n_rows).index_add_(0, self._rows, beaten)
        ranks = without.float() + with_evidence + (~self._target_without.squeeze(1)).float()
        assert bool((ranks >= 1).all()), "a target must count itself"
        return ranks


def _combine(rule: str, weight: float, base: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    # `fuse_scores` of one item from its neural base score (log-softmax or logit) and its partner evidence.
    if rule == "logit":
        return base + weight * evidence
    if weight == 0.0:
        return base
    return torch.logaddexp(base + math.log1p(-weight), evidence.log() + math.log(weight))


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
    """The neural model fused with its configured partner (or the best of its alternatives), chosen on ``valid``.

    Args:
        neural: the trained neural model (eval mode).
        config: partner, its hyperparameters, alternatives, rules and weight grid (or a fixed weight).
        train: the sessions the neural model was trained on (the partners are fitted on them for the search).
        valid: the validation tail; None only with a fixed ``config.weight`` and no alternatives (a refit has
            no validation).
        all_train: every training session (the partner of the saved model is refitted on them); None: ``train``.
        catalog: item attributes.
        k: the cutoff of the selection metric MRR@k.
        protocol: the validation cases (``"all_prefixes"`` or ``"last_item"``).
        show_progress: progress bar over the validation cases.

    Raises:
        ValueError: no validation sessions where something is left to choose.
    """
    started = time.perf_counter()
    grid = fusion_grid(config)
    candidates = fusion_partners(config)
    # An alternative that cannot work on this shop (text-kNN without item text) is left out and said so; the
    # configured partner itself is fitted regardless, so that its own error explains the configuration.
    skipped = {name: reason for name in config.alternatives if (reason := MODELS[name].unusable_reason(catalog))}
    for name, reason in skipped.items():
        logger.info("fusion alternative %s skipped: %s", name, reason)
        del candidates[name]
    selected_by = f"mrr@{k}"
    if len(grid) == 1 and len(candidates) == 1 and valid is None:
        name, (rule, weight) = config.partner, grid[0]
        trials: list[dict[str, Any]] = [{"partner": name, "rule": rule, "weight": weight, "metrics": {}}]
    else:
        if valid is None:
            raise ValueError("choosing the fusion partner or weight needs validation sessions; "
                             "set fusion.weight and no fusion.alternatives for a refit")  # fmt: skip
        fitted = {name: make_model(name, params).fit(train, catalog) for name, params in candidates.items()}
        trials = search_fusion(neural, fitted, valid, catalog, grid, k=k, protocol=protocol,
                               show_progress=show_progress)  # fmt: skip
        # The first of equals wins: the configured partner before the alternatives, then grid order.
        best = trials[int(np.argmax([trial["metrics"][selected_by] for trial in trials]))]
        name, rule, weight = best["partner"], best["rule"], best["weight"]
        logger.info("fusion with %s: %s weight %g (validation %s %.4f)", name, rule, weight, selected_by,
                    best["metrics"][selected_by])  # fmt: skip
    params = candidates[name]
    final_partner = make_model(name, params).fit(all_train if all_train is not None else train, catalog)
    search = FusionSearch(name, params, rule, weight, trials, selected_by, time.perf_counter() - started, skipped)
    return FusedModel(neural, final_partner, rule, weight), search
