"""Learning-rate schedule as a multiplier of the base lr, stepped once per optimizer step.

Pure function of (step, steps_per_epoch), so a resumed run lands on the same schedule position.

Epochs are 1-based here, as users and the released SCM code count them. A step milestone `m`
is the epoch at whose start the lr is multiplied by gamma: milestones [10, 12, 20] give the base
lr for epochs 1-9, x0.1 for 10-11, x0.01 for 12-19 and x0.001 from epoch 20 on.
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
    steps_per_epoch = max(steps_per_epoch, 1)
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        epoch = step // steps_per_epoch + 1  # 1-based epoch this step belongs to
        return gamma ** bisect_right(list(milestones), epoch)
    if schedule == "cosine":
        total = max(epochs * steps_per_epoch - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / total, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule: unknown schedule {schedule!r}")


def lr_per_epoch(base_lr: float, epochs: int, steps_per_epoch: int = 1, **schedule) -> list[float]:
    """The lr in effect during each 1-based epoch: at its last optimizer step (what a cosine
    schedule reaches by the epoch's end; constant within the epoch for the step schedule)."""
    return [base_lr * lr_multiplier((e + 1) * steps_per_epoch - 1, steps_per_epoch, epochs, **schedule)
            for e in range(epochs)]


def last_step_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
    """The lr of the optimizer step just taken (the param group already holds the next one's)."""
    return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](max(scheduler.last_epoch - 1, 0))


def build_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `multiplier`; its state (last_epoch = steps taken) goes in checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
