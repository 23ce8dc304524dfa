"""Frame sampling equals the ActionCLIP (train) and MMAction2 (test) formulas; transforms keep a clip's frames aligned."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from actionclip.data import (
    CLIP_MEAN, CLIP_STD, TestTransform, TrainTransform, apply_color, normalize_video, sample_multiview_indices,
    sample_test_indices, sample_train_indices,
)
from actionclip.data.transforms import multiscale_crop_box
from actionclip.errors import ActionCLIPError

SIZES = [(1, 1), (5, 8), (8, 8), (9, 8), (30, 8), (300, 8), (301, 16), (250, 32), (17, 3), (1000, 7)]


@pytest.mark.parametrize("N, T", SIZES)
def test_test_indices_equal_mmaction_formula(N, T):
    expected = [math.floor(i * N / T + N / (2 * T)) for i in range(T)]  # MMAction2 test sampling, 0-indexed
    assert sample_test_indices(N, T).tolist() == expected


def test_test_indices_vs_original_actionclip_one_indexed():
    # N=300, T=8 -> the original ActionCLIP test loader reads files 19, 56, ... = int(i*N/T + (N/T - 1)/2) + 1
    original = [int(i * 300 / 8 + (300 / 8 - 1) / 2) + 1 for i in range(8)]
    assert original == [19, 56, 94, 131, 169, 206, 244, 281]
    ours = sample_test_indices(300, 8).tolist()
    assert ours == [18, 56, 93, 131, 168, 206, 243, 281]
    assert all(abs((o - 1) - x) <= 1 for o, x in zip(original, ours))  # "sometimes differ by one frame"


@pytest.mark.parametrize("N, T", SIZES)
def test_train_indices_one_random_frame_per_segment(N, T):
    g = torch.Generator().manual_seed(N * 31 + T)
    draws = torch.stack([sample_train_indices(N, T, g) for _ in range(200)])
    assert draws.shape == (200, T) and draws.dtype == torch.long
    assert draws.min() >= 0 and draws.max() < N
    assert (draws[:, 1:] >= draws[:, :-1]).all()  # sorted
    if N > T:
        ticks = [i * N // T for i in range(T + 1)]
        for i in range(T):
            seg = draws[:, i]
            assert seg.min() >= ticks[i] and seg.max() < ticks[i + 1]
            if ticks[i + 1] - ticks[i] >= 2 and N >= 30:
                assert seg.unique().numel() > 1  # actually random within the segment
    else:  # every frame at least once, T - N random repeats
        for row in draws:
            assert set(row.tolist()) == set(range(N))


def test_train_indices_reproducible_with_generator():
    a = sample_train_indices(300, 8, torch.Generator().manual_seed(1))
    b = sample_train_indices(300, 8, torch.Generator().manual_seed(1))
    c = sample_train_indices(300, 8, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("N, T, K", [(300, 8, 10), (300, 8, 1), (40, 8, 4), (5, 8, 3), (64, 16, 2)])
def test_multiview_indices(N, T, K):
    idx = sample_multiview_indices(N, T, K)
    assert idx.shape == (K, T)
    expected = [[math.floor(i * N / T + (k + 0.5) * N / (T * K)) for i in range(T)] for k in range(K)]
    assert idx.tolist() == expected
    assert idx.min() >= 0 and idx.max() < N
    if K == 1:
        assert torch.equal(idx[0], sample_test_indices(N, T))
    if N >= T * K:  # views tile each segment: all K*T indices are distinct
        assert idx.unique().numel() == K * T


def test_sampling_rejects_empty_videos():
    with pytest.raises(ActionCLIPError):
        sample_test_indices(0, 8)
    with pytest.raises(ValueError):
        sample_train_indices(10, 0)


# --------------------------------------------------------------------------------------------------- transforms
def _moving_clip(T=8, H=60, W=80):
    """A textured image translated by one pixel per frame: frame t = base shifted right by t."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, H, W + T), generator=g, dtype=torch.uint8)
    return torch.stack([base[:, :, T - t: T - t + W] for t in range(T)])


def test_multiscale_crop_uses_the_fixed_offsets():
    H, W, size = 256, 340, 224
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(600):
        top, left, h, w = multiscale_crop_box(H, W, size, (1, .875, .75, .66), 1, True, g)
        assert h in {256, 224, 192, 168} and w in {256, 224, 192, 168}  # int(256*s), 0.875 snapped to 224
        assert abs([256, 224, 192, 168].index(h) - [256, 224, 192, 168].index(w)) <= 1  # max_distort=1
        ws, hs = (W - w) // 4, (H - h) // 4
        assert left in {0, ws, 2 * ws, 3 * ws, 4 * ws} and top in {0, hs, 2 * hs, 3 * hs, 4 * hs}
        assert top + h <= H and left + w <= W
        if ws > 0 and hs > 0:
            seen.add((top // hs, left // ws))
    fixed = {(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)}
    assert seen == fixed  # exactly the 13 fixed positions (corners, centre, edge centres, quarter points)


def test_train_transform_keeps_frames_aligned():
    clip = _moving_clip()
    spatial_only = TrainTransform(size=32, jitter_p=0.0, grayscale_p=0.0)
    for seed in range(20):
        out = spatial_only(clip, torch.Generator().manual_seed(seed))
        assert out.shape == (8, 3, 32, 32) and out.dtype == torch.uint8
        # same crop box (and flip) for every frame: redo frame 0's crop by hand for each frame
        g = torch.Generator().manual_seed(seed)
        top, left, h, w = multiscale_crop_box(60, 80, 32, spatial_only.scales, 1, True, g)
        flip = float(torch.rand((), generator=g)) < 0.5
        ref = F.resized_crop(clip, top, left, h, w, [32, 32], antialias=True)
        ref = F.hflip(ref) if flip else ref
        assert torch.equal(out, ref)


def test_train_transform_colour_ops():
    clip = _moving_clip()
    gray = TrainTransform(size=32, jitter_p=0.0, grayscale_p=1.0)(clip, torch.Generator().manual_seed(0))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    flat = torch.full((4, 3, 40, 40), 100, dtype=torch.uint8)
    flat[:, 0] = 180
    per_frame = TrainTransform(size=32, jitter_p=1.0, grayscale_p=0.0, flip_p=0.0)(flat, torch.Generator().manual_seed(3))
    per_clip = TrainTransform(size=32, jitter_p=1.0, grayscale_p=0.0, flip_p=0.0, jitter_per_frame=False)(
        flat, torch.Generator().manual_seed(3))
    means = per_frame.float().mean(dim=(1, 2, 3))
    assert means.unique().numel() > 1  # ActionCLIP quirk: jitter factors differ per frame
    assert per_clip.float().mean(dim=(1, 2, 3)).unique().numel() == 1  # one draw per clip
    assert not torch.equal(per_clip, flat[:, :, 4:36, 4:36])  # the jitter did change colours


def _torchvision_color(frame: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Reference: one float frame [3, H, W] through torchvision's own adjust_* ops in the drawn order."""
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for op in row[4:8].long().tolist():
        if op >= 0:
            frame = ops[op](frame, float(row[op]))
    return F.rgb_to_grayscale(frame, num_output_channels=3) if row[8] > 0 else frame


def test_batched_color_matches_torchvision_per_frame():
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (3, 5, 3, 12, 16), dtype=torch.uint8, generator=g)
    video[0, :, :, :4] = 128  # gray rows: no hue, the hue wheel's special case
    t = TrainTransform(size=12, jitter_p=0.7, grayscale_p=0.3)
    params = torch.stack([t.color_params(5, g) for _ in range(3)])  # [B, T, 9]
    assert (params[..., 4:8] >= 0).any() and (params[..., 4:8] < 0).all(dim=-1).any()  # jittered and plain frames
    out = apply_color(video, params)
    assert out.shape == video.shape and out.dtype == torch.uint8
    for b in range(3):
        for f in range(5):
            ref = _torchvision_color(video[b, f].float() / 255, params[b, f])
            ref = (ref * 255).round().clamp(0, 255).to(torch.uint8)
            assert (out[b, f].int() - ref.int()).abs().max() <= 1, (b, f, params[b, f])
    # every draw of the orders happens: each adjustment shows up at each position somewhere
    orders = params[..., 4:8].reshape(-1, 4)
    jittered = orders[(orders >= 0).any(dim=1)]
    assert {(pos, int(op)) for pos in range(4) for op in jittered[:, pos].unique()} >= {(0, 0), (0, 3), (3, 1)}


def test_color_on_device_leaves_colours_to_the_caller():
    clip = _moving_clip()
    on_device = TrainTransform(size=32, jitter_p=1.0, grayscale_p=1.0, color_on_device=True)
    spatial_only = TrainTransform(size=32, jitter_p=0.0, grayscale_p=0.0)
    assert on_device.changes_color and not spatial_only.changes_color
    assert torch.equal(on_device(clip, torch.Generator().manual_seed(1)),
                       spatial_only(clip, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="does not match"):
        apply_color(clip, torch.zeros(7, 9))


def test_test_transform_center_and_three_crops():
    clip = _moving_clip(T=4, H=64, W=96)
    t = TestTransform(size=28)  # short side -> 28*256//224 = 32
    out = t(clip)
    resized = F.resize(clip, [32, 48], antialias=True)
    assert out.shape == (4, 3, 28, 28)
    assert torch.equal(out, resized[..., 2:30, 10:38])
    three = TestTransform(size=28, num_crops=3)(clip)
    assert three.shape == (3, 4, 3, 28, 28)
    assert torch.equal(three[0], resized[..., 2:30, 0:28])
    assert torch.equal(three[1], out)
    assert torch.equal(three[2], resized[..., 2:30, 20:48])
    tall = TestTransform(size=28, num_crops=3)(clip.transpose(-1, -2))
    assert tall.shape == (3, 4, 3, 28, 28)
    with pytest.raises(ValueError):
        TestTransform(size=28, num_crops=2)
    with pytest.raises(ValueError, match="uint8"):
        out_f = TestTransform(size=28)
        out_f(clip.float())


def test_normalize_video_matches_clip_constants():
    v = torch.randint(0, 256, (2, 3, 3, 5, 5), dtype=torch.uint8)
    out = normalize_video(v)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    ref = (v.float() / 255 - mean) / std
    assert out.dtype == torch.float32 and out.shape == v.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert normalize_video(v, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        normalize_video(torch.zeros(2, 4, 5, 5, dtype=torch.uint8))
