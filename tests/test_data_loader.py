"""VideoClipDataset / make_loader over real prepared data: shapes, labels, workers, bad-video substitution, DDP."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from actionclip.data import VideoClipDataset, generate_synthetic, make_loader, prepare_dataset, set_epoch
from actionclip.data.prepare import DatasetError
from test_data_helpers import decoded_index, write_video

T, SIZE = 4, 28


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    src = generate_synthetic(root / "src", classes=["moving left", "moving right", "growing", "blinking"],
                             heldout=["blinking"], clips_per_class=3, pretrain_clips_per_class=1, frames=8,
                             size=32, seed=3)
    return prepare_dataset(src, root / "prep", progress=False)


def _collect_garbage() -> None:
    """Run the cyclic GC now: a finished DataLoader iterator with persistent workers is freed (its workers
    joined) here rather than by a later collection inside another test, which showed up as a 10 s stall there."""
    import gc

    gc.collect()


def test_train_items(prepared):
    rows = prepared.rows("train")
    ds = VideoClipDataset(rows, prepared.labels, T, SIZE, mode="train")
    threads = torch.get_num_threads()
    item = ds[0]
    assert torch.get_num_threads() == threads  # the single-thread loading window is restored
    assert set(item) == {"video", "label", "caption", "path"}
    assert item["video"].shape == (T, 3, SIZE, SIZE) and item["video"].dtype == torch.uint8
    assert item["label"] == prepared.labels.index(rows[0]["label"]) and item["caption"] == rows[0]["caption"]
    assert item["path"] == rows[0]["path"]


def test_multiview_items_and_heldout_labels(prepared):
    rows = prepared.rows("heldout")
    ds = VideoClipDataset(rows, prepared.labels, T, SIZE, mode="test", num_clips=2, num_crops=3)
    item = ds[0]
    assert item["video"].shape == (6, T, 3, SIZE, SIZE)
    assert item["label"] == -1  # held-out label is not in the closed-set labels
    single = VideoClipDataset(rows, prepared.labels, T, SIZE, mode="test")[0]["video"]
    assert single.shape == (T, 3, SIZE, SIZE)
    crops = VideoClipDataset(rows, prepared.labels, T, SIZE, mode="test", num_crops=3)[0]["video"]
    assert crops.shape == (3, T, 3, SIZE, SIZE) and torch.equal(crops[1], single)  # middle crop = centre crop
    assert VideoClipDataset(rows, prepared.heldout_labels, T, SIZE, mode="test")[0]["label"] == 0
    with pytest.raises(ValueError, match="test-time"):
        VideoClipDataset(rows, prepared.labels, T, SIZE, mode="train", num_clips=2)


def test_multiview_views_follow_the_sampling(tmp_path):
    """Clip-major views over an index-coded video: view k holds frames floor(i*N/T + (k+.5)*N/(T*K))."""
    path = write_video(tmp_path / "v.mp4", w=64, h=48, n=24)
    row = {"path": str(path), "label": "x", "width": 64, "height": 48}
    video = VideoClipDataset([row], ["x"], 4, 32, mode="test", num_clips=3)[0]["video"]
    assert video.shape == (3, 4, 3, 32, 32)
    got = [[decoded_index(f) for f in view] for view in video]
    assert got == [[(2 * i * 3 + 2 * k + 1) * 24 // (2 * 4 * 3) for i in range(4)] for k in range(3)]


def test_resize_on_decode_and_decode_then_resize_agree(prepared):
    rows = prepared.rows("val")  # 32x32 sources; crop 14 -> short side 16: decord scales 2x while decoding
    a = VideoClipDataset(rows, prepared.labels, T, 14, mode="test", decode_scale_min_ratio=1.0)[1]["video"].float()
    b = VideoClipDataset(rows, prepared.labels, T, 14, mode="test", resize_on_decode=False)[1]["video"].float()
    assert a.shape == b.shape == (T, 3, 14, 14) and (a - b).abs().mean() < 8


def test_loader_batches_with_workers(prepared):
    ds = VideoClipDataset(prepared.rows(["train", "pretrain"]), prepared.labels, T, SIZE, mode="train")
    loader = make_loader(ds, batch_size=4, shuffle=True, workers=2, seed=1)
    assert loader.persistent_workers and not isinstance(loader.sampler, DistributedSampler)
    seen = []
    for epoch in range(2):
        set_epoch(loader, epoch)
        for batch in loader:
            assert set(batch) == {"video", "label", "caption", "path"}
            B = len(batch["path"])
            assert batch["video"].shape == (B, T, 3, SIZE, SIZE) and batch["video"].dtype == torch.uint8
            assert batch["label"].dtype == torch.long and batch["label"].shape == (B,)
            assert len(batch["caption"]) == B and all(batch["caption"])
            seen += batch["path"]
    assert sorted(seen) == sorted([r["path"] for r in ds.rows] * 2)
    assert ds.bad_count == 0
    del loader
    _collect_garbage()


def test_bad_video_is_substituted_not_fatal(prepared, tmp_path):
    rows = [dict(r) for r in prepared.rows("train")]
    broken = tmp_path / "broken.mp4"
    shutil.copy(rows[0]["path"], broken)
    broken.write_bytes(broken.read_bytes()[:200])  # the file went bad after preparation
    rows[0]["path"] = str(broken)
    gone = dict(rows[1], path=str(tmp_path / "deleted.mp4"))
    rows.append(gone)
    ds = VideoClipDataset(rows, prepared.labels, T, SIZE, mode="train")
    loader = make_loader(ds, batch_size=3, workers=2)
    paths = [p for batch in loader for p in batch["path"]]
    assert len(paths) == len(rows)  # the epoch completed with full batches
    assert str(broken) not in paths and gone["path"] not in paths
    assert ds.bad_count >= 2  # counted across worker processes (a substitute may itself be one of the bad two)
    del loader
    _collect_garbage()
    # in-process too, and the bad path is recorded
    ds0 = VideoClipDataset(rows[:-1], prepared.labels, T, SIZE, mode="train")
    item = ds0[0]
    assert ds0.bad_count == 1 and ds0.bad_paths == [str(broken)] and item["path"] != str(broken)
    # if nothing can be read, it stops with one clear error instead of looping forever
    dead = VideoClipDataset([dict(rows[0])], prepared.labels, T, SIZE, max_retries=2)
    with pytest.raises(DatasetError, match="3 consecutive clips failed"):
        dead[0]


def _ddp_worker(rank: int, world: int, init_file: str, rows: list, labels: list, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = VideoClipDataset(rows, labels, T, SIZE, mode="test")
        loader = make_loader(ds, batch_size=2, shuffle=True, workers=0, seed=5)  # distributed=None -> auto
        assert isinstance(loader.sampler, DistributedSampler)
        set_epoch(loader, 1)
        paths = [p for batch in loader for p in batch["path"]]
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as fh:
            fh.write("\n".join(paths))
    finally:
        dist.destroy_process_group()


def test_distributed_sampler_selection(prepared, tmp_path):
    """One-process gloo group: auto mode stays local for world_size 1; distributed=True shards with the seed."""
    import torch.distributed as dist

    ds = VideoClipDataset(prepared.rows("train"), prepared.labels, T, SIZE, mode="test")
    assert not isinstance(make_loader(ds, 2).sampler, DistributedSampler)  # no process group at all
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert not isinstance(make_loader(ds, 2).sampler, DistributedSampler)
        loader = make_loader(ds, 2, shuffle=True, distributed=True, seed=4)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.seed == 4
        set_epoch(loader, 3)
        assert loader.sampler.epoch == 3
        assert sorted(p for b in loader for p in b["path"]) == sorted(r["path"] for r in ds.rows)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_sampler_under_ddp(prepared, tmp_path):
    import torch.multiprocessing as mp

    rows = prepared.rows("train")  # 6 rows -> 3 per rank
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), rows, prepared.labels, str(tmp_path)), nprocs=2)
    shards = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert sorted(shards[0] + shards[1]) == sorted(r["path"] for r in rows)  # disjoint, covering shards
