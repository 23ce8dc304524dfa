"""Extract videos into JPEG frame folders (ActionCLIP's original input format) once, so training decodes only the
frames it samples.

Why: a training clip needs T frames (8, 16, 32) out of a video's hundreds, but an H.264 decoder must decode every
frame from the last keyframe up to each one it returns. With the long GOPs of web video that is most of the video
per clip, and decoding becomes the input pipeline's limit on a GPU machine (docs/training.md, "GPU"). A frame
folder turns that into T independent JPEG decodes (docs/data.md has the measured trade: read time against disk).

A folder ``<frames_dir>/<stem>-<digest>/`` holds ``img_00001.jpg`` ... and ``source.json`` (the source's path,
size and mtime, and the extraction settings). Folders are complete or absent: each is written under a
``.partial-<random>`` name and renamed when done, so an interrupted extraction resumes by redoing only unfinished
videos, an unchanged video with the same settings is never extracted twice, and concurrent runs over the same
videos do not write into each other's folders.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from .reader import open_video

SOURCE_FILE = "source.json"
PARTIAL = ".partial-"  # <folder>.partial-<random>: a folder being written
DEFAULT_SHORT_SIDE = 256  # the short side ActionCLIP's training crops are taken from (224 px crops)
DEFAULT_QUALITY = 90


def frame_folder_name(video_path: str | os.PathLike) -> str:
    """``<stem>-<10 hex digits of the absolute path's SHA-1>``: readable, and unique for equal stems."""
    path = os.path.abspath(os.fspath(video_path))
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:10]
    return f"{Path(path).stem}-{digest}"


def _settings(short_side: int | None, quality: int, stride: int) -> dict:
    return {"short_side": int(short_side or 0), "quality": int(quality), "stride": int(stride)}


def _stat(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def existing_extraction(video_path: str | os.PathLike, folder: str | os.PathLike, *, short_side: int | None,
                        quality: int, stride: int = 1) -> dict | None:
    """The recorded result ({"frames", "width", "height"}) when ``folder`` is a finished extraction of the video
    as it is now, with these settings; else None."""
    meta_path = Path(folder) / SOURCE_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        current = _stat(os.fspath(video_path))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("stat") != current or meta.get("settings") != _settings(short_side, quality, stride):
        return None
    return {k: meta[k] for k in ("frames", "width", "height")}


def extract_frames(
    video_path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    quality: int = DEFAULT_QUALITY,
    stride: int = 1,
    chunk: int = 32,
) -> dict:
    """Decode every frame of ``video_path`` once, in order, and write ``folder/img_00001.jpg`` ...

    ``short_side``: frames with a longer short side are scaled down to it (bilinear, antialiased, aspect kept);
    smaller frames are kept as they are (upscaling would only add bytes: the loader resizes anyway); None or 0
    keeps every size. ``stride`` k keeps every k-th frame (source frames 0, k, 2k, ...): TSN sampling
    takes 8-32 frames spread over the whole video, so k = 2 or 3 costs it little and cuts the disk by k. Frames
    are decoded ``chunk`` at a time, so memory stays flat for long videos.
    Returns {"frames", "width", "height"} of the written frames; an up-to-date folder is reused as it is. Raises
    ``VideoReadError`` naming the video when it cannot be decoded; nothing is left at ``folder`` then.
    """
    from torchvision.io import encode_jpeg

    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    src = os.fspath(video_path)
    dst = Path(folder)
    done = existing_extraction(src, dst, short_side=short_side, quality=quality, stride=stride)
    if done is not None:
        return done
    _remove_stale_partials(dst)
    # a name of its own per writer: two prepare runs over the same videos (two pipeline runs, say) never write
    # into one folder; whichever renames second finds the folder done and drops its copy
    from .transforms import resize_short_side  # torchvision: loaded only when frames are extracted

    partial = dst.with_name(f"{dst.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        with open_video(src, threads=1) as video:
            stat = _stat(src)
            kept = range(0, video.info.frames, stride)
            n = len(kept)
            height = width = 0
            for start in range(0, n, chunk):
                frames = video.read(kept[start:start + chunk])  # uint8 [t, 3, H, W], ascending: one forward pass
                if short_side and min(frames.shape[-2:]) > short_side:
                    frames = resize_short_side(frames, short_side)
                height, width = int(frames.shape[-2]), int(frames.shape[-1])
                for i, frame in enumerate(frames, start=start + 1):
                    data = encode_jpeg(frame.contiguous(), quality=quality)
                    (partial / f"img_{i:05d}.jpg").write_bytes(data.numpy().tobytes())
        meta = {"source": os.path.abspath(src), "stat": stat, "settings": _settings(short_side, quality, stride),
                "frames": n, "width": width, "height": height}
        (partial / SOURCE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _publish(partial, dst, src, short_side, quality, stride)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"frames": n, "width": width, "height": height}


def _publish(partial: Path, dst: Path, src: str, short_side: int | None, quality: int, stride: int) -> None:
    """Rename the finished ``partial`` folder to ``dst``. A ``dst`` that is already an up-to-date extraction (a
    concurrent writer finished first) is kept and ``partial`` dropped; a stale one is replaced."""
    for _ in range(3):
        try:
            os.replace(partial, dst)  # atomic; fails on an existing non-empty dst
            return
        except OSError:
            if not dst.exists():
                raise
        if existing_extraction(src, dst, short_side=short_side, quality=quality, stride=stride) is not None:
            shutil.rmtree(partial, ignore_errors=True)
            return
        shutil.rmtree(dst, ignore_errors=True)
    raise OSError(f"{dst}: could not replace the existing folder")


def _remove_stale_partials(dst: Path, max_age_s: float = 6 * 3600) -> None:
    """Remove unfinished folders of ``dst`` left by killed runs (older than ``max_age_s``; a live writer's is
    younger: one video takes seconds to minutes)."""
    now = time.time()
    for p in dst.parent.glob(f"{glob.escape(dst.name)}{PARTIAL}*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


__all__ = ["DEFAULT_QUALITY", "DEFAULT_SHORT_SIDE", "SOURCE_FILE", "existing_extraction", "extract_frames",
           "frame_folder_name"]
