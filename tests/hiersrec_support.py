"""A tiny HierSRec for the model, training and artifact tests (sizes odd and small, as the style asks)."""

from __future__ import annotations

import torch

from hiersrec.models.hiersrec import HierSRec, HierSRecConfig, ItemFeatures

MAX_LEN = 7


def build_model(catalog, seed: int = 0, perturb: bool = False, **overrides) -> HierSRec:
    """HierSRec with d_model 16 and max_len 7 on ``catalog``; ``perturb`` adds noise to every parameter.

    Perturbing makes heads and biases non-trivial, so that equivalence tests cannot pass by zeros.
    """
    torch.manual_seed(seed)
    options = {"d_model": 16, "n_heads": 2, "d_ff": 24, "d_category": 6, "d_feed": 5, "max_len": MAX_LEN}
    config = HierSRecConfig(**{**options, **overrides}).with_catalog(catalog)
    model = HierSRec(config, ItemFeatures.from_catalog(catalog, config))
    if perturb:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model
