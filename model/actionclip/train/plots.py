"""PNG plots for evaluation and training (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    import numpy as np

    plt = _plt()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2 + 0.55 * n, 1.5 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, plt, path)


def bars_png(values: dict[str, float], path: str | Path, title: str, xlabel: str = "accuracy") -> Path:
    """Horizontal bars, one per entry (per-class accuracy, per-template score)."""
    plt = _plt()
    names = list(values)
    fig, ax = plt.subplots(figsize=(7, 1 + 0.3 * len(names)))
    ax.barh(range(len(names)), [values[k] for k in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, plt, path)


def curves_png(history: dict, path: str | Path, title: str = "training") -> Path:
    """Loss and learning rate per step, and per-epoch validation accuracy when recorded."""
    plt = _plt()
    steps = history.get("steps", [])
    epochs = history.get("epochs", [])
    val_keys = [k for k in ("val_top1", "val_top5") if any(k in e for e in epochs)]
    ncols = 3 if val_keys else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.5 * ncols, 3.4))
    x = [s["step"] for s in steps]
    axes[0].plot(x, [s["loss"] for s in steps], lw=0.8)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[1].plot(x, [s["lr"] for s in steps], lw=0.8, color="tab:orange")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("lr (text group)")
    for k in val_keys:
        pts = [(e["step"], e[k]) for e in epochs if k in e]
        axes[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    if val_keys:
        axes[2].set_xlabel("step")
        axes[2].set_ylim(0, 1)
        axes[2].legend()
    fig.suptitle(title)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
