"""Decode one request video into the model's test-time clip: the same frame sampling and crop as evaluation
(``sample_test_indices`` + ``TestTransform``), so serving sees what the evaluation measured."""
from __future__ import annotations

import torch

from actionclip.serving.errors import ServingInputError
from actionclip.serving.requests import VideoSource


def load_clip(source: VideoSource, num_frames: int, image_size: int, where: str = "request") -> torch.Tensor:
    """Read ``num_frames`` evenly spaced frames and centre-crop them -> uint8 [T, 3, image_size, image_size].

    Any decoding failure (missing file, garbage bytes, truncated stream) becomes a one-line ``ServingInputError``.
    """
    from actionclip.data import TestTransform, VideoReadError, probe_video, read_frames, sample_test_indices

    target = source.path if source.path is not None else source.data
    try:
        info = probe_video(target)
        indices = sample_test_indices(info.frames, num_frames)
        width, height = _decode_size(info.width, info.height, image_size)
        frames = read_frames(target, indices.tolist(), width=width, height=height)
    except VideoReadError as exc:
        raise ServingInputError(f"{where}: unreadable video ({exc})") from None
    return TestTransform(image_size)(frames)


def _decode_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """Let the decoder scale large videos down to the test resize (short side = image_size * 256 / 224) while
    decoding, which is much cheaper than decoding full frames; small videos are decoded as they are."""
    short = min(width, height)
    target = image_size * 256 // 224
    if short <= target or short <= 0:
        return -1, -1
    scale = target / short
    # even sizes keep the codec's scaler happy
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
