"""Resume policy: which training checkpoint a run continues from, and whether it may.

``resume`` is "auto" (the newest checkpoint in ``out_dir/checkpoints``, if any), "never", or a checkpoint file or
folder. A checkpoint continues only a run with the same data order and schedule (``RESUME_MUST_MATCH``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from actionclip.errors import CheckpointError, ConfigError
from actionclip.train import checkpointing as ckpt
from actionclip.train.config import TrainingConfig

# Config keys that fix the data order and the schedule: a checkpoint cannot continue a run that changed them.
RESUME_MUST_MATCH = ("seed", "batch_size", "accum_steps", "epochs", "warmup_epochs", "loss")


def find_resume_checkpoint(cfg: TrainingConfig) -> Path | None:
    """The checkpoint a run continues from, or None to start afresh."""
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        return ckpt.latest_checkpoint(cfg.output_dir / "checkpoints")
    path = Path(cfg.resume)
    if path.is_dir():
        found = ckpt.latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no training checkpoint (step-*.pt) in {path}")
        return found
    if not path.is_file():
        raise CheckpointError(f"resume checkpoint not found: {path}")
    return path


def check_resumable(cfg: TrainingConfig, state: dict[str, Any], path: Path) -> None:
    """``ConfigError`` when the checkpoint at ``path`` was written by a run with another data order or schedule."""
    old = state.get("config", {})
    for key in RESUME_MUST_MATCH:
        if key in old and getattr(cfg, key, None) != old[key]:
            raise ConfigError(
                f"cannot resume from {path}: it was written with {key}={old[key]!r}, this run has "
                f"{key}={getattr(cfg, key)!r} (use --resume never or another --out-dir)"
            )
