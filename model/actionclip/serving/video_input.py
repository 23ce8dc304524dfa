"""Decode one request video into the model's test-time clip: the same frame sampling, decode size and crop as the
evaluation loader (``sample_test_indices``, resize-on-decode to the short side ``size * 256 // 224``,
``TestTransform``), so serving sees what the evaluation measured."""
from __future__ import annotations

import torch

from actionclip.serving.errors import ServingInputError
from actionclip.serving.requests import VideoSource

# decord 0.6.0 fails on some output sizes (e.g. 48 or 72 pixels wide) with "DECORDArrayCopyFromTo: The size must
# exactly match"; the same video decodes fine at other sizes, so such a failure is retried before giving up.
_SIZE_BUG = "size must exactly match"


def load_clip(source: VideoSource, num_frames: int, image_size: int, where: str = "request") -> torch.Tensor:
    """Read ``num_frames`` evenly spaced frames and centre-crop them -> uint8 [T, 3, image_size, image_size].

    Any decoding failure (missing file, garbage bytes, truncated stream) becomes a one-line ``ServingInputError``.
    """
    from actionclip.data import TestTransform, VideoReadError, open_video, sample_test_indices
    from actionclip.data.reader import short_side_size

    transform = TestTransform(image_size)
    target = source.path if source.path is not None else source.data
    try:
        with open_video(target) as video:
            info = video.info
        indices = sample_test_indices(info.frames, num_frames).tolist()
        w, h = short_side_size(info.width, info.height, transform.short_side)
        sizes = [(w, h), (-1, -1), (_up32(w), _up32(h))]
        for i, (width, height) in enumerate(sizes):
            try:
                with open_video(target, width=width, height=height) as video:
                    frames = video.read(indices)
                break
            except VideoReadError as exc:
                if _SIZE_BUG not in str(exc) or i == len(sizes) - 1:
                    raise
    except VideoReadError as exc:
        raise ServingInputError(f"{where}: unreadable video ({exc})") from None
    return transform(frames)


def _up32(n: int) -> int:
    return max(32, -(-n // 32) * 32)
