"""What one training batch is made of, on the host: the collated clips with their dataset positions (and colour
draws, when colours are augmented on the device), and the token ids of their texts."""
from __future__ import annotations

from typing import Any

import torch

from actionclip.train.config import TrainingConfig


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The data layer's batch plus "index" [B] (dataset positions, for per-clip template draws) and, when colours
    are augmented on the device, "color" [B, T, COLOR_PARAMS]."""
    from actionclip.data.loader import collate_clips

    batch = {**collate_clips(items), "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    if "color" in items[0]:
        batch["color"] = torch.stack([it["color"] for it in items])
    return batch


def batch_token_ids(texts: list[str], context_length: int, static_length: int | None) -> torch.Tensor:
    """Token ids [N, L] for one batch: L = its longest text (eager), or one fixed L for every batch under
    ``torch.compile`` (``static_length``; 0 = the context length), where a new L means a recompilation, at whatever
    step a batch's longest prompt first changes (a dynamic-shape recompile of the tiny-8 step took 80 s on 2 CPU
    cores; see tests/test_train_stages.py). Everything here runs on the host, so nothing waits for the device."""
    from actionclip import tokenize, trim_padding

    ids = tokenize(texts, context_length=context_length, truncate=True)
    trimmed = trim_padding(ids)
    if static_length is None:
        return trimmed
    length = static_length or context_length
    if trimmed.shape[1] > length:
        raise ValueError(f"a text of {trimmed.shape[1]} tokens is longer than the job's text_length {length}")
    return ids[:, :length]


def token_length(texts: list[str], context_length: int) -> int:
    """Tokens in the longest of ``texts`` (SOT and EOT included), for ``TrainingJob.text_length``."""
    return int(batch_token_ids(texts, context_length, None).shape[1])


def device_color_transform(cfg: TrainingConfig, device: torch.device, dataset: Any):
    """The dataset's TrainTransform, switched to leave colours to the device, when this run augments colours there."""
    from actionclip.data import TrainTransform

    transform = getattr(dataset, "transform", None)
    on_device = cfg.color_on == "device" or (cfg.color_on == "auto" and device.type == "cuda")
    if not (on_device and isinstance(transform, TrainTransform) and transform.changes_color):
        return None
    transform.color_on_device = True
    return transform
