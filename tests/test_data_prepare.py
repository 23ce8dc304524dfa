"""Dataset preparation over real files: bad videos are rejected with reasons, formats parse, probes are cached."""
from __future__ import annotations

import hashlib
import json

import pytest

from actionclip.cli import main as cli_main
from actionclip.data import DatasetError, DatasetFormatError, PreparedDataset, prepare_dataset, read_label_map
from actionclip.data.formats import detect_format
from test_data_helpers import write_frame_folder, write_video


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory):
    """Six small real H.264 clips per class for two classes, in root/<label>/ (the 'folder' format)."""
    root = tmp_path_factory.mktemp("folder")
    for label in ("jumping", "running"):
        for i in range(6):
            write_video(root / label / f"{label}_{i}.mp4", n=10 + i)
    return root


@pytest.fixture
def messy(tmp_path, good_videos):
    """A copy of the good folder plus a zero-byte file, a truncated mp4, a text file renamed .mp4 and a README."""
    import shutil

    root = tmp_path / "messy"
    shutil.copytree(good_videos, root)
    (root / "jumping" / "zero.mp4").write_bytes(b"")
    data = (root / "running" / "running_5.mp4").read_bytes()
    (root / "running" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "running" / "notes.mp4").write_text("not a video, just text\n")
    (root / "running" / "README.txt").write_text("ignored: not a video extension\n")
    return root


def test_prepare_folder_rejects_each_bad_file_with_a_reason(messy, tmp_path):
    out = tmp_path / "prep"
    ds = prepare_dataset(messy, out, val_fraction=0.34, max_bad_fraction=0.5, progress=True, workers=2)
    for name in ("manifest.jsonl", "labels.txt", "heldout_labels.txt", "summary.json", "rejected.jsonl"):
        assert (out / name).is_file(), name
    rows = ds.rows()
    assert len(rows) == 12 and all("/zero.mp4" not in r["path"] and "truncated" not in r["path"] for r in rows)
    assert set(rows[0]) == {"path", "label", "split", "caption", "frames", "fps", "width", "height", "duration"}
    assert {r["frames"] for r in rows if r["label"] == "running"} == set(range(10, 16))
    assert all(r["width"] == 64 and r["height"] == 48 and r["fps"] == 25.0 for r in rows)
    rejected = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in _read_jsonl(out / "rejected.jsonl")}
    assert set(rejected) == {"zero.mp4", "truncated.mp4", "notes.mp4"}
    assert "empty file" in rejected["zero.mp4"]
    assert "cannot open video" in rejected["truncated.mp4"] and "cannot open video" in rejected["notes.mp4"]
    # labels, stratified split: 6 per class -> 2 val + 4 train each
    assert ds.labels == ["jumping", "running"] and ds.heldout_labels == []
    for label in ds.labels:
        splits = [r["split"] for r in rows if r["label"] == label]
        assert splits.count("val") == 2 and splits.count("train") == 4
    s = ds.summary
    assert s["rejected"] == 3 and s["ignored_files"] == 1 and s["splits"]["train"] == 8
    assert s["dataset_hash"] == hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest() == ds.dataset_hash
    assert PreparedDataset.load(out).rows("val") == ds.rows("val")


def test_bad_fraction_limit_fails_but_keeps_the_report(messy, tmp_path):
    out = tmp_path / "prep"
    with pytest.raises(DatasetError, match=r"3 of 15 videos rejected .*rejected.jsonl"):
        prepare_dataset(messy, out, max_bad_fraction=0.1, progress=False)
    assert len(_read_jsonl(out / "rejected.jsonl")) == 3
    assert not (out / "manifest.jsonl").exists()


def test_mmaction_list_with_every_kind_of_bad_entry_and_heldout(messy, tmp_path):
    label_map = tmp_path / "label_map.txt"
    label_map.write_text("jumping\nrunning\nswimming\n")
    lst = tmp_path / "train_list_videos.txt"
    lines = [f"jumping/jumping_{i}.mp4 0" for i in range(6)] + [f"running/running_{i}.mp4 1" for i in range(6)]
    lines += ["swimming/never_downloaded.mp4 2", "jumping/zero.mp4 0", "running/truncated.mp4 1",
              "running/notes.mp4 1"]
    lst.write_text("\n".join(lines) + "\n")
    assert detect_format(lst) == "mmaction"
    ds = prepare_dataset(lst, tmp_path / "prep", label_map=label_map, video_root=messy, heldout=["running"],
                         max_bad_fraction=0.3, progress=False)
    assert len(ds.rows()) == 12
    rejected = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in _read_jsonl(tmp_path / "prep" / "rejected.jsonl")}
    assert rejected["never_downloaded.mp4"] == "file not found"
    assert rejected["zero.mp4"] == "empty file (0 bytes)"
    assert rejected["truncated.mp4"].startswith("cannot open video") and rejected["notes.mp4"].startswith("cannot")
    assert len(rejected) == 4 and ds.summary["rejected_reasons"] == {
        "file not found": 1, "empty file": 1, "cannot open video": 2}
    assert ds.labels == ["jumping", "swimming"] and ds.heldout_labels == ["running"]
    assert {r["split"] for r in ds.rows() if r["label"] == "jumping"} == {"train"}  # split from the file name
    assert len(ds.rows("heldout")) == 6 and all(r["label"] == "running" for r in ds.rows("heldout"))


def test_kinetics_csv(tmp_path):
    root = tmp_path / "k400"
    write_video(root / "train" / "air drumming" / "abc_000010_000020.mp4", n=12)
    write_video(root / "train" / "air_drumming" / "def_000000_000010.mp4", n=12)
    write_video(root / "val" / "ghi_000005_000015.mp4", n=12)
    csv = root / "kinetics400_train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   "air drumming,abc,10,20,train,0\n"
                   "air drumming,def,0,10,train,0\n"
                   "yoga,ghi,5,15,validate,0\n"
                   "yoga,zzz,1,11,validate,0\n")
    assert detect_format(csv) == "kinetics"
    ds = prepare_dataset(csv, tmp_path / "prep", max_bad_fraction=0.5, progress=False)
    assert ds.labels == ["air drumming", "yoga"]
    assert sorted((r["label"], r["split"]) for r in ds.rows()) == [
        ("air drumming", "train"), ("air drumming", "train"), ("yoga", "val")]
    rejected = _read_jsonl(tmp_path / "prep" / "rejected.jsonl")
    assert len(rejected) == 1 and "zzz_000001_000011" in rejected[0]["path"]


def test_actionclip_frame_lists_and_id_name_label_csv(tmp_path):
    for i in range(3):
        write_frame_folder(tmp_path / "frames" / f"v{i}", 6 + i)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,abseiling\n1,air drumming\n")
    assert read_label_map(labels) == ["abseiling", "air drumming"]
    lst = tmp_path / "val_frames.txt"
    lst.write_text(f"{tmp_path}/frames/v0 6 0\nframes/v1 7 1\nframes/v2 8 1\n")
    assert detect_format(lst) == "frames"
    ds = prepare_dataset(lst, tmp_path / "prep", label_map=labels, progress=False)
    rows = ds.rows()
    assert [r["frames"] for r in rows] == [6, 7, 8] and {r["split"] for r in rows} == {"val"}
    assert [r["label"] for r in rows] == ["abseiling", "air drumming", "air drumming"]
    assert rows[0]["fps"] == 0.0 and rows[0]["width"] == 40


def test_caption_lists_jsonl_and_webvid_csv(good_videos, tmp_path):
    jl = tmp_path / "caps.jsonl"
    jl.write_text(json.dumps({"video": str(good_videos / "jumping" / "jumping_0.mp4"),
                              "caption": "a person jumps over a fence"}) + "\n")
    pages = tmp_path / "webvid"
    write_video(pages / "001" / "777.mp4", n=9)
    csv = tmp_path / "results_2M_val.csv"
    csv.write_text("videoid,contentUrl,duration,page_dir,name\n777,http://x,PT00H00M09S,001,\"aerial view, city\"\n")
    ds = prepare_dataset(good_videos, tmp_path / "prep", captions=[jl, pages.parent / csv.name],
                         video_root=pages, progress=False)
    pre = ds.rows("pretrain")
    assert [r["caption"] for r in pre] == ["aerial view, city"]
    assert pre[0]["label"] is None and pre[0]["frames"] == 9
    # a caption list naming a video that is already a labelled row gives that row its caption (no duplicate row)
    jump0 = [r for r in ds.rows() if r["path"].endswith("jumping_0.mp4")]
    assert len(jump0) == 1 and jump0[0]["caption"] == "a person jumps over a fence" and jump0[0]["split"] != "pretrain"
    assert ds.summary["duplicates"] == 1


def test_probe_cache_reuses_unchanged_files(good_videos, tmp_path):
    out = tmp_path / "prep"
    prepare_dataset(good_videos, out, progress=False)
    cache_file = out / "probe_cache.json"
    cache = json.loads(cache_file.read_text())
    target = str(good_videos / "jumping" / "jumping_0.mp4")
    assert cache[target]["info"]["frames"] == 10
    # plant a different (impossible) probe result for the unchanged file: a re-run must reuse it, not re-probe
    cache[target]["info"]["frames"] = 999
    cache_file.write_text(json.dumps(cache))
    ds = prepare_dataset(good_videos, out, progress=False)
    assert [r["frames"] for r in ds.rows() if r["path"] == target] == [999]
    # a changed file (new size/mtime) is probed again
    write_video(good_videos / "jumping" / "jumping_0.mp4", n=14)
    ds = prepare_dataset(good_videos, out, progress=False)
    assert [r["frames"] for r in ds.rows() if r["path"] == target] == [14]
    write_video(good_videos / "jumping" / "jumping_0.mp4", n=10)  # restore for other tests of the module


def test_user_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(DatasetFormatError, match="not found"):
        prepare_dataset(tmp_path / "nope", tmp_path / "out")
    bad = tmp_path / "list.txt"
    bad.write_text("a.mp4 zero\n")
    with pytest.raises(DatasetFormatError, match="cannot tell the annotation format"):
        prepare_dataset(bad, tmp_path / "out")
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.load(tmp_path)
    assert cli_main(["data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
