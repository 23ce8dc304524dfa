"""Shared evaluation helpers: encode clips (all views), build the prompt bank, score with ActionCLIP's rule.

Used by the prompt stage (per-template zero-shot accuracy), fine-tuning's per-epoch validation and the evaluate
stage (multi-view, zero-shot on held-out labels).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from actionclip.train.precision import autocast, autocast_dtype


def eval_loader(rows: Sequence[dict], labels: Sequence[str], model: nn.Module, batch_size: int, num_workers: int,
                num_clips: int = 1, num_crops: int = 1, device: torch.device | None = None) -> DataLoader:
    """Sequential loader of test-mode clips at the model's frame count and image size."""
    from actionclip.data import VideoClipDataset, make_loader

    ds = VideoClipDataset(list(rows), list(labels), model.num_frames, model.image_size, mode="test",
                          num_clips=num_clips, num_crops=num_crops)
    return make_loader(ds, batch_size, shuffle=False, workers=num_workers, distributed=False)


@torch.no_grad()
def encode_clips(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "auto",
                 max_clips: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Encode every clip of ``loader``.

    Returns:
        feats: [N, V, D] L2-normalised video features (V views per clip = clips x crops), float32 on CPU.
        labels: [N] label index per clip (-1 where the clip's label is not in the loader's label list).
        clips_per_s: videos per second for decode + encode (all views of a video count as one).
    """
    from actionclip.data import normalize_video

    model.eval()
    amp = autocast_dtype(precision, device)
    feats, labels, n = [], [], 0
    t0 = time.perf_counter()
    for batch in loader:
        video = batch["video"]
        if video.dim() == 5:  # [B, T, 3, H, W]: one view per clip
            video = video.unsqueeze(1)
        b, v = video.shape[:2]
        x = normalize_video(video.flatten(0, 1).to(device, non_blocking=True))
        with autocast(amp, device):
            out = model.encode_video(x)
        feats.append(F.normalize(out.float(), dim=-1).view(b, v, -1).cpu())
        labels.append(torch.as_tensor(batch["label"]).long())
        n += b
        if max_clips and n >= max_clips:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    if not feats:
        return torch.empty(0, 1, 0), torch.empty(0, dtype=torch.long), 0.0
    f, y = torch.cat(feats), torch.cat(labels)
    if max_clips:
        f, y = f[:max_clips], y[:max_clips]
    return f, y, n / max(elapsed, 1e-9)


@torch.no_grad()
def prompt_bank(model: nn.Module, labels: Sequence[str], templates: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """[K, C, D] L2-normalised prompt features on CPU (template-major: row k, column c = template k on label c).

    Computed afresh on every call (``prompt_features``), not through ``actionclip.encode_prompts``' cache: during
    training the weights change under a fused optimiser, which does not bump the tensors' version counters that the
    cache keys on.
    """
    from actionclip.zeroshot import prompt_features

    model.eval()
    return prompt_features(model, list(labels), list(templates), batch_size).cpu()


def view_scores(feats: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """ActionCLIP scoring over views: probs [N, C] = mean over views of ``actionclip_scores`` (x100, softmax over
    classes per template, mean over templates). feats [N, V, D], bank [K, C, D]."""
    from actionclip import actionclip_scores

    n, v, d = feats.shape
    return actionclip_scores(feats.reshape(n * v, d), bank).view(n, v, -1).mean(dim=1)


def per_template_top1(feats: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor) -> list[float]:
    """Top-1 accuracy of each template alone: [K] floats. feats [N, V, D], bank [K, C, D], labels [N]."""
    return [float((view_scores(feats, bank[k:k + 1]).argmax(1) == labels).float().mean()) for k in range(bank.shape[0])]
