"""TSN-style sparse frame sampling, as ActionCLIP trains and MMAction2 tests. All indices are 0-indexed frame numbers.

- train: split the N frames into T equal segments and pick one random frame per segment (ActionCLIP
  ``_sample_indices``); with N <= T every frame appears once plus T - N random repeats, sorted.
- test: MMAction2 ``SampleFrames(clip_len=1, num_clips=T, test_mode=True)``: floor(i*N/T + N/(2T)).
- multi-view: ``num_clips`` temporal views that tile each segment evenly; view k uses the offset (k + 0.5)/num_clips
  of a segment, so a single view is exactly the test sampling.
"""
from __future__ import annotations

import torch

from actionclip.errors import ActionCLIPError


def _check(num_frames: int, T: int) -> None:
    if T < 1:
        raise ValueError(f"number of sampled frames must be >= 1, got {T}")
    if num_frames < 1:
        raise ActionCLIPError(f"cannot sample from a video with {num_frames} frames")


def sample_train_indices(num_frames: int, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random TSN training indices -> LongTensor [T], non-decreasing, in [0, num_frames)."""
    _check(num_frames, T)
    N = num_frames
    if N > T:
        ticks = [(i * N) // T for i in range(T + 1)]
        lengths = torch.tensor([ticks[i + 1] - ticks[i] for i in range(T)], dtype=torch.float64)
        offsets = (torch.rand(T, generator=generator, dtype=torch.float64) * lengths).floor().long()
        return torch.tensor(ticks[:T], dtype=torch.long) + offsets
    extra = torch.randint(0, N, (T - N,), generator=generator)
    return torch.sort(torch.cat([torch.arange(N), extra])).values


def sample_test_indices(num_frames: int, T: int) -> torch.Tensor:
    """Deterministic segment midpoints floor(i*N/T + N/(2T)) -> LongTensor [T]."""
    return sample_multiview_indices(num_frames, T, 1)[0]


def sample_multiview_indices(num_frames: int, T: int, num_clips: int) -> torch.Tensor:
    """Temporal views floor(i*N/T + (k + 1/2)*N/(T*num_clips)) -> LongTensor [num_clips, T].

    Computed in exact integer arithmetic, floor((2*i*K + 2*k + 1) * N / (2*T*K)), so no float rounding can move an
    index across a frame boundary.
    """
    _check(num_frames, T)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    N, K = num_frames, num_clips
    i = torch.arange(T).view(1, T)
    k = torch.arange(K).view(K, 1)
    idx = ((2 * i * K + 2 * k + 1) * N) // (2 * T * K)
    return idx % N  # already < N; the modulo mirrors MMAction2's out_of_bound_opt="loop"
