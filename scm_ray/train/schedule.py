"""Learning-rate schedule as a multiplier of the base lr, stepped once per optimizer step.

Pure function of (step, steps_per_epoch), so a resumed run lands on the same schedule position.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

import torch


def lr_multiplier(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    schedule: str,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    epoch_float = step / max(steps_per_epoch, 1)
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** bisect_right(list(milestones), int(epoch_float))
    if schedule == "cosine":
        total = max(epochs * steps_per_epoch - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / total, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule: unknown schedule {schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `multiplier`; its state (last_epoch = steps taken) goes in checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
