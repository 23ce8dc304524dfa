"""A small synthetic action dataset written as real H.264 mp4 files (PyAV).

Each clip shows one object (shape, colour, size) performing an action over a noisy gradient background, with a
label ("moving left") and a caption ("a small red circle moving to the left", or, for a fraction of clips, only
"an object moving to the left"). A moving object crosses the frame without wrapping around: a left mover starts
anywhere that leaves room for its path and ends that far to the left, a right mover is the same path played
backwards. So the distribution of a single frame (taken at a random time) is the same for "moving left" and
"moving right" (and, as sizes sweep one range either way, for "growing" and "shrinking"): only the temporal order
tells them apart.

Every clip draws from its own RNG seeded by (seed, class, clip, kind), so the output does not depend on the number
of worker processes or the generation order.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .formats import SYNTHETIC_MARKER, DatasetFormatError

DEFAULT_SEEN = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "rotating",
                "blinking")
DEFAULT_HELDOUT = ("standing still", "shaking", "bouncing")

# caption phrases per action; the first is the plainest
PHRASES: dict[str, tuple[str, ...]] = {
    "moving left": ("moving to the left", "moving left", "sliding to the left"),
    "moving right": ("moving to the right", "moving right", "sliding to the right"),
    "moving up": ("moving up", "moving upwards", "rising"),
    "moving down": ("moving down", "moving downwards", "falling"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
    "rotating": ("rotating", "spinning", "turning around"),
    "blinking": ("blinking", "flashing on and off", "flickering"),
    "standing still": ("standing still", "not moving", "staying in place"),
    "shaking": ("shaking", "vibrating", "jittering back and forth"),
    "bouncing": ("bouncing", "bouncing up and down", "hopping"),
}
ACTIONS = tuple(PHRASES)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 210, 60), "blue": (50, 90, 240), "yellow": (240, 230, 50),
    "white": (245, 245, 245), "purple": (170, 60, 220), "orange": (250, 150, 30), "cyan": (40, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "rectangle")
SIZES = {"small": 0.11, "large": 0.19}  # object radius as a fraction of the frame side


@dataclass
class SyntheticConfig:
    """What ``generate_synthetic`` writes. ``classes`` are all generated actions; ``heldout`` (a subset) get
    "heldout" rows instead of train/val; every class, held-out ones included, gets ``pretrain_clips_per_class``
    extra captioned "pretrain" clips."""

    classes: list[str] = field(default_factory=lambda: list(DEFAULT_SEEN + DEFAULT_HELDOUT))
    heldout: list[str] = field(default_factory=lambda: list(DEFAULT_HELDOUT))
    clips_per_class: int = 12
    pretrain_clips_per_class: int = 6
    frames: int = 16
    size: int = 64
    fps: int = 8
    seed: int = 0
    noise: float = 6.0  # per-frame sensor noise (std, 0-255 units)
    # fraction of captions that name only the action ("an object shaking"), as loose web captions do: in a batch of
    # full captions, colour, shape and size alone tell clips apart, so caption pre-training never has to match motion
    action_only_captions: float = 0.3

    def validate(self) -> None:
        unknown = [c for c in self.classes if c not in PHRASES]
        if unknown:
            raise DatasetFormatError(f"unknown synthetic action(s) {unknown}; available: {list(ACTIONS)}")
        if len(set(self.classes)) != len(self.classes):
            raise DatasetFormatError("synthetic classes must be unique")
        extra = [h for h in self.heldout if h not in self.classes]
        if extra:
            raise DatasetFormatError(f"held-out class(es) {extra} are not among the generated classes")
        if self.size < 16 or self.size % 2:
            raise DatasetFormatError(f"size must be an even number >= 16 (H.264 4:2:0), got {self.size}")
        if not 0.0 <= self.action_only_captions <= 1.0:
            raise DatasetFormatError(f"action_only_captions must be in [0, 1], got {self.action_only_captions}")
        if self.frames < 2 or self.clips_per_class < 1 or self.pretrain_clips_per_class < 0:
            raise DatasetFormatError("frames must be >= 2, clips_per_class >= 1, pretrain_clips_per_class >= 0")


# ------------------------------------------------------------------------------------------------------ rendering
@dataclass
class _Motion:
    """Per-frame object state, arrays of shape [F]: centre (cx, cy) in pixels, radius, angle (rad), visibility."""

    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    visible: np.ndarray


MARGIN = 0.1  # object centres stay within [MARGIN * S, (1 - MARGIN) * S]


def _motion(action: str, F: int, S: int, r: float, rng: np.random.Generator) -> _Motion:
    t = np.arange(F, dtype=np.float64)
    lo, hi = MARGIN * S, (1 - MARGIN) * S
    x0, y0 = rng.uniform(lo, hi, size=2)
    cx, cy = np.full(F, x0), np.full(F, y0)
    radius = np.full(F, r)
    angle = np.full(F, rng.uniform(0, 2 * np.pi))
    visible = np.ones(F, dtype=bool)
    if action in ("moving left", "moving right", "moving up", "moving down"):
        # A straight crossing of 50-90 % of the allowed span. Positions do not wrap around the frame: with wrapping,
        # direction is only the sign of each frame-to-frame step (a product of adjacent frames), which a time-averaged
        # fusion such as ActionCLIP's Transf learns far more slowly than "where was it early vs late".
        travel = rng.uniform(0.5, 0.9) * (hi - lo)
        start = rng.uniform(lo, hi - travel)
        path = start + travel * t / (F - 1)  # increasing; reversed for left/up
        if action in ("moving left", "moving up"):
            path = path[::-1]
        if action in ("moving left", "moving right"):
            cx = path
        else:
            cy = path
    elif action in ("growing", "shrinking"):
        # the size sweeps [0.5r, 1.5r] either way, so one frame's size says nothing about the direction
        ramp = 0.5 + t / (F - 1)
        radius = r * (ramp if action == "growing" else ramp[::-1])
    elif action == "rotating":
        omega = rng.uniform(np.pi / 12, np.pi / 6) * rng.choice([-1.0, 1.0])
        angle = angle + omega * t
    elif action == "blinking":
        # at least 2 frames per on/off phase: a 1-frame toggle aliases with the stride-2 test sampling of a 16-frame
        # clip at T=8 (every sampled frame lands in the same phase, so the clip looks static or empty)
        period = int(rng.integers(2, 4))
        phase = int(rng.integers(0, 2 * period))
        visible = ((t.astype(int) + phase) // period) % 2 == 0
    elif action == "shaking":
        amp = rng.uniform(0.04, 0.07) * S
        x0 = rng.uniform(lo + amp, hi - amp)
        cx = x0 + amp * np.where((t.astype(int) // 2) % 2 == 0, 1.0, -1.0)  # 2-frame phases, as blinking
    elif action == "bouncing":
        amp = rng.uniform(0.15, 0.25) * S
        y0 = rng.uniform(lo + amp, hi)
        cy = y0 - amp * np.abs(np.sin(np.pi * t / rng.uniform(4, 8)))
    return _Motion(cx, cy, radius, angle, visible)


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, < 0 inside) of object-frame coords (u, v) to the shape of radius r."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if shape == "rectangle":
        return np.maximum(np.abs(u) - r, np.abs(v) - 0.45 * r)
    # equilateral triangle: the max over its three edge half-planes
    d = None
    for k in range(3):
        a = np.pi / 2 + 2 * np.pi * k / 3
        e = np.cos(a) * u + np.sin(a) * v - 0.55 * r
        d = e if d is None else np.maximum(d, e)
    return d


def _background(S: int, F: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A random two-colour gradient + static texture + per-frame noise -> float32 [F, S, S, 3]."""
    c1, c2 = rng.uniform(10, 150, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / (S - 1)
    w = np.cos(theta) * xx + np.sin(theta) * yy
    w = (w - w.min()) / max(float(w.max() - w.min()), 1e-6)
    base = c1 + (c2 - c1) * w[..., None]
    # low-frequency blotches (upsampled coarse noise) make backgrounds differ in texture, not only colour
    coarse = rng.standard_normal(size=(S // 8 + 1, S // 8 + 1, 3), dtype=np.float32) * 18
    base += np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:S, :S]
    base += rng.standard_normal(size=(S, S, 3), dtype=np.float32) * 8
    return base[None] + rng.standard_normal(size=(F, S, S, 3), dtype=np.float32) * np.float32(noise)


def render_clip(action: str, shape: str, color: str, size_name: str, F: int, S: int, noise: float,
                rng: np.random.Generator) -> np.ndarray:
    """Render one clip -> uint8 [F, S, S, 3] (RGB)."""
    frames = _background(S, F, noise, rng)
    m = _motion(action, F, S, SIZES[size_name] * S, rng)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    f32 = lambda a: a.astype(np.float32)[:, None, None]  # noqa: E731  per-frame scalar -> [F, 1, 1]
    dx = xx[None] - f32(m.cx)  # objects near an edge are cut off by it
    dy = yy[None] - f32(m.cy)
    ca, sa = f32(np.cos(m.angle)), f32(np.sin(m.angle))
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    sd = _signed_distance(shape, u, v, f32(m.radius))
    alpha = np.clip(0.5 - sd, 0.0, 1.0) * f32(m.visible)  # 1-px soft edge (cheap anti-aliasing)
    alpha = alpha[..., None]
    rgb = np.asarray(COLORS[color], dtype=np.float32)
    frames = frames * (1 - alpha) + rgb * alpha
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 [F, H, W, 3] RGB as H.264 (yuv420p) mp4, byte-identical for identical frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # x264 is only bit-exact run to run with one encoding thread AND one lookahead thread; both knobs are
        # needed (measured: either one alone still gave differing bytes for some clips)
        stream.options = {"preset": "ultrafast", "crf": "18", "x264-params": "threads=1:lookahead-threads=1"}
        stream.codec_context.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class _Job:
    class_index: int
    action: str
    clip: int
    kind: str  # "clip" (train/val or held-out) or "pre" (pretrain)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _make_clip(args: tuple[_Job, dict, str]) -> dict:
    job, cfg, out_dir = args
    kind_id = 0 if job.kind == "clip" else 1
    rng = np.random.default_rng([cfg["seed"], job.class_index, job.clip, kind_id])
    shapes = [s for s in SHAPES if not (job.action == "rotating" and s == "circle")]  # a spinning circle looks still
    shape = shapes[int(rng.integers(len(shapes)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    size_name = list(SIZES)[int(rng.integers(len(SIZES)))]
    phrase = PHRASES[job.action][int(rng.integers(len(PHRASES[job.action])))]
    frames = render_clip(job.action, shape, color, size_name, cfg["frames"], cfg["size"], cfg["noise"], rng)
    rel = Path("videos") / _slug(job.action) / f"{job.kind}_{job.clip:04d}.mp4"
    write_mp4(Path(out_dir) / rel, frames, cfg["fps"])
    # drawn after rendering, so the fraction does not change the videos
    subject = "an object" if rng.random() < cfg["action_only_captions"] else f"a {size_name} {color} {shape}"
    return {"path": rel.as_posix(), "label": job.action, "caption": f"{subject} {phrase}",
            "split": "pretrain" if job.kind == "pre" else None}


def generate_synthetic(
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    heldout: Sequence[str] | None = None,
    clips_per_class: int = 12,
    pretrain_clips_per_class: int = 6,
    frames: int = 16,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    action_only_captions: float = SyntheticConfig.action_only_captions,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Write a synthetic action dataset into ``out_dir`` and return ``out_dir`` (a source for ``prepare_dataset``).

    Layout: ``videos/<action>/{clip,pre}_NNNN.mp4``, ``annotations.jsonl`` (path, label, caption, split) and
    ``synthetic.json`` (the config; marks the directory for ``format="auto"``). ``classes`` default to the 8 seen
    + 3 held-out actions; ``heldout`` defaults to the default held-out actions present in ``classes``.
    """
    cls = list(classes) if classes is not None else list(DEFAULT_SEEN + DEFAULT_HELDOUT)
    held = list(heldout) if heldout is not None else [c for c in DEFAULT_HELDOUT if c in cls]
    cfg = SyntheticConfig(cls, held, clips_per_class, pretrain_clips_per_class, frames, size, fps, seed,
                          action_only_captions=action_only_captions)
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [_Job(ci, a, k, "clip") for ci, a in enumerate(cls) for k in range(clips_per_class)]
    jobs += [_Job(ci, a, k, "pre") for ci, a in enumerate(cls) for k in range(pretrain_clips_per_class)]
    payload = asdict(cfg)
    args = [(j, payload, str(out)) for j in jobs]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synthesising clips", unit="clip")
    rows = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            it = pool.map(_make_clip, args, chunksize=8)
            rows = _collect(it, bar)
    else:
        rows = _collect(map(_make_clip, args), bar)
    if bar is not None:
        bar.close()
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "annotations.jsonl").write_text(text, encoding="utf-8")
    (out / SYNTHETIC_MARKER).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out


def _collect(it, bar) -> list[dict]:
    rows = []
    for row in it:
        rows.append(row)
        if bar is not None:
            bar.update(1)
    return rows
