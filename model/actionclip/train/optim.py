"""AdamW over the model's parameter groups, as ActionCLIP trains it.

Groups come from ``model.param_groups()`` ({"image", "text", "fusion"}; the text group holds ``logit_scale``).
Learning rates: text = lr, image = lr * visual_lr_mult, fusion = lr * fusion_lr_mult (ActionCLIP: 5e-6, 5e-6, 5e-5).
Weight decay applies to every parameter, biases and norms included, as in ActionCLIP.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from actionclip.errors import ConfigError


def freeze_towers(model: nn.Module, towers: Iterable[str]) -> None:
    """Turn off gradients for the named groups ("image", "text", "fusion")."""
    groups = model.param_groups()
    for name in towers:
        for p in groups[name]:
            p.requires_grad_(False)


def build_optimizer(
    model: nn.Module,
    lr: float,
    visual_lr_mult: float = 1.0,
    fusion_lr_mult: float = 10.0,
    weight_decay: float = 0.2,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with one parameter group per tower; frozen parameters (requires_grad False) are left out.

    Each group carries a ``name`` key ("image", "text", "fusion") so logs can report per-group learning rates.
    """
    mults = {"text": 1.0, "image": visual_lr_mult, "fusion": fusion_lr_mult}
    seen: set[int] = set()
    param_groups = []
    for name, params in model.param_groups().items():
        trainable = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in trainable)
        if trainable and mults.get(name, 1.0) > 0:
            param_groups.append({"params": trainable, "lr": lr * mults.get(name, 1.0), "name": name})
        elif trainable:  # a zero multiplier means "do not train this tower"
            for p in trainable:
                p.requires_grad_(False)
    if not param_groups:
        raise ConfigError("nothing to train: every parameter group is frozen")
    # The fused kernel is much faster on CPU too (the 49408-row token embedding dominates the update).
    fused = all(p.is_floating_point() for g in param_groups for p in g["params"])
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                             fused=fused)
