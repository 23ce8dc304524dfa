"""Small pieces every stage uses: seeding, dataset splits, metrics files, the stage's tracked lifetime."""
from __future__ import annotations

import json
import math
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from actionclip.errors import ConfigError
from actionclip.tracking import NullTracker, log_stage_start, open_tracker


def apply_threads(threads: int) -> None:
    """Set torch's CPU thread count when configured (0 keeps the default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def train_transform(cfg: Any, size: int):
    """The training clip transform a config asks for (None: the dataset's default for its mode)."""
    from actionclip.data import TrainTransform

    if not cfg.augment:
        return None
    t = TrainTransform(size)
    if not cfg.flip:
        t.flip_p = 0.0
    if not cfg.color_jitter:
        t.jitter_p, t.grayscale_p = 0.0, 0.0
    if not cfg.multiscale_crop:
        # only the full short side as crop size: a short-side square at one of the five fixed offsets, so the
        # clip keeps its whole content and scale (the synthetic actions' speed and size are part of the label)
        t.scales, t.max_distort, t.more_fix_crop = (1.0,), 0, False
    return t


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_dataset(path: str):
    """``PreparedDataset`` at ``path`` (a one-line ``DatasetError`` if it is not one)."""
    from actionclip.data import PreparedDataset

    if not path:
        raise ConfigError("no prepared dataset given (--data DIR)")
    return PreparedDataset.load(path)


def split_rows(ds: Any, split: str | Sequence[str], labels: Sequence[str] | None = None,
               require: bool = True) -> list[dict]:
    """Rows of ``split`` whose label is in ``labels`` (all rows when ``labels`` is None)."""
    try:
        rows = ds.rows(split)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if labels is not None:
        wanted = set(labels)
        rows = [r for r in rows if r.get("label") in wanted]
    if require and not rows:
        raise ConfigError(f"split {split!r} of {ds.root} has no usable clips")
    return rows


def jsonable(x: Any) -> Any:
    """Floats that JSON can hold (NaN/inf -> None), recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def write_json(path: str | Path, data: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def start_scoring_stage(cfg: Any) -> tuple[Path, Any, Any]:
    """The common start of the stages that only score (prompt, evaluate): validate the config, create the output
    folder, pick the device, load the dataset, set threads and seeds. Returns (out_dir, device, dataset)."""
    from actionclip.train.distributed import resolve_device

    cfg.validate()
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data)
    apply_threads(cfg.threads)
    seed_everything(cfg.seed)
    return out, device, ds


@contextmanager
def tracked_stage(cfg: Any, is_main: bool = True, dataset_hash: str | None = None, run_id: str | None = None,
                  extra_params: dict[str, Any] | None = None) -> Iterator[NullTracker]:
    """Open the stage's MLflow run, log its config/system info/dataset hash, and close it FINISHED or FAILED."""
    tracker = open_tracker(cfg, is_main, run_id=run_id)
    try:
        log_stage_start(tracker, cfg, dataset_hash, extra_params)
        yield tracker
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
