"""Linear warm-up then cosine decay, evaluated at the fractional epoch (ActionCLIP's WarmupCosineAnnealingLR).

ActionCLIP updates the learning rate every 10 iterations; this one updates it every optimiser step, which is the same
curve sampled more finely.
"""
from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer


def lr_factor(epoch: float, warmup_epochs: float, total_epochs: float) -> float:
    """Multiplier of the base learning rate at fractional ``epoch``.

    Linear from 0 to 1 over ``warmup_epochs``, then 0.5 * (1 + cos(pi * progress)) down to 0 at ``total_epochs``;
    0 after the end. With ``total_epochs <= warmup_epochs`` the rate stays at 1 after warm-up.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return epoch / warmup_epochs
    span = total_epochs - warmup_epochs
    if span <= 0:
        return 1.0
    progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each parameter group's ``lr`` to ``base_lr * lr_factor(step / steps_per_epoch)``.

    Call :meth:`step` after every optimiser step. The base rates are read once from the groups' ``lr`` at
    construction and kept in ``group["base_lr"]``; the state (step count) round-trips through ``state_dict``.
    """

    def __init__(self, optimizer: Optimizer, warmup_epochs: float, total_epochs: float, steps_per_epoch: int) -> None:
        self.optimizer = optimizer
        self.warmup_epochs = float(warmup_epochs)
        self.total_epochs = float(total_epochs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    @property
    def epoch(self) -> float:
        return self.step_count / self.steps_per_epoch

    def _apply(self) -> None:
        factor = lr_factor(self.epoch, self.warmup_epochs, self.total_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "warmup_epochs": self.warmup_epochs,
                "total_epochs": self.total_epochs, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
