"""torch Dataset / DataLoader over prepared manifest rows.

Items are uint8 clips; normalisation happens later on the training device (``normalize_video``), which keeps the
worker -> main process transfer 4x smaller and the CPU work per clip to decode + crop.

Bad-video policy: a clip that fails to decode at training time is logged, counted and replaced by another random
clip of the dataset, so one broken file never ends an epoch; only ``max_retries`` consecutive failures raise.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from .prepare import DatasetError
from .reader import open_video, short_side_size
from .sampling import sample_multiview_indices, sample_test_indices, sample_train_indices
from .transforms import TestTransform, TrainTransform, resize_short_side, scale_size

log = logging.getLogger(__name__)

_MAX_WORKER_SLOTS = 256


class VideoClipDataset(Dataset):
    """Clips of manifest ``rows`` (dicts with at least "path"; "label", "caption", "width", "height" used if present).

    Item: {"video": uint8 [T, 3, size, size] (or [V, T, 3, size, size], V = num_clips * num_crops, clip-major),
           "label": int (index in ``labels``, -1 if absent), "caption": str ("" if none), "path": str}.

    mode "train": random TSN indices + ``TrainTransform``; mode "test": ``num_clips`` deterministic temporal views
    x ``num_crops`` (1 or 3) spatial crops via ``TestTransform``. With ``resize_on_decode`` decord scales frames to
    the short side ``size * 256 // 224`` while decoding (needs "width"/"height" in the row, as in the manifest).
    ``decode_scale_min_ratio``: scale in the decoder only when the source short side is at least this multiple of
    the target short side (smaller sources decode faster at full size, then torchvision resizes); the default 0
    always scales in the decoder (``actionclip.train.data.CachedVideos`` decodes through ``read`` too); 2.5 is the measured
    break-even. ``main_process_threads``: torch intra-op threads while an item is loaded in the main
    process (workers=0); None leaves torch's setting alone.
    """

    def __init__(
        self,
        rows: Sequence[dict],
        labels: Sequence[str],
        num_frames: int,
        size: int,
        mode: str = "train",
        num_clips: int = 1,
        num_crops: int = 1,
        *,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        resize_on_decode: bool = True,
        max_retries: int = 10,
        decode_threads: int = 1,
        main_process_threads: int | None = 1,
        decode_scale_min_ratio: float = 0.0,
    ):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if mode == "train" and (num_clips != 1 or num_crops != 1):
            raise ValueError("multi-view (num_clips/num_crops > 1) is a test-time protocol; use mode='test'")
        if not rows:
            raise DatasetError("VideoClipDataset got no rows (empty split?)")
        self.rows = list(rows)
        self.labels = list(labels)
        self._label_index = {name: i for i, name in enumerate(self.labels)}
        self.num_frames, self.size, self.mode = num_frames, size, mode
        self.num_clips, self.num_crops = num_clips, num_crops
        self.short_side = scale_size(size)
        if transform is None:
            transform = TrainTransform(size) if mode == "train" else TestTransform(size, num_crops=num_crops)
        self.transform = transform
        self.resize_on_decode = resize_on_decode
        self.max_retries = max_retries
        self.decode_threads = decode_threads
        self.main_process_threads = main_process_threads
        self.decode_scale_min_ratio = decode_scale_min_ratio
        # one slot per worker (slot 0 = main process) in shared memory: counts survive worker processes and need no
        # lock because each process only writes its own slot
        self._bad = torch.zeros(_MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self.bad_paths: list[str] = []  # this process's failures (workers log theirs)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def bad_count(self) -> int:
        """Clips that failed to decode and were substituted, summed over all loader workers."""
        return int(self._bad.sum())

    def label_of(self, row: dict) -> int:
        return self._label_index.get(row.get("label"), -1)

    def __getitem__(self, index: int) -> dict:
        limit = self.main_process_threads
        if limit and get_worker_info() is None and torch.get_num_threads() > limit:
            # Loading in the main process (workers=0): per-clip ops are small, and torch's intra-op threads cost
            # more than they gain (measured 36x slower train transform with 2 threads on a busy 2-core machine).
            # Loader workers already run single-threaded; the training step gets its threads back right after.
            previous = torch.get_num_threads()
            torch.set_num_threads(limit)
            try:
                return self._get(index)
            finally:
                torch.set_num_threads(previous)
        return self._get(index)

    def _get(self, index: int) -> dict:
        idx = index
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._load(idx)
            except Exception as exc:  # any failure of one file: log, count, substitute (never crash the epoch)
                last_error = exc
                self._record_bad(self.rows[idx]["path"], exc)
                if len(self.rows) > 1:  # another clip, never the one that just failed
                    idx = (idx + 1 + int(torch.randint(0, len(self.rows) - 1, ()))) % len(self.rows)
        raise DatasetError(
            f"{self.max_retries + 1} consecutive clips failed to load (last: {last_error}); is the data readable?"
        )

    def _record_bad(self, path: str, exc: Exception) -> None:
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_MAX_WORKER_SLOTS - 1)
        self._bad[slot] += 1
        self.bad_paths.append(path)
        log.warning("skipping unreadable video %s (%s); substituting another clip", path, exc)

    def decode_size(self, row: dict) -> tuple[int, int]:
        """(width, height) decord should scale ``row``'s video to while decoding, or (-1, -1) for full size.

        Public so that code caching decoded frames (``actionclip.train.data.CachedVideos``) decodes exactly as the
        dataset does.
        """
        if not self.resize_on_decode:
            return -1, -1
        return decode_size(int(row.get("width") or 0), int(row.get("height") or 0), self.short_side,
                           self.decode_scale_min_ratio)

    def read(self, row: dict, pick: Callable[[int], Sequence[int]]) -> torch.Tensor:
        """Frames ``pick(frame_count)`` of ``row``'s video, decoded as this dataset decodes (see ``read_clip``)."""
        return read_clip(row["path"], pick, self.short_side, size=(int(row.get("width") or 0),
                         int(row.get("height") or 0)), threads=self.decode_threads,
                         min_ratio=self.decode_scale_min_ratio, resize_on_decode=self.resize_on_decode)

    def _load(self, index: int) -> dict:
        row = self.rows[index]
        if self.mode == "train":
            frames = self.read(row, lambda n: sample_train_indices(n, self.num_frames))
        else:
            frames = self.read(row, lambda n: sample_multiview_indices(n, self.num_frames, self.num_clips).flatten())
        if self.mode == "train":
            clip = self.transform(frames)
        else:
            views = [self.transform(v) for v in frames.reshape(self.num_clips, self.num_frames, *frames.shape[1:])]
            if self.num_crops > 1:
                clip = torch.cat(views)  # each view is [num_crops, T, 3, s, s]; clip-major order
            else:
                clip = torch.stack(views) if self.num_clips > 1 else views[0]
        return {"video": clip, "label": self.label_of(row), "caption": row.get("caption") or "",
                "path": row["path"]}


def decode_size(width: int, height: int, short_side: int, min_ratio: float = 0.0) -> tuple[int, int]:
    """(width, height) decord should scale a ``width`` x ``height`` video to while decoding, or (-1, -1) for full
    size (also when the size is unknown, 0)."""
    if width <= 0 or height <= 0:
        return -1, -1
    target = short_side_size(width, height, short_side)
    # decord scales every frame it decodes while seeking, not only the T it returns, so scaling in the decoder pays
    # off only for sources much larger than needed (measured, 8 of 250 frames, gop 50: 1280x720 -> 455x256 281 ms vs
    # 361 ms decode-then-resize; 340x256 -> 170x128 97 ms vs 59 ms); same-size "scaling" is skipped (decord returns
    # identical pixels either way)
    if target != (width, height) and min(width, height) >= min_ratio * short_side:
        return target
    return -1, -1


def read_clip(source: Any, pick: Callable[[int], Sequence[int]], short_side: int, *,
              size: tuple[int, int] | None = None, threads: int = 1, min_ratio: float = 0.0,
              resize_on_decode: bool = True) -> torch.Tensor:
    """Decode frames ``pick(frame_count)`` of ``source`` -> uint8 [N, 3, H, W] with short side ``short_side``.

    The one decoding path of the loader, the frame cache and serving, so all of them see the same pixels: decord
    scales while decoding (``decode_size``; ``size`` is the source's (width, height), None: read from the file),
    and whatever is still off (decode-then-resize, frame folders) is resized to the same short side.
    """
    w = h = -1
    if resize_on_decode:
        if size is None:
            with open_video(source) as video:
                size = (video.info.width, video.info.height)
        w, h = decode_size(size[0], size[1], short_side, min_ratio)
    with open_video(source, width=w, height=h, threads=threads) as video:
        indices = pick(video.info.frames)
        frames = video.read(indices.tolist() if hasattr(indices, "tolist") else list(indices))
    return resize_short_side(frames, short_side)


def load_test_clip(source: Any, num_frames: int, image_size: int) -> torch.Tensor:
    """The test-time clip of one video: ``num_frames`` segment-midpoint frames, centre-cropped -> uint8
    [T, 3, image_size, image_size] (what the evaluation loader feeds the model for one view and one crop)."""
    transform = TestTransform(image_size)
    return transform(read_clip(source, lambda n: sample_test_indices(n, num_frames), transform.short_side))


def collate_clips(items: list[dict]) -> dict:
    """list of items -> {"video": uint8 [B, ...], "label": LongTensor [B], "caption": list[str], "path": list[str]}."""
    return {
        "video": torch.stack([it["video"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "caption": [it["caption"] for it in items],
        "path": [it["path"] for it in items],
    }


def _distributed_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def make_loader(
    dataset: VideoClipDataset,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    distributed: bool | None = None,
    seed: int = 0,
    drop_last: bool = False,
    *,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader yielding ``collate_clips`` batches.

    ``distributed=None`` uses a ``DistributedSampler`` exactly when torch.distributed is initialised with more than
    one process (call ``set_epoch(loader, epoch)`` every epoch so shuffles differ). ``pin_memory`` defaults to
    "CUDA is available"; workers are persistent by default (decord/ffmpeg start-up is paid once, not per epoch).
    ``seed`` fixes the shuffle order and the per-worker augmentation seeds.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    distributed = _distributed_active() if distributed is None else distributed
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    kwargs = {}
    if workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
        kwargs["persistent_workers"] = True if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        generator=generator,
        **kwargs,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Forward the epoch to a ``DistributedSampler`` (no-op otherwise), so each epoch shuffles differently."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
