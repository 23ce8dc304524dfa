"""Clip transforms on uint8 tensors [T, 3, H, W]: ActionCLIP's training augmentation and its test-time crops.

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
    # True: __call__ leaves colours alone; the caller draws ``color_params`` per clip and applies ``apply_color`` to
    # whole batches on the training device (the per-frame jitter is most of this transform's CPU time)
    color_on_device: bool = False

    @property
    def changes_color(self) -> bool:
        return (self.jitter_p > 0 and max(self.brightness, self.contrast, self.saturation, self.hue) > 0) or \
            self.grayscale_p > 0

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_video(video)
        g = generator
        top, left, h, w = multiscale_crop_box(video.shape[-2], video.shape[-1], self.size, self.scales,
                                              self.max_distort, self.more_fix_crop, g)
        out = F.resized_crop(video, top, left, h, w, [self.size, self.size],
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
        if _coin(self.flip_p, g):
            out = F.hflip(out)
        if not self.color_on_device and self.changes_color:
            out = apply_color(out, self.color_params(out.shape[0], g))
        return out.contiguous()

    def color_params(self, num_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one clip's colour augmentation -> float [num_frames, COLOR_PARAMS] for ``apply_color``.

        torchvision ``ColorJitter`` semantics: with probability ``jitter_p`` the clip is jittered, each frame (or
        the whole clip, ``jitter_per_frame=False``) with its own factors and its own random order of the four
        adjustments; then with probability ``grayscale_p`` the whole clip turns gray.
        """
        g = generator
        params = torch.zeros(num_frames, COLOR_PARAMS)
        params[:, :3] = 1.0  # identity factors
        params[:, 4:8] = -1.0  # no adjustment at any of the four positions
        if _coin(self.jitter_p, g):
            strengths = (self.brightness, self.contrast, self.saturation, self.hue)
            draws = num_frames if self.jitter_per_frame else 1
            for t in range(draws):
                order = [op for op in torch.randperm(4, generator=g).tolist() if strengths[op] > 0]
                row = params[t]
                row[4:4 + len(order)] = torch.tensor(order, dtype=torch.float32)
                for op in order:
                    s = strengths[op]
                    row[op] = _uniform(-s, s, g) if op == HUE else _uniform(max(0.0, 1 - s), 1 + s, g)
            if draws == 1:
                params[1:] = params[0]
        if _coin(self.grayscale_p, g):
            params[:, 8] = 1.0
        return params


# ``color_params`` columns: brightness, contrast, saturation and hue factors, then the adjustment at each of four
# positions (0-3 = those four, -1 = none), then grayscale (1) or not (0)
COLOR_PARAMS = 9
HUE = 3


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return F.rgb_to_grayscale(x, num_output_channels=1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns [N, 1, 1, 1] on float RGB [N, 3, H, W] in [0, 1], keeping value and chroma."""
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    r, g, b = x.unbind(dim=1)
    c = torch.where(chroma > 0, chroma, torch.ones_like(chroma))  # grays have no hue: avoid 0/0
    sector = torch.where(value == r, ((g - b) / c) % 6, torch.where(value == g, (b - r) / c + 2, (r - g) / c + 4))
    hue = (sector / 6 + shift.view(-1, 1, 1)) % 1.0
    # back to RGB: channel n (5 for red, 3 for green, 1 for blue) is value - chroma * clamp(min(k, 4 - k), 0, 1)
    # with k = (n + 6 * hue) mod 6, the piecewise-linear hue wheel
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) + 6 * hue.unsqueeze(1)) % 6
    return value.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


_ADJUST = (
    lambda x, f: (x * f).clamp_(0, 1),  # brightness
    lambda x, f: _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f),  # contrast
    lambda x, f: _blend(x, _gray(x), f),  # saturation
    _shift_hue,
)


def apply_color(video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour-augment frames as ``params`` (from ``TrainTransform.color_params``) say, batched.

    video: uint8 [..., 3, H, W] on any device; params: float [..., COLOR_PARAMS] on the CPU, one row per frame
    (leading dimensions equal to the video's, e.g. [B, T]). Returns uint8 of the video's shape. Frames are
    grouped by the adjustment they apply at each position, so each frame is touched once per adjustment however
    the orders differ; the arithmetic is torchvision's float formulas, rounded to uint8 once at the end.
    """
    if video.dtype != torch.uint8 or video.dim() < 3 or video.shape[-3] != 3:
        raise ValueError(f"expected uint8 [..., 3, H, W], got {video.dtype} {tuple(video.shape)}")
    if tuple(params.shape) != (*video.shape[:-3], COLOR_PARAMS):
        raise ValueError(f"params shape {tuple(params.shape)} does not match video {tuple(video.shape)}")
    frames = video.reshape(-1, *video.shape[-3:])
    p = params.reshape(-1, COLOR_PARAMS).cpu()
    gray = p[:, 8] > 0
    touched = ((p[:, 4:8] >= 0).any(dim=1) | gray).nonzero().squeeze(1)
    if touched.numel() == 0:
        return video
    p, gray = p[touched], gray[touched]
    # the plan is made on the CPU and sent in two copies, so nothing here waits for the device
    groups = [(op, rows) for position in range(4) for op in range(4)
              if (rows := (p[:, 4 + position] == op).nonzero().squeeze(1)).numel()]
    gray_rows = gray.nonzero().squeeze(1)
    dev = video.device
    index = _to_device(torch.cat([touched, gray_rows, *(rows for _, rows in groups)]), dev)
    factors = _to_device(torch.cat([p[rows, op] for op, rows in groups] or [torch.zeros(0)]), dev)
    x = frames.index_select(0, index[:len(touched)]).float().div_(255)
    at, f_at = len(touched) + len(gray_rows), 0
    for op, rows in groups:
        n = len(rows)
        r = index[at:at + n]
        x[r] = _ADJUST[op](x[r], factors[f_at:f_at + n].view(-1, 1, 1, 1))
        at, f_at = at + n, f_at + n
    if len(gray_rows):
        r = index[len(touched):len(touched) + len(gray_rows)]
        x[r] = _gray(x[r]).expand(-1, 3, -1, -1)
    out = frames.clone()
    out[index[:len(touched)]] = x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out.view(video.shape)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device`` without making the host wait (pinned memory, asynchronous copy)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


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
