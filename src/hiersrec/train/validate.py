"""Validation metrics from whole-session forward passes: the evaluator's numbers without prefix copies.

`hiersrec.eval.protocol.evaluate` scores every prefix as its own padded row, so a session of n clicks is
encoded n - 1 times. During training the model can encode each validation session once and read the
query of every prefix from it (`HierSRec.encode_positions`), then rank with the same metric functions
and tie policy: the same metrics (a test checks equality with `evaluate`) at a fraction of the cost,
which matters when validation runs after every epoch.

With several training processes (`hiersrec.train.distributed`) the batches are dealt out in turn: rank r
scores batches r, r + W, ... The per-batch metric sums and case counts are summed over the ranks (each
batch is scored by exactly one rank) and then added up in batch order, as one process adds them: the
metrics are those of one process to the last bit, whatever the number of processes and cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import CATEGORY_KS, RANK_METRICS, MetricSums, target_ranks
from hiersrec.eval.protocol import category_metrics_omitted
from hiersrec.train import distributed
from hiersrec.train.batches import SessionWindows


@torch.no_grad()
def validation_metrics(
    model: torch.nn.Module,
    sessions: SessionData,
    catalog: ItemCatalog,
    *,
    ks: Sequence[int] = (20,),
    protocol: str = "all_prefixes",
    batch_targets: int = 1024,
) -> dict[str, float]:
    """``hr@k``, ``mrr@k``, ``ndcg@k``, ``cat_acc@1/5`` over the cases of ``protocol`` in ``sessions``.

    Pessimistic ties and full ranking, as `evaluate` with its defaults; prefixes longer than the model's
    ``max_len`` keep their most recent clicks, as there.

    Args:
        model: a model with ``encode_positions``, ``score_query`` and ``config.max_len`` (`HierSRec`).
        sessions: the validation sessions.
        catalog: item attributes (for the batches).
        ks: cutoffs.
        protocol: ``"all_prefixes"`` (every prefix) or ``"last_item"`` (each session's last click only).
        batch_targets: prefixes scored at once.

    Under torchrun every rank must call it (with the same arguments): each scores its share of the batches.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if protocol not in ("all_prefixes", "last_item"):
        raise ValueError(f"unknown protocol {protocol!r}; use 'all_prefixes' or 'last_item'")
    rows_of = SessionWindows.from_sessions if protocol == "all_prefixes" else SessionWindows.last_items
    windows = rows_of(sessions, model.config.max_len)
    order = np.argsort(windows.lengths, kind="stable")  # similar lengths together: little padding
    item_category = torch.from_numpy(catalog.item_category).to(device)
    reports_categories = category_metrics_omitted(model, catalog) is None
    keys = [f"{name}@{k}" for k in ks for name in RANK_METRICS]
    keys += [f"cat_acc@{k}" for k in CATEGORY_KS] if reports_categories else []
    batches = np.array_split(order, max(1, windows.n_targets_total // batch_targets))
    world = distributed.world()
    # (batch, metric sums + case count); a batch's row stays 0 on the ranks that do not score it.
    per_batch = torch.zeros(len(batches), len(keys) + 1, dtype=torch.float64, device=device)
    for index in range(world.rank, len(batches), world.size):
        batch, target_mask = windows.batch(batches[index], catalog)
        query, targets = model.encode_positions(batch.to(device), target_mask.to(device))
        batch_sums = MetricSums()
        batch_sums.add_ranks(target_ranks(model.score_query(query), targets), ks)
        if reports_categories:
            batch_sums.add_category_hits(query.category_logits.float(), item_category[targets])
        per_batch[index] = torch.tensor(
            [*(batch_sums.totals[key] for key in keys), targets.numel()], dtype=torch.float64
        )
    per_batch = distributed.sum_over_ranks(per_batch).cpu()
    sums = MetricSums()
    for row in per_batch:  # in batch order, as one process adds the batches up
        for key, total in zip(keys, row[:-1], strict=True):
            sums.add(key, total.reshape(1))
    n_cases = int(per_batch[:, -1].sum())
    assert n_cases == windows.n_targets_total, "every validation case is scored exactly once"
    model.train(was_training)
    return sums.means(n_cases)
