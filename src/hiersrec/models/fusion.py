"""Score fusion: a neural model's next-item scores joined with a fitted partner's session-neighbour evidence.

What wins on diginetica scores candidates by their similarity to the individual items of the session (kNN,
SR, SLIST); a Transformer's single session vector sees the session differently, so the two make different
mistakes. `FusedModel` ranks by one of two rules (`FUSION_RULES`), with a weight chosen on the validation
tail (`hiersrec.train.fusion`):

* ``"probability"``: ``(1 - w) * softmax(neural) + w * partner / sum(partner)``, a mixture of the neural
  model's next-item distribution and the partner's scores normalised to a distribution (a row where the
  partner scores nothing keeps the neural distribution, scaled by ``1 - w``);
* ``"logit"``: ``neural + w * partner / max(partner)``: the partner's scores, scaled to [0, 1] per row, added
  to the neural logits.

With ``w = 0`` both rank exactly as the neural model does. The partner's scores are its ``score`` output with
``-inf`` (padding, excluded items) read as 0; a fused model keeps the neural model's category head, so category
candidates work as they do for the neural model alone (ranked by the fused scores).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hiersrec.data.batching import SessionBatch, last_clicks
from hiersrec.errors import ConfigError

FUSION_RULES = ("probability", "logit")


def fuse_scores(neural: torch.Tensor, partner: torch.Tensor, rule: str, weight: float) -> torch.Tensor:
    """(B, V) fused scores of a batch; column 0 (padding) is -inf.

    Args:
        neural: (B, V) the neural model's scores (logits; -inf where it never recommends).
        partner: (B, V) the partner's scores (>= 0 where it scores; -inf or 0 elsewhere).
        rule: a name of `FUSION_RULES`.
        weight: the partner's weight (0: the neural model's ranking); in [0, 1] for ``"probability"``.
    """
    evidence = torch.nan_to_num(partner.float(), nan=0.0, neginf=0.0, posinf=0.0).clamp_(min=0.0)
    neural = neural.float()
    if rule == "probability":
        # log((1 - w) p + w s) computed in log space: exact for w = 0 and no underflow of small probabilities.
        total = evidence.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        if weight >= 1.0:
            fused = (evidence / total).log()
        else:
            fused = torch.log_softmax(neural, dim=1) + math.log1p(-weight)
            if weight > 0.0:
                # A partner scores a few hundred of the V items: where its share is 0, log-add leaves the neural
                # term unchanged, so only the scored entries are touched (a served request's full-width log and
                # log-add were most of the fusion's cost).
                rows, items = evidence.nonzero(as_tuple=True)
                log_partner = (evidence[rows, items] / total[rows, 0]).log() + math.log(weight)
                fused[rows, items] = torch.logaddexp(fused[rows, items], log_partner)
    elif rule == "logit":
        peak = evidence.amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        fused = neural + weight * (evidence / peak)
    else:
        raise ConfigError(f"unknown fusion rule {rule!r}; choose one of {list(FUSION_RULES)}")
    fused[:, 0] = float("-inf")
    return fused


def check_fusion(rule: str, weight: float) -> None:
    """`ConfigError` for an unknown rule or a weight outside the rule's range."""
    if rule not in FUSION_RULES:
        raise ConfigError(f"unknown fusion rule {rule!r}; choose one of {list(FUSION_RULES)}")
    if not weight >= 0.0 or (rule == "probability" and weight > 1.0) or weight == float("inf"):
        high = "1" if rule == "probability" else "inf"
        raise ConfigError(f"fusion weight must be in [0, {high}) for rule {rule!r}, got {weight}")


class FusedModel:
    """A neural model whose item scores are fused with a fitted partner's (`fuse_scores`).

    Args:
        neural: the trained neural model (HierSRec, SASRec...): it reads the sessions and predicts categories.
        partner: a fitted model (VSTAN, SR...) over the same item indices.
        rule: a name of `FUSION_RULES`.
        weight: the partner's weight.
    """

    def __init__(self, neural: Any, partner: Any, rule: str, weight: float) -> None:
        check_fusion(rule, weight)
        self.neural = neural
        self.partner = partner
        self.rule = rule
        self.weight = float(weight)
        if isinstance(neural, torch.nn.Module):
            neural.eval()
        if callable(getattr(neural, "score_categories", None)):  # evaluation and candidates look for it
            self.score_categories = neural.score_categories

    @property
    def config(self) -> Any:
        """The neural model's configuration (its ``max_len`` is the context both models read)."""
        return self.neural.config

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 fused scores, column 0 (padding) = -inf.

        Both models read each session's most recent ``config.max_len`` clicks (a kNN partner would read all
        of them otherwise, so a ranking would depend on how much history the caller passed).
        """
        batch = last_clicks(batch, self.config.max_len)
        neural = self.neural.score(batch)
        if self.weight == 0.0:  # the neural ranking exactly, without the partner's cost
            return fuse_scores(neural, torch.zeros_like(neural), self.rule, 0.0)
        return fuse_scores(neural, self.partner.score(batch), self.rule, self.weight)

    @property
    def predicts_categories(self) -> bool:
        """Whether the neural model's category head is trained."""
        return getattr(self.neural, "predicts_categories", hasattr(self.neural, "score_categories"))

    def candidate_support(self) -> str | None:
        """None when the neural model has a category head: candidates are its categories, ranked by fused scores."""
        if not callable(getattr(self.neural, "score_categories", None)):
            return f"{type(self.neural).__name__} predicts no categories, so there are no category candidates"
        return None

    def describe(self) -> dict[str, Any]:
        """The neural model's description with the partner and the fusion rule."""
        return {
            **self.neural.describe(),
            "fusion": {"partner": self.partner.describe(), "rule": self.rule, "weight": self.weight},
        }
