"""Resumable training checkpoints, written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects):

    {"format": "actionclip-train/1", "model": state_dict, "optimizer": ..., "scheduler": ...,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor] , "numpy": {...}, "python": [...]},
     "progress": {"epoch": int, "batch_in_epoch": int, "global_step": int}, "run_id": str | None,
     "config": dict, "history": dict}

Files are ``step-<global_step:08d>.pt`` in the checkpoint directory; the newest is found by step number. Writing goes
to a temporary file in the same directory that is renamed over the final name, so a kill never leaves a torn file.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actionclip.errors import CheckpointError

FORMAT = "actionclip-train/1"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_path(ckpt_dir: str | Path, global_step: int) -> Path:
    return Path(ckpt_dir) / f"step-{global_step:08d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint files in ``ckpt_dir``, oldest first (temporary files are ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(ckpt_dir: str | Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``state["progress"]["global_step"]``; keep only the newest ``keep``."""
    path = atomic_torch_save({"format": FORMAT, **state}, checkpoint_path(ckpt_dir, state["progress"]["global_step"]))
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely; ``CheckpointError`` if missing, unreadable or not ours."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training checkpoint {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an actionclip training checkpoint (format {FORMAT!r})")
    return state


# ------------------------------------------------------------------------------------------------------------ RNG
def capture_rng() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
