"""Video reading behind a small interface.

Two backends: ``decord`` for video files (path, bytes or binary file object) and a JPEG frame-folder reader for the
original ActionCLIP layout (``<dir>/img_00001.jpg`` ...). Every failure to open or decode becomes one
``VideoReadError`` whose message names the file and the cause, so callers never see decord's RuntimeError /
DECORDError / IndexError zoo.

decord is unmaintained since 2021; keeping it behind ``open_video`` means another backend (PyAV, torchcodec) can be
added here without touching sampling, transforms or the loader.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np

from actionclip.errors import ActionCLIPError

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

FRAME_TEMPLATE = "img_{:05d}.jpg"  # original ActionCLIP / TSN frame naming, 1-indexed
_FRAME_RE = re.compile(r"^img_(\d{5,})\.jpe?g$", re.IGNORECASE)


class VideoReadError(ActionCLIPError, OSError):
    """A video could not be opened or decoded (missing, empty, truncated, not a video, index out of range)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video. ``fps``/``duration`` are 0.0 when unknown (JPEG frame folders)."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float

    def to_dict(self) -> dict:
        return asdict(self)


def _describe(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<file object {getattr(source, 'name', type(source).__name__)}>"


def _short_reason(exc: BaseException) -> str:
    """decord messages carry a timestamp and a C++ source path; keep the first informative line only."""
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    line = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", line)
    # decord's own "Error reading <path>..." says nothing new; ffmpeg's reason, when present, follows the dots
    tail = re.sub(r"^Error reading .*?\.\.\.", "", line).strip()
    tail = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", tail)  # "[mov,mp4,... @ 0x55..] moov atom not found"
    if not tail:
        return "unrecognised or corrupt video data"
    if "av_read_frame failed" in tail:  # ffmpeg AVERROR_INVALIDDATA / EOF while reading packets
        return "truncated or corrupt video stream, av_read_frame failed"
    return tail[:200]


_decord_quiet = False


def _decord():
    """Import decord lazily (it pulls in a native library) and silence its own logger once."""
    global _decord_quiet
    import decord

    if not _decord_quiet:
        decord.logging.set_level(decord.logging.QUIET)
        _decord_quiet = True
    return decord


class VideoFile:
    """An opened video file (decord backend). Use ``open_video`` rather than this class directly.

    ``width``/``height`` (> 0) make decord scale while decoding, which is cheaper than decoding full frames and
    resizing afterwards.
    """

    def __init__(self, source: VideoSource, *, width: int = -1, height: int = -1, threads: int = 0):
        self.name = _describe(source)
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise VideoReadError(f"{path}: file not found")
            if os.path.getsize(path) == 0:
                raise VideoReadError(f"{path}: empty file (0 bytes)")
            arg: object = path
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise VideoReadError(f"{self.name}: empty input (0 bytes)")
            arg = io.BytesIO(bytes(source))
        elif hasattr(source, "read"):
            # decord needs seek(); copy non-seekable streams (pipes, HTTP bodies) into memory.
            seekable = getattr(source, "seekable", lambda: False)()
            arg = source if seekable else io.BytesIO(source.read())
        else:
            raise VideoReadError(f"unsupported video source type {type(source).__name__}")
        decord = _decord()
        try:
            self._vr = decord.VideoReader(arg, ctx=decord.cpu(0), width=width, height=height, num_threads=threads)
            frames = len(self._vr)
            first = self._vr[0].shape if frames > 0 else None
        except VideoReadError:
            raise
        except Exception as exc:  # decord raises RuntimeError / DECORDError with ffmpeg's message
            raise VideoReadError(f"{self.name}: cannot open video ({_short_reason(exc)})") from None
        if frames <= 0 or first is None:
            raise VideoReadError(f"{self.name}: no decodable video frames")
        self._vr.seek(0)
        # decord 0.6 bug: for some output widths (16, 24, 48, 72, ...) it returns the frame's padded rows (ffmpeg
        # linesize) mislabelled as [H, W, 4 or 6] and get_batch fails its size check; such videos are read frame by
        # frame and each row is cut back to its W*3 RGB bytes
        self._per_frame = len(first) == 3 and int(first[2]) != 3
        fps = float(self._vr.get_avg_fps() or 0.0)
        h, w = int(first[0]), int(first[1])
        self.info = VideoInfo(frames=frames, fps=fps, width=w, height=h, duration=frames / fps if fps > 0 else 0.0)

    def read(self, indices: Sequence[int]) -> "torch.Tensor":  # noqa: F821
        """Decode frames ``indices`` (0-indexed, any order, repeats allowed) -> uint8 [len(indices), 3, H, W]."""
        import torch

        idx = [int(i) for i in indices]
        n = self.info.frames
        bad = [i for i in idx if i < 0 or i >= n]
        if bad:
            raise VideoReadError(f"{self.name}: frame index {bad[0]} out of range (video has {n} frames)")
        try:
            if self._per_frame:
                decoded: dict[int, np.ndarray] = {}
                for i in sorted(set(idx)):  # ascending order: decord seeks forward, cheapest for long GOPs
                    raw = self._vr[i].asnumpy()
                    rows, width = raw.shape[0], raw.shape[1]
                    decoded[i] = raw.reshape(rows, -1)[:, : width * 3].reshape(rows, width, 3)
                arr = np.stack([decoded[i] for i in idx])
            else:
                arr = self._vr.get_batch(idx).asnumpy()
        except Exception as exc:
            raise VideoReadError(f"{self.name}: cannot decode frames ({_short_reason(exc)})") from None
        # [T,H,W,3] -> [T,3,H,W]; contiguous so later crops/resizes run on a normal layout
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))

    def close(self) -> None:
        self._vr = None

    def __enter__(self) -> "VideoFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameFolder:
    """An ActionCLIP frame folder: ``img_00001.jpg`` ... (1-indexed). Same interface as ``VideoFile``."""

    def __init__(self, path: Union[str, os.PathLike], *, width: int = -1, height: int = -1):
        self.name = os.fspath(path)
        self._dir = Path(path)
        try:
            # numeric order: past 99999 frames the names grow a digit and string order would misplace them
            names = sorted((n for n in os.listdir(self._dir) if _FRAME_RE.match(n)),
                           key=lambda n: int(_FRAME_RE.match(n).group(1)))
        except OSError as exc:
            raise VideoReadError(f"{self.name}: cannot list frame folder ({exc.strerror})") from None
        if not names:
            raise VideoReadError(f"{self.name}: frame folder holds no img_NNNNN.jpg frames")
        self._files = names
        self._size = (width, height)
        try:
            from PIL import Image

            with Image.open(self._dir / names[0]) as im:  # header only, cheap
                w, h = im.size
        except Exception as exc:
            raise VideoReadError(f"{self.name}: unreadable first frame {names[0]} ({_short_reason(exc)})") from None
        self.info = VideoInfo(frames=len(names), fps=0.0, width=w, height=h, duration=0.0)

    def read(self, indices: Sequence[int]) -> "torch.Tensor":  # noqa: F821
        """Decode frames ``indices`` (0-indexed; file ``i`` is ``img_{i+1:05d}.jpg``) -> uint8 [T, 3, H, W]."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg, read_file
        from torchvision.transforms.v2 import functional as F

        out = []
        cache: dict[int, torch.Tensor] = {}
        for i in (int(i) for i in indices):
            if i < 0 or i >= self.info.frames:
                raise VideoReadError(f"{self.name}: frame index {i} out of range (folder has {self.info.frames})")
            if i not in cache:
                path = self._dir / self._files[i]
                try:
                    img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
                except Exception as exc:
                    raise VideoReadError(f"{path}: cannot decode JPEG ({_short_reason(exc)})") from None
                w, h = self._size
                if w > 0 and h > 0 and (img.shape[-1], img.shape[-2]) != (w, h):
                    img = F.resize(img, [h, w], antialias=True)
                cache[i] = img
            out.append(cache[i])
        shapes = {tuple(t.shape) for t in out}
        if len(shapes) > 1:
            raise VideoReadError(f"{self.name}: frames have different sizes {sorted(shapes)}")
        return torch.stack(out)

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolder":
        return self

    def __exit__(self, *exc) -> None:
        pass


def open_video(source: VideoSource, *, width: int = -1, height: int = -1, threads: int = 0) -> VideoFile | FrameFolder:
    """Open ``source`` (video path, frame-folder path, bytes or binary file object).

    ``width``/``height`` > 0 resize while decoding (both must be given). Raises ``VideoReadError``.
    """
    if (width > 0) != (height > 0):
        raise ValueError("give both width and height for resize-on-decode, or neither")
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return FrameFolder(source, width=width, height=height)
    return VideoFile(source, width=width, height=height, threads=threads)


def probe_video(source: VideoSource, *, check_decode: bool = True, threads: int = 1) -> VideoInfo:
    """Frame count, fps, size and duration of ``source``.

    With ``check_decode`` the first and last frames are decoded as well, which catches files whose header is intact
    but whose data is truncated or corrupt (the common failure in scraped datasets). Raises ``VideoReadError``.
    """
    with open_video(source, threads=threads) as video:
        if check_decode:
            video.read([0, video.info.frames - 1])
        return video.info


def read_frames(
    source: VideoSource, indices: Sequence[int], *, width: int = -1, height: int = -1, threads: int = 0
) -> "torch.Tensor":  # noqa: F821
    """Decode frames ``indices`` of ``source`` -> uint8 [len(indices), 3, H, W] (H, W = height, width if given)."""
    with open_video(source, width=width, height=height, threads=threads) as video:
        return video.read(indices)


def short_side_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) with the short side scaled to ``short`` and the aspect ratio kept (rounded to whole pixels)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if width <= height:
        return short, max(1, int(round(height * short / width)))
    return max(1, int(round(width * short / height))), short
