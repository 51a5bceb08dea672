"""Validation metrics from whole-session forward passes: the evaluator's numbers without prefix copies.

`hiersrec.eval.protocol.evaluate` scores every prefix as its own padded row, so a session of n clicks is
encoded n - 1 times. During training the model can encode each validation session once and read the
query of every prefix from it (`HierSRec.encode_positions`), then rank with the same metric functions
and tie policy: the same metrics (a test checks equality with `evaluate`) at a fraction of the cost,
which matters when validation runs after every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import MetricSums, target_ranks
from hiersrec.eval.protocol import category_metrics_omitted
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
    sums = MetricSums()
    reports_categories = category_metrics_omitted(model, catalog) is None
    for rows in np.array_split(order, max(1, windows.n_targets_total // batch_targets)):
        batch, target_mask = windows.batch(rows, catalog)
        query, targets = model.encode_positions(batch.to(device), target_mask.to(device))
        sums.add_ranks(target_ranks(model.score_query(query), targets), ks)
        if reports_categories:
            sums.add_category_hits(query.category_logits.float(), item_category[targets])
    model.train(was_training)
    return sums.means(windows.n_targets_total)
