"""How the training loop trains: `TrainConfig`, the ``[train]`` table of a run configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hiersrec.bounds import check_bounds
from hiersrec.errors import ConfigError
from hiersrec.train.optim import Schedule

_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")
_BOUNDS = {
    "epochs": (1, 100_000),
    "batch_targets": (1, 1 << 24),
    "lr": (0.0, 10.0),
    "weight_decay": (0.0, 10.0),
    "beta2": (0.0, 1.0),
    "warmup_steps": (0, 1 << 31),
    "min_lr_ratio": (0.0, 1.0),
    "grad_clip": (0.0, 1e6),
    "patience": (0, 100_000),
    "valid_k": (1, 10_000),
    "seed": (0, (1 << 63) - 1),
    "threads": (0, 1024),
    "eval_batch_size": (1, 1 << 24),
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train (defaults: the diginetica preset's)."""

    epochs: int = 20  # maximum number of passes over the training sessions
    batch_targets: int = 2048  # training targets (predicted clicks) per optimiser step
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decay on weight matrices (never on embeddings, norms, biases)
    beta2: float = 0.98  # AdamW second-moment decay
    warmup_steps: int = 200  # linear warm-up steps
    schedule: Schedule = "cosine"  # decay after warm-up: cosine, linear or constant
    min_lr_ratio: float = 0.02  # final learning rate / peak
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    patience: int = 3  # epochs without a better validation metric before stopping
    valid_k: int = 20  # cutoff of the early-stopping metric MRR@k
    seed: int = 42  # data order, initialisation and dropout
    threads: int = 0  # torch CPU threads (0 = torch's default)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for training (validation is always fp32)
    eval_batch_size: int = 1024  # validation prefixes scored at once
    show_progress: bool = True  # progress bar on stderr

    def __post_init__(self) -> None:
        check_bounds(self, "train", _BOUNDS)
        if not self.lr > 0 or not self.beta2 < 1:
            raise ConfigError(f"train.lr must be > 0 and train.beta2 in [0, 1), got {self.lr} and {self.beta2}")
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.schedule not in ("cosine", "linear", "constant") or self.precision not in ("fp32", "bf16"):
            raise ConfigError("train.schedule must be cosine, linear or constant; train.precision fp32 or bf16")
