"""Clip transforms on uint8 tensors [T, 3, H, W] (spec 4.6).

Spatial decisions (crop box, flip) are drawn once per clip so every frame of a clip stays aligned; ActionCLIP's
colour jitter draws its factors per frame (its torchvision ColorJitter is called frame by frame), which we keep by
default. Transforms stay in uint8 so worker->main-process transfer is 4x smaller than float; ``normalize_video``
turns a batch into CLIP-normalised floats on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from actionclip import CLIP_MEAN, CLIP_STD  # defined once, in the package root

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def scale_size(size: int) -> int:
    """Short side used before cropping: ``size * 256 // 224`` (256 for 224 crops)."""
    return size * 256 // 224


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _rand_int(n: int, g: torch.Generator | None) -> int:
    return int(torch.randint(0, n, (), generator=g))


def _coin(p: float, g: torch.Generator | None) -> bool:
    return p > 0 and float(torch.rand((), generator=g)) < p


def resize_short_side(video: torch.Tensor, short: int, interpolation: str = "bilinear") -> torch.Tensor:
    """[..., 3, H, W] -> short side ``short``, aspect kept; a no-op when it already is (resize-on-decode)."""
    h, w = video.shape[-2:]
    if min(h, w) == short:
        return video
    return F.resize(video, short, interpolation=_INTERP[interpolation], antialias=True)


def multiscale_crop_box(
    height: int,
    width: int,
    size: int,
    scales: Sequence[float],
    max_distort: int,
    more_fix_crop: bool,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """ActionCLIP ``GroupMultiScaleCrop`` box (top, left, h, w) with fixed offsets.

    Candidate sides are int(short * s), snapped to ``size`` when within 3 px; a (w, h) pair whose scale indices differ
    by at most ``max_distort`` is drawn, then one of 5 (or 13 with ``more_fix_crop``) fixed positions.
    """
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(c - size) < 3 else c for c in sides]
    pairs = [(cw, ch) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= max_distort]
    cw, ch = pairs[_rand_int(len(pairs), generator)]
    ws, hs = (width - cw) // 4, (height - ch) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more_fix_crop:
        offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                    (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    x, y = offsets[_rand_int(len(offsets), generator)]
    return y, x, ch, cw


@dataclass
class TrainTransform:
    """ActionCLIP training augmentation: uint8 [T, 3, H, W] -> uint8 [T, 3, size, size].

    Multi-scale fixed-offset crop (bilinear resize to size x size), horizontal flip, colour jitter, grayscale.
    RandAugment (K400 only in the original) is not applied.
    """

    size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    more_fix_crop: bool = True
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_per_frame: bool = True  # as ActionCLIP: factors differ per frame; False = one draw per clip
    grayscale_p: float = 0.2

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_video(video)
        g = generator
        top, left, h, w = multiscale_crop_box(video.shape[-2], video.shape[-1], self.size, self.scales,
                                              self.max_distort, self.more_fix_crop, g)
        out = F.resized_crop(video, top, left, h, w, [self.size, self.size],
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
        if _coin(self.flip_p, g):
            out = F.hflip(out)
        if _coin(self.jitter_p, g):
            if self.jitter_per_frame:
                out = torch.stack([self._jitter(frame, g) for frame in out])
            else:
                out = self._jitter(out, g)
        if _coin(self.grayscale_p, g):
            out = F.rgb_to_grayscale(out, num_output_channels=3)
        return out.contiguous()

    def _jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """torchvision ColorJitter semantics: the four adjustments in random order, factors uniform around 1."""
        for op in torch.randperm(4, generator=g).tolist():
            if op == 0 and self.brightness > 0:
                x = F.adjust_brightness(x, _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, g))
            elif op == 1 and self.contrast > 0:
                x = F.adjust_contrast(x, _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, g))
            elif op == 2 and self.saturation > 0:
                x = F.adjust_saturation(x, _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, g))
            elif op == 3 and self.hue > 0:
                x = F.adjust_hue(x, _uniform(-self.hue, self.hue, g))
        return x


@dataclass
class TestTransform:
    """Evaluation transform: short side to ``size * 256 // 224``, then a centre crop or three crops.

    uint8 [T, 3, H, W] -> [T, 3, size, size] (num_crops=1) or [3, T, 3, size, size] (num_crops=3: the two ends and the
    centre along the longer side, MMAction2 ``ThreeCrop``).
    """

    __test__ = False  # the name starts with "Test": keep pytest from trying to collect it

    size: int = 224
    num_crops: int = 1
    interpolation: str = "bilinear"  # MMAction2 uses bilinear; original ActionCLIP used PIL bicubic
    scale: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {self.num_crops}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}")

    @property
    def short_side(self) -> int:
        return self.scale or scale_size(self.size)

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_video(video)
        video = resize_short_side(video, self.short_side, self.interpolation)
        if self.num_crops == 1:
            return F.center_crop(video, [self.size, self.size]).contiguous()
        return torch.stack(three_crop(video, self.size))


def three_crop(video: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Three size x size crops of [T, 3, H, W] along the longer side: start, centre, end (centred on the short side)."""
    h, w = video.shape[-2:]
    if min(h, w) < size:
        video = resize_short_side(video, size)
        h, w = video.shape[-2:]
    if w >= h:
        top = (h - size) // 2
        lefts = [0, (w - size) // 2, w - size]
        return [video[..., top:top + size, x:x + size].contiguous() for x in lefts]
    left = (w - size) // 2
    tops = [0, (h - size) // 2, h - size]
    return [video[..., y:y + size, left:left + size].contiguous() for y in tops]


def normalize_video(
    video: torch.Tensor,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> ``dtype`` [..., 3, H, W]: /255 then (x - mean) / std, on ``video``'s device."""
    if video.dim() < 3 or video.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W], got shape {tuple(video.shape)}")
    m = torch.tensor(mean, device=video.device, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, device=video.device, dtype=torch.float64).view(3, 1, 1)
    # fold /255, -mean and /std into one scale and one shift: two passes over the batch instead of three
    scale, shift = (1.0 / (255.0 * s)).to(dtype), (m / s).to(dtype)
    return video.to(dtype).mul_(scale).sub_(shift)


def _check_video(video: torch.Tensor) -> None:
    if video.dim() != 4 or video.shape[1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"expected uint8 [T, 3, H, W], got {video.dtype} {tuple(video.shape)}")
