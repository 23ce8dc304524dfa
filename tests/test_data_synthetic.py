"""The synthetic action dataset: deterministic, decodable, captioned, splits as the contract says, and its
direction classes need temporal information (one frame does not tell them apart)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actionclip.cli import main as cli_main
from actionclip.data import (
    DatasetFormatError, PreparedDataset, generate_synthetic, prepare_dataset, probe_video, read_frames,
)
from actionclip.data.synthetic import DEFAULT_HELDOUT, DEFAULT_SEEN, render_clip


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    src = generate_synthetic(root / "src", clips_per_class=3, pretrain_clips_per_class=1, frames=8, size=32, seed=7)
    return src, prepare_dataset(src, root / "prep", progress=False)


def test_default_classes_are_prompt_friendly_phrases():
    assert len(DEFAULT_SEEN) == 8 and len(DEFAULT_HELDOUT) == 3
    assert {"moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "rotating",
            "blinking"} == set(DEFAULT_SEEN)


def test_generates_decodable_captioned_h264_with_contract_splits(synth):
    src, ds = synth
    rows = ds.rows()
    assert len(rows) == 11 * 3 + 11 * 1 and ds.summary["rejected"] == 0
    assert ds.labels == list(DEFAULT_SEEN) and ds.heldout_labels == list(DEFAULT_HELDOUT)
    assert ds.summary["splits"] == {"train": 16, "val": 8, "heldout": 9, "pretrain": 11}
    assert {r["label"] for r in ds.rows("heldout")} == set(DEFAULT_HELDOUT)
    assert {r["label"] for r in ds.rows("pretrain")} == set(DEFAULT_SEEN + DEFAULT_HELDOUT)  # all classes
    assert not {r["label"] for r in ds.rows(["train", "val"])} & set(DEFAULT_HELDOUT)
    for r in rows:
        assert (r["frames"], r["width"], r["height"]) == (8, 32, 32)
        words = r["caption"].split()
        assert (words[0] == "a" and words[1] in ("small", "large") and len(words) >= 5) or words[:2] == ["an", "object"]
    r = ds.rows("train")[0]
    assert r["path"].endswith(".mp4")
    with open(r["path"], "rb") as fh:
        assert fh.read(12)[4:8] == b"ftyp"  # an ISO-BMFF (mp4) file
    import av

    with av.open(r["path"]) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    assert read_frames(r["path"], list(range(8))).shape == (8, 3, 32, 32)
    assert PreparedDataset.load(ds.root).dataset_hash == ds.dataset_hash


def test_deterministic_by_seed(synth, tmp_path):
    src, ds = synth
    again = generate_synthetic(tmp_path / "again", clips_per_class=3, pretrain_clips_per_class=1, frames=8, size=32,
                               seed=7, workers=2)  # another worker count must not change anything
    ann_a = (src / "annotations.jsonl").read_text()
    ann_b = (again / "annotations.jsonl").read_text()
    assert ann_a == ann_b
    for row in map(json.loads, ann_a.splitlines()):
        assert (src / row["path"]).read_bytes() == (again / row["path"]).read_bytes(), row["path"]
    other = generate_synthetic(tmp_path / "other", classes=["growing"], clips_per_class=1,
                               pretrain_clips_per_class=0, frames=8, size=32, seed=8)
    a = read_frames(src / "videos/growing/clip_0000.mp4", range(8))
    b = read_frames(other / "videos/growing/clip_0000.mp4", range(8))
    assert not torch.equal(a, b)


def test_action_content_is_what_the_label_says():
    """Object masks from rendered clips: moving left/right shift the mass centre, growing/shrinking change the area,
    blinking makes the object vanish."""
    def obj_mask(action, seed):
        rng = np.random.default_rng(seed)
        a = render_clip(action, "square", "white", "large", 12, 64, 0.0, rng).astype(float)
        return a.min(axis=-1) > 235  # white object; backgrounds stay below ~230 (150 + texture)

    for seed in range(5):
        area = obj_mask("growing", seed).sum(axis=(1, 2))
        assert area[-1] > 3 * area[0]
        area = obj_mask("shrinking", seed).sum(axis=(1, 2))
        assert area[0] > 3 * area[-1]
        vis = obj_mask("blinking", seed).sum(axis=(1, 2))
        assert (vis == 0).any() and (vis > 0).any()
        still = obj_mask("standing still", seed).sum(axis=(1, 2))
        assert (still > 0).all()


def test_periodic_actions_survive_test_time_sampling():
    """Blinking and shaking stay visible as such in the T=8 test frames of a 16-frame clip (a 1-frame toggle would
    alias with the stride-2 sampling and look static)."""
    from actionclip.data import sample_test_indices

    idx = sample_test_indices(16, 8).numpy()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        blink = render_clip("blinking", "square", "white", "large", 16, 64, 0.0, rng).astype(float)
        vis = (blink.min(axis=-1) > 235).sum(axis=(1, 2))[idx]
        assert (vis == 0).any() and (vis > 0).any(), seed
        rng = np.random.default_rng(seed)
        shake = render_clip("shaking", "square", "white", "large", 16, 64, 0.0, rng).astype(float)
        mask = shake.min(axis=-1) > 235
        cols = [np.nonzero(m.any(axis=0))[0].mean() for m in mask[idx]]
        assert max(cols) - min(cols) > 1.0, seed


def _object_x(frame: np.ndarray) -> float:
    """Mean x of the red object's pixels, as an angle (radians) on the frame width."""
    f = frame.astype(int)
    ys, xs = np.nonzero((f[..., 0] > 200) & (f[..., 1] < 90) & (f[..., 2] < 90))
    theta = 2 * np.pi * xs / frame.shape[1]
    return float(np.angle(np.exp(1j * theta).mean()))


def test_direction_needs_time_not_a_single_frame():
    n, S, F = 60, 32, 8
    clips = {a: [render_clip(a, shp, "red", "large", F, S, 6.0, np.random.default_rng([1, i, k]))
                 for i, shp in zip(range(n), ["circle", "square", "triangle", "rectangle"] * n)]
             for k, a in enumerate(("moving left", "moving right"))}
    # temporal: the sign of the frame-to-frame shift gives the direction almost always
    def direction(c):
        steps = [np.angle(np.exp(1j * (_object_x(c[t + 1]) - _object_x(c[t])))) for t in range(F - 1)]
        return np.sign(sum(steps))

    correct = sum(direction(c) == (-1 if a == "moving left" else 1) for a, cs in clips.items() for c in cs)
    assert correct / (2 * n) > 0.9
    # single frame: nearest-centroid on one random frame per clip (half for fitting, half for testing) is chance
    rng = np.random.default_rng(0)
    feats = {a: np.stack([c[rng.integers(F)].astype(float).reshape(-1) for c in cs]) for a, cs in clips.items()}
    centroids = {a: f[: n // 2].mean(0) for a, f in feats.items()}
    hits = 0
    for a, f in feats.items():
        for x in f[n // 2:]:
            pred = min(centroids, key=lambda c: np.linalg.norm(x - centroids[c]))
            hits += pred == a
    assert hits / n < 0.7  # 60 test frames: chance is 0.5, 0.7 is > 3 standard deviations above it


def test_action_only_captions_change_captions_not_videos(tmp_path):
    kw = dict(classes=["moving left", "shaking"], heldout=[], clips_per_class=3, pretrain_clips_per_class=0,
              frames=4, size=16, seed=3)
    rows = {}
    for frac in (0.0, 1.0):
        out = generate_synthetic(tmp_path / str(frac), action_only_captions=frac, **kw)
        rows[frac] = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    for full, bare in zip(rows[0.0], rows[1.0]):
        assert full["path"] == bare["path"] and full["caption"].split()[1] in ("small", "large")
        assert bare["caption"].startswith("an object ") and full["caption"].endswith(bare["caption"][len("an object"):])
        assert (tmp_path / "0.0" / full["path"]).read_bytes() == (tmp_path / "1.0" / bare["path"]).read_bytes()
    with pytest.raises(DatasetFormatError, match="action_only_captions"):
        generate_synthetic(tmp_path / "bad", action_only_captions=1.5, **kw)


def test_generation_speed_is_interactive(tmp_path):
    # not a timed assertion: just shows that a realistic default-sized generation runs (benchmark prints timings)
    out = generate_synthetic(tmp_path / "s", classes=["moving up", "rotating"], clips_per_class=2,
                             pretrain_clips_per_class=1, seed=1)
    info = probe_video(out / "videos/rotating/clip_0001.mp4")
    assert (info.frames, info.width, info.fps) == (16, 64, 8.0)


def test_bad_config_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="unknown synthetic action"):
        generate_synthetic(tmp_path, classes=["dancing"])
    with pytest.raises(DatasetFormatError, match="held-out"):
        generate_synthetic(tmp_path, classes=["growing"], heldout=["shaking"])
    with pytest.raises(DatasetFormatError, match="even"):
        generate_synthetic(tmp_path, size=33)


def test_cli_synth_and_prepare(tmp_path, capsys):
    rc = cli_main(["data", "synth", str(tmp_path / "s"), "--classes", "moving left,moving right,blinking",
                   "--heldout", "blinking", "--clips-per-class", "2", "--pretrain-clips-per-class", "1",
                   "--frames", "8", "--size", "32", "--workers", "1", "--prepare", str(tmp_path / "p")])
    assert rc == 0
    ds = PreparedDataset.load(tmp_path / "p")
    assert ds.labels == ["moving left", "moving right"] and ds.heldout_labels == ["blinking"]
    assert "prepared 9 videos" in capsys.readouterr().out
