"""AdamW with decoupled weight decay on matrices only, and warm-up + decay learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from hiersrec.config import Schedule


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on Linear weight matrices; none on biases, norms and embeddings.

    Decaying embeddings shrinks the vectors of rare items, which get few gradient updates to push back
    (the usual minGPT rule); biases and norm gains are not "weights" in the regularisation sense.
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            is_matrix = isinstance(module, nn.Linear) and name == "weight"
            (decay if is_matrix else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: Schedule, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Linear warm-up from ~0 to 1 over ``warmup_steps``, then ``cosine`` or ``linear`` decay to ``min_ratio``
    at ``total_steps``, or ``constant`` 1.

    Example:
        >>> [round(lr_factor(s, 2, 6, "linear"), 2) for s in range(6)]
        [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following `lr_factor` (its ``state_dict`` holds the step count, for resuming)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, schedule, min_ratio)
    )
