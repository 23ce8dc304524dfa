"""Video data layer: decord reader, TSN sampling, clip transforms, dataset formats, preparation, a synthetic
action dataset and the torch loader. See docs/data.md and docs/ARCHITECTURE.md ("Data").

Names are imported on first use (PEP 562) so that the CLI can register ``actionclip data ...`` without loading
torch and decord.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "DatasetFormatError": ".formats", "read_label_map": ".formats",
    "extract_frames": ".frames", "frame_folder_name": ".frames",
    "VideoClipDataset": ".loader", "load_test_clip": ".loader", "make_loader": ".loader", "read_clip": ".loader",
    "set_epoch": ".loader",
    "DatasetError": ".prepare", "PreparedDataset": ".prepare", "prepare_dataset": ".prepare",
    "VideoInfo": ".reader", "VideoReadError": ".reader", "open_video": ".reader", "probe_video": ".reader",
    "read_frames": ".reader",
    "sample_multiview_indices": ".sampling", "sample_test_indices": ".sampling", "sample_train_indices": ".sampling",
    "generate_synthetic": ".synthetic",
    "CLIP_MEAN": ".transforms", "CLIP_STD": ".transforms", "TestTransform": ".transforms",
    "TrainTransform": ".transforms", "apply_color": ".transforms", "normalize_video": ".transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'actionclip.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .formats import DatasetFormatError, read_label_map
    from .frames import extract_frames, frame_folder_name
    from .loader import VideoClipDataset, load_test_clip, make_loader, read_clip, set_epoch
    from .prepare import DatasetError, PreparedDataset, prepare_dataset
    from .reader import VideoInfo, VideoReadError, open_video, probe_video, read_frames
    from .sampling import sample_multiview_indices, sample_test_indices, sample_train_indices
    from .synthetic import generate_synthetic
    from .transforms import CLIP_MEAN, CLIP_STD, TestTransform, TrainTransform, apply_color, normalize_video
