"""Decode one request video into the model's test-time clip with the evaluation loader's own decoding
(``actionclip.data.load_test_clip``: the same frame sampling, decode size and crop), so serving sees what the
evaluation measured; a decoding failure becomes a one-line ``ServingInputError``."""
from __future__ import annotations

import torch

from actionclip.serving.errors import ServingInputError
from actionclip.serving.requests import VideoSource


def load_clip(source: VideoSource, num_frames: int, image_size: int, where: str = "request") -> torch.Tensor:
    """Read ``num_frames`` evenly spaced frames and centre-crop them -> uint8 [T, 3, image_size, image_size].

    Any decoding failure (missing file, garbage bytes, truncated stream) becomes a one-line ``ServingInputError``.
    """
    from actionclip.data import VideoReadError, load_test_clip

    try:
        return load_test_clip(source.path if source.path is not None else source.data, num_frames, image_size)
    except VideoReadError as exc:
        raise ServingInputError(f"{where}: unreadable video ({exc})") from None
