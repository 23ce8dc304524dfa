"""Opt-in int8 CPU inference: PyTorch dynamic quantisation of every ``nn.Linear`` (weights int8, activations
quantised on the fly). Attention projections, MLPs and the fusion transformer are Linear layers, which is where a
ViT spends most of its CPU time; convolutions (patch embedding) and LayerNorms stay float32."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an int8 dynamically quantised copy of ``model`` (CPU only; use for inference, not training)."""
    from torch.ao.quantization import quantize_dynamic

    target = model if inplace else copy.deepcopy(model)
    target = target.to("cpu").eval()
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager API still works in this torch release
        warnings.simplefilter("ignore")
        return quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
