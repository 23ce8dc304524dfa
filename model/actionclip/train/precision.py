"""Mixed precision: which autocast dtype a ``precision`` setting means on a device, and the context that applies it
(training and scoring both use these). bf16 keeps float32's exponent range, so no loss scaling is needed."""
from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for float32; bfloat16 for "bf16", and for "auto" on CUDA."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for float32 (None)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()
