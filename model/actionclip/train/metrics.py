"""Classification metrics from class probabilities."""
from __future__ import annotations

import torch
from torch import Tensor


def topk_correct(probs: Tensor, labels: Tensor, k: int) -> Tensor:
    """[N] bool: the true label is among the ``k`` highest-scoring classes. probs [N, C], labels [N]."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[C, C] long counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(probs: Tensor, labels: Tensor, class_names: list[str]) -> dict:
    """top1, top5, mean_class_acc (over classes present), per_class {name: acc}, confusion [[...]] and count n.

    probs: [N, C] scores (any monotone score works); labels: [N] in 0..C-1.
    """
    n, c = probs.shape
    if n == 0:
        return {"n": 0, "top1": float("nan"), "top5": float("nan"), "mean_class_acc": float("nan"),
                "per_class": {}, "confusion": []}
    pred = probs.argmax(dim=1)
    cm = confusion_matrix(pred, labels, c)
    support = cm.sum(dim=1)
    present = support > 0
    per_class_acc = cm.diag().float() / support.clamp(min=1).float()
    return {
        "n": int(n),
        "top1": float(topk_correct(probs, labels, 1).float().mean()),
        "top5": float(topk_correct(probs, labels, 5).float().mean()),
        "mean_class_acc": float(per_class_acc[present].mean()) if present.any() else float("nan"),
        "per_class": {class_names[i]: float(per_class_acc[i]) for i in range(c) if present[i]},
        "confusion": cm.tolist(),
    }
