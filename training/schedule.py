"""Learning-rate schedules: linear warmup, then cosine or linear decay to a floor, or constant."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate(
    step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int, schedule: str = "cosine"
) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    if schedule == "linear":
        return lr - progress * (lr - min_lr)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def warmup_cosine(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """``learning_rate`` with the cosine schedule."""
    return learning_rate(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, max_steps=max_steps)
