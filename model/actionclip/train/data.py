"""Training-side data plumbing on top of ``actionclip.data``: deterministic, resumable batch order.

Two pieces make a run reproducible and resumable mid-epoch, whatever the number of ranks or loader workers:

* ``SeededClips`` produces item ``i`` of epoch ``e`` under RNGs seeded from (seed, e, i), so its frame sampling and
  augmentation do not depend on which worker or rank loads it, and adds ``"index"`` to the item.
* ``RankBatchSampler`` shuffles with (seed, epoch), cuts the permutation into global micro-batches and hands rank r
  its contiguous slice; it can start at any micro-batch, which is how a resumed run skips what it already trained on.
  Rank slices in rank order concatenate to the global micro-batch, so N processes see the same global batch as one.
"""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from actionclip.errors import ConfigError


def item_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from any parts (not Python's salted ``hash``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SeededClips(Dataset):
    """Wraps a clip dataset so item randomness depends only on (seed, epoch, index).

    Keys are ``(epoch, index)`` pairs (what ``RankBatchSampler`` yields, so persistent loader workers always know
    the epoch) or plain indices, which use the ``epoch`` attribute.
    """

    def __init__(self, base: Dataset, seed: int, color: Any = None) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self.color = color  # a TrainTransform: also draw each clip's colour augmentation (item "color")

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        s = item_seed(self.seed, "item", epoch, index)
        np_state, py_state = np.random.get_state(), random.getstate()
        # fork_rng restores the torch RNG afterwards, so loading in the main process (num_workers=0) does not shift
        # the training loop's own random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s % (2**32))
            random.seed(s)
            try:
                item = dict(self.base[index])
                if self.color is not None:  # from the same seeded stream, after the clip's own draws
                    item["color"] = self.color.color_params(item["video"].shape[0])
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
        item["index"] = index
        return item


class RankBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's (epoch, index) lists, one per micro-batch, for one epoch (drop-last: every batch is full).

    Args:
        num_items: dataset length.
        global_micro_batch: clips per micro-batch over all ranks (batch_size // accum_steps).
        rank, world_size: this process's place; global_micro_batch must divide by world_size.
        seed: shuffle seed; the order of epoch e is randperm(num_items) under (seed, e).
        shuffle: False keeps dataset order.
    """

    def __init__(self, num_items: int, global_micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if global_micro_batch % world_size:
            raise ConfigError(f"micro-batch of {global_micro_batch} clips cannot be split over {world_size} ranks")
        self.num_items = num_items
        self.global_micro_batch = global_micro_batch
        self.per_rank = global_micro_batch // world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_micro_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start = start_batch

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(item_seed(self.seed, "order", self.epoch))
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        G, b = self.global_micro_batch, self.per_rank
        for j in range(self.start, self.batches_per_epoch):
            chunk = order[j * G:(j + 1) * G]
            yield [(self.epoch, i) for i in chunk[self.rank * b:(self.rank + 1) * b]]


class CachedVideos(Dataset):
    """A ``VideoClipDataset`` (one view per item) that decodes each video once and keeps all its frames in memory.

    Frame sampling (train: random TSN indices, test: segment midpoints) and the dataset's transform still run on
    every item, so augmentation is unchanged; only the decoding is saved. Each loader worker keeps its own cache
    (use persistent workers). Memory: frames x 3 x H x W bytes per video at the decode size (short side
    ``size * 256 // 224``). A video whose frames cannot all be read falls back to the dataset's own loading.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self.frames: dict[int, torch.Tensor | None] = {}

    def __len__(self) -> int:
        return len(self.base)

    def _decode_all(self, index: int) -> torch.Tensor | None:
        row = self.base.rows[index]
        n = int(row.get("frames") or 0)
        if n < 1:
            return None
        try:
            return self.base.read(row, lambda _: range(n))
        except Exception:  # bad or short file: let the dataset's retry/substitute policy handle it per item
            return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        from actionclip.data import sample_test_indices, sample_train_indices

        if index not in self.frames:
            self.frames[index] = self._decode_all(index)
        frames = self.frames[index]
        if frames is None:
            return self.base[index]
        T = self.base.num_frames
        idx = sample_train_indices(len(frames), T) if self.base.mode == "train" else sample_test_indices(len(frames), T)
        row = self.base.rows[index]
        return {"video": self.base.transform(frames[idx]), "label": self.base.label_of(row),
                "caption": row.get("caption") or "", "path": row["path"]}


def few_shot_rows(rows: Sequence[dict], k: int, seed: int) -> list[dict]:
    """At most ``k`` rows per label, chosen with ``seed`` (stable across runs); dataset order is kept."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[row["label"]].append(i)
    rng = random.Random(item_seed(seed, "few-shot", k))
    keep: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        keep.update(idx if len(idx) <= k else rng.sample(idx, k))
    return [row for i, row in enumerate(rows) if i in keep]


def fill_template(template: str, label: str) -> str:
    """Put the class name into a template's ``{}`` (plain replacement: other braces stay as written)."""
    return template.replace("{}", label)


def pick_templates(templates: Sequence[str], seed: int, epoch: int, indices: Sequence[int]) -> list[str]:
    """One template per clip, drawn from (seed, epoch, clip index) so it does not depend on rank layout."""
    return [templates[item_seed(seed, "template", epoch, int(i)) % len(templates)] for i in indices]
