"""Contrastive objectives for video-text training.

All functions take L2-normalised features. In a distributed run, call :func:`gather_features` first: every rank then
computes the loss over the *global* batch, with gradient flowing only through its own slice. Because DDP averages
gradients over ranks, the training loop multiplies the loss it back-propagates by the world size, so that a run on
N processes takes exactly the step one process would take on the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ActionCLIP's target: softmax(10 * G) over each row, G the same-label matrix.
KL_TARGET_SCALE = 10.0


def gather_features(x: Tensor) -> Tensor:
    """All-gather ``x`` [n, ...] from every rank -> [world * n, ...] in rank order.

    The local slice is the autograd-tracked input itself; the other ranks' slices are constants. Every rank must pass
    the same ``n``. Without an initialised process group this returns ``x`` unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x  # keep the gradient path for this rank's slice
    return torch.cat(parts, dim=0)


def same_label_matrix(labels: Tensor) -> Tensor:
    """G [N, N] float: 1 where labels match (including the diagonal), else 0. ``labels`` is [N] (any dtype)."""
    return (labels[:, None] == labels[None, :]).float()


def actionclip_kl_loss(video: Tensor, text: Tensor, labels: Tensor, logit_scale: Tensor | float) -> Tensor:
    """ActionCLIP's objective: symmetric KL between the similarity distributions and a same-label target.

    Args:
        video: [N, D] normalised video features.
        text: [N, D] normalised text features (one prompt per clip, from the clip's label).
        labels: [N] class index per clip; every same-label pair counts as a positive, whatever the template.
        logit_scale: the multiplier exp(learned logit_scale) (scalar tensor or float).

    Returns:
        scalar: 0.5 * (KL(Q || softmax(L_v)) + KL(Q || softmax(L_t))), each averaged over rows ("batchmean"),
        with L_v = s * video @ text.T, L_t = L_v.T and Q = softmax(10 * G) row-wise.
    """
    logits = logit_scale * video @ text.t()
    target = F.softmax(KL_TARGET_SCALE * same_label_matrix(labels).to(logits.dtype), dim=1)
    # G is symmetric, so the same target rows serve both directions.
    loss_v = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
    loss_t = F.kl_div(F.log_softmax(logits.t(), dim=1), target, reduction="batchmean")
    return 0.5 * (loss_v + loss_t)


def infonce_loss(video: Tensor, text: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE with diagonal targets (CLIP pre-training; MMAction2's ActionCLIP fine-tuning loss).

    Args:
        video: [N, D] normalised video features; text: [N, D] normalised text features, pair i = (video i, text i).
        logit_scale: exp(learned logit_scale).

    Returns:
        scalar: 0.5 * (CE(L_v, arange N) + CE(L_t, arange N)). Off-diagonal pairs are negatives even when they share
        a label or caption.
    """
    logits = logit_scale * video @ text.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def stage_loss(kind: str, video: Tensor, text: Tensor, labels: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Dispatch on the configured loss name: "kl" (ActionCLIP) or "infonce" / "clip" (diagonal targets)."""
    if kind == "kl":
        return actionclip_kl_loss(video, text, labels, logit_scale)
    if kind in ("infonce", "clip"):
        return infonce_loss(video, text, logit_scale)
    raise ValueError(f"unknown loss {kind!r}")
