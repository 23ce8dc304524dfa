"""``actionclip predict`` and the prediction engine: table/JSON output, label files and templates, one-line
errors, the text-feature cache, batching of videos, and the opt-in int8 path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import actionclip  # noqa: E402
from actionclip import zeroshot  # noqa: E402
from actionclip.cli import main  # noqa: E402
from actionclip.serving.packaging import example_clip_bytes  # noqa: E402
from actionclip.serving.predictor import VideoPredictor  # noqa: E402
from actionclip.serving.quantize import is_quantized, quantize_int8  # noqa: E402
from actionclip.serving.requests import parse_requests  # noqa: E402

LABELS = ["waving", "clapping", "jumping", "sitting"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model directory with labels.txt and prompt.json beside the weights, and two clips."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model_dir = root / "model"
    actionclip.create_model("tiny-8").save_pretrained(model_dir)
    (model_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (model_dir / "prompt.json").write_text(json.dumps({"templates": ["a video of {}", "{}, on video"]}))
    clips = []
    for i, (frames, size) in enumerate([(16, 64), (24, 96)]):
        p = root / f"clip{i}.mp4"
        p.write_bytes(example_clip_bytes(frames=frames, size=size))
        clips.append(p)
    return {"dir": model_dir, "clips": clips, "root": root}


@pytest.fixture(scope="module")
def predictor(ckpt):
    return VideoPredictor.from_files(ckpt["dir"], labels=ckpt["dir"] / "labels.txt", prompt=ckpt["dir"] / "prompt.json")


def _predict(predictor, rows):
    return [p.to_dict() for p in predictor.predict(parse_requests(rows, predictor.limits))]


def test_predict_json_matches_the_engine(ckpt, predictor, capsys):
    clips = [str(c) for c in ckpt["clips"]]
    assert main(["predict", *clips, "--checkpoint", str(ckpt["dir"]), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["video"] for o in out] == clips
    expected = _predict(predictor, [{"video": c, "top_k": 2} for c in clips])
    for o, e in zip(out, expected):
        assert o["labels"] == e["labels"] and o["probs"] == pytest.approx(e["probs"], abs=1e-6)
        assert len(o["labels"]) == 2 and set(o["labels"]) <= set(LABELS)
        assert o["probs"][0] >= o["probs"][1]


def test_predict_table_with_labels_templates_and_label_file(ckpt, capsys):
    clip = str(ckpt["clips"][0])
    assert main(["predict", clip, "--checkpoint", str(ckpt["dir"]), "--labels", "riding a bike", "swimming",
                 "--template", "a photo of {}", "--template", "someone is {}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == clip and len(lines) == 3
    assert {ln.split("%", 1)[1].strip() for ln in lines[1:]} == {"riding a bike", "swimming"}
    assert sum(float(ln.split("%")[0].split()[-1]) for ln in lines[1:]) == pytest.approx(100.0, abs=0.02)
    label_file = ckpt["root"] / "labels.txt"
    label_file.write_text("# zero-shot labels\nriding a bike\n\nswimming\n")
    assert main(["predict", clip, "--checkpoint", str(ckpt["dir"]), "--label-file", str(label_file), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert sorted(row["labels"]) == ["riding a bike", "swimming"]


@pytest.mark.parametrize("extra, message", [
    (["--template", "no placeholder"], "must contain exactly one '{}'"),
    (["--labels", "a", "a"], "duplicate label at position 1"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--label-file", "/nonexistent/labels.txt"], "label file not found"),
])
def test_predict_user_errors_are_one_line(ckpt, capsys, extra, message):
    assert main(["predict", str(ckpt["clips"][0]), "--checkpoint", str(ckpt["dir"]), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_predict_missing_or_unreadable_video(ckpt, capsys, tmp_path):
    assert main(["predict", str(tmp_path / "none.mp4"), "--checkpoint", str(ckpt["dir"])]) == 2
    assert "video file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 20)
    assert main(["predict", str(junk), "--checkpoint", str(ckpt["dir"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "unreadable video" in err and len(err.splitlines()) == 1


def test_text_features_cached_per_label_set(ckpt, monkeypatch):
    calls = []
    real = zeroshot.prompt_features  # the text encoding itself, behind the model's prompt-feature cache

    def counting(model, labels, templates=None, *rest):
        calls.append((tuple(labels), tuple(templates or ())))
        return real(model, labels, templates, *rest)

    monkeypatch.setattr(zeroshot, "prompt_features", counting)
    p = VideoPredictor.from_files(ckpt["dir"], labels=LABELS)
    clip = str(ckpt["clips"][0])
    first = _predict(p, [{"video": clip, "labels": ["a", "b"]}])
    again = _predict(p, [{"video": clip, "labels": ["a", "b"]}, {"video": clip, "labels": ["a", "b"]}])
    assert len(calls) == 1 and p.text_cache.hits == 1 and p.text_cache.misses == 1
    assert first[0]["probs"] == pytest.approx(again[0]["probs"], abs=1e-6)
    assert again[0]["probs"] == pytest.approx(again[1]["probs"], abs=1e-6)
    _predict(p, [{"video": clip, "labels": ["b", "a"]}, {"video": clip}])  # two new label sets
    assert len(calls) == 3 and p.text_cache.misses == 3


def test_videos_in_a_request_are_batched(ckpt, predictor, monkeypatch):
    shapes = []
    real = predictor.model.encode_video

    def spy(video):
        shapes.append(tuple(video.shape))
        return real(video)

    monkeypatch.setattr(predictor.model, "encode_video", spy)
    rows = [{"video": str(c)} for c in ckpt["clips"]] + [{"video": str(ckpt["clips"][0]), "labels": ["x", "y"]}]
    out = _predict(predictor, rows)
    size = predictor.model.image_size
    assert shapes == [(3, predictor.model.num_frames, 3, size, size)]
    alone = _predict(predictor, [{"video": str(ckpt["clips"][1])}])
    assert out[1]["probs"] == pytest.approx(alone[0]["probs"], abs=1e-5)  # batching does not change answers
    assert out[2]["labels"][0] in ("x", "y")


def test_int8_path(ckpt, predictor, capsys):
    q = quantize_int8(predictor.model)
    assert is_quantized(q) and not is_quantized(predictor.model)
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in q.modules())
    p8 = VideoPredictor(q, LABELS, predictor.templates)
    rows = [{"video": str(c), "return_all": True} for c in ckpt["clips"]]
    fp32, int8 = _predict(predictor, rows), _predict(p8, rows)
    for a, b in zip(fp32, int8):
        assert sum(b["all_probs"].values()) == pytest.approx(1.0, abs=1e-5)
        # int8 changes the numbers a little, not the answer: same top label. (The random model's probabilities are
        # peaked enough, 0.51/0.33/0.15/0.01, that int8 moves a middle one by ~0.1.)
        assert max(a["all_probs"], key=a["all_probs"].get) == max(b["all_probs"], key=b["all_probs"].get)
        assert max(abs(a["all_probs"][k] - b["all_probs"][k]) for k in LABELS) < 0.15
    assert main(["predict", str(ckpt["clips"][0]), "--checkpoint", str(ckpt["dir"]), "--int8", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row["labels"]) == set(LABELS)
