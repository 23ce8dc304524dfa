"""Checkpoint import: every source format, written by the tests in its documented key layout and dtypes, loads and
reproduces the original code's features (max relative error 1e-5 in float32); bad input fails with one clear line."""
from __future__ import annotations

import copy
import zipfile

import pytest
import torch

import actionclip
import reference_clip as R
from actionclip.checkpoint import detect_format, read_checkpoint

T = 8
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def reference():
    """An original-layout CLIP (weights rounded through fp16 as released) and an ActionCLIP Transf module."""
    torch.manual_seed(0)
    clip = R.CLIP()
    R.convert_weights_fp16(clip)
    released = clip.state_dict()  # mixed fp16 / fp32, like the OpenAI files
    clip.float().eval()
    fusion = R.VisualPromptTransf(embed=128, layers=2, rows=77).eval()
    adapter = R.VisualPromptTransf(embed=128, layers=2, rows=T, mmaction=True).eval()
    return clip, released, fusion, adapter


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, T, 3, 32, 32, generator=g)
    ids = actionclip.tokenize(["a photo of action abseiling", "air drumming", "The woman is air drumming"])
    return video, ids


def ref_video(clip, fusion, video):
    b, t = video.shape[:2]
    frames = clip.encode_image(video.flatten(0, 1)).view(b, t, -1)
    return fusion(frames)


def test_openai_state_dict_matches_original(tmp_path, reference, inputs):
    clip, released, _, _ = reference
    video, ids = inputs
    path = tmp_path / "clip.pt"
    torch.save(released, path)
    model = actionclip.load(path)
    assert detect_format(*read_checkpoint(path)) == "openai"
    assert model.config.fusion.kind == "meanP" and model.config.vision.patch_size == 8
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # fp32 tensors of a mixed checkpoint must not be rounded through fp16
    assert torch.equal(model.text.positional_embedding, released["positional_embedding"])
    with torch.no_grad():
        assert rel_err(model.encode_image(video[0]), clip.encode_image(video[0])) < 1e-5
        assert rel_err(model.encode_text(ids), clip.encode_text(ids)) < 1e-5
        assert rel_err(model.encode_video(video), clip.encode_image(video.flatten(0, 1)).view(2, T, -1).mean(1)) < 1e-5


def test_openai_torchscript_archive_is_read_without_running_code(tmp_path, reference, inputs):
    clip, _, _, _ = reference
    video, _ = inputs
    jit_model = copy.deepcopy(clip)
    R.convert_weights_fp16(jit_model)
    for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        setattr(jit_model, name, torch.nn.Parameter(torch.tensor(value), requires_grad=False))

    class ImageOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.encode_image(x)

    # weights were rounded through fp16 above (as released); tracing needs one dtype, so trace in float32
    traced = torch.jit.trace(ImageOnly(jit_model.float()).eval(), video[0])
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(traced, str(path))
    with zipfile.ZipFile(path) as z:
        assert any("/code/" in n for n in z.namelist())  # really a TorchScript archive
    content, container = read_checkpoint(path)
    assert container == "torchscript"
    # the archive keys carry the wrapper's prefix; strip it the way a user-facing archive would not have it
    state = {k.removeprefix("inner."): v for k, v in content.items()}
    model_state, cfg = actionclip.checkpoint.from_openai(state)
    model = actionclip.ActionCLIP(cfg)
    model.load_state_dict(model_state)
    with torch.no_grad():
        assert rel_err(model.encode_image(video[0]), clip.encode_image(video[0])) < 1e-5


def test_openai_torchscript_file_loads_end_to_end(tmp_path, reference, inputs):
    """A TorchScript archive whose root module is the CLIP model itself (the released layout)."""
    clip, _, _, _ = reference
    video, ids = inputs

    class Root(R.CLIP):
        def forward(self, x):
            return self.encode_image(x)

    root = Root()
    root.load_state_dict(clip.state_dict())
    root.input_resolution = torch.nn.Parameter(torch.tensor(32), requires_grad=False)
    traced = torch.jit.trace(root.eval(), video[0])
    path = tmp_path / "ViT-root.pt"
    torch.jit.save(traced, str(path))
    model = actionclip.load(path, fusion="Transf", num_frames=T)
    assert model.config.fusion.kind == "Transf"
    with torch.no_grad():
        assert rel_err(model.encode_text(ids), clip.encode_text(ids)) < 1e-5
        assert rel_err(model.encode_image(video[0]), clip.encode_image(video[0])) < 1e-5


def test_original_actionclip_checkpoint_matches_original(tmp_path, reference, inputs):
    clip, released, fusion, _ = reference
    video, ids = inputs
    ckpt = {
        "epoch": 49,
        "model_state_dict": released,
        "fusion_model_state_dict": {"module." + k: v for k, v in fusion.state_dict().items()},
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0, 1]}]},
    }
    path = tmp_path / "vit-b-16-8f.pt"
    torch.save(ckpt, path)
    model = actionclip.load(path)
    assert model.config.fusion.kind == "Transf" and model.config.fusion.position_rows == 77
    assert model.config.fusion.layers == 2 and model.num_frames == 8
    with torch.no_grad():
        assert rel_err(model.encode_video(video), ref_video(clip, fusion, video)) < 1e-5
        assert rel_err(model.encode_text(ids), clip.encode_text(ids)) < 1e-5
    # zero-shot scoring equals the original test-time rule (x100, softmax per template, mean over templates)
    labels = ["air drumming", "abseiling", "archery"]
    with torch.no_grad():
        v = torch.nn.functional.normalize(ref_video(clip, fusion, video), dim=-1)
        prompts = [t.format(c) for t in actionclip.TEMPLATES for c in labels]
        t = torch.nn.functional.normalize(clip.encode_text(actionclip.tokenize(prompts)), dim=-1)
        expected = (100.0 * v @ t.t()).view(2, 16, 3).softmax(-1).mean(1)
        got = actionclip.zero_shot_probs(model, video, labels)
    assert rel_err(got, expected) < 1e-5


def test_mmaction2_checkpoint_matches_original(tmp_path, reference, inputs):
    clip, released, _, adapter = reference
    video, _ = inputs
    state = {"clip." + k: v.float() for k, v in released.items()}
    state.update({"adapter." + k: v for k, v in adapter.state_dict().items()})
    path = tmp_path / "vit-b-32-8f.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, path)
    model = actionclip.load(path)
    assert detect_format(*read_checkpoint(path)) == "mmaction2"
    assert model.config.fusion.position_rows == T and model.num_frames == T
    with torch.no_grad():
        assert rel_err(model.encode_video(video), ref_video(clip, adapter, video)) < 1e-5


@pytest.mark.parametrize("source", ["actionclip", "mmaction2"])
def test_transf_heads_follow_the_text_width_as_the_original(tmp_path, source, inputs):
    """A CLIP whose text tower (width 256: 4 heads) is wider than its embedding (128): the original sizes the Transf
    fusion's heads from the text tower, and a head count is in no state dict, so the loader must apply that rule."""
    video, _ = inputs
    torch.manual_seed(3)
    clip = R.CLIP(embed=128, twidth=256).eval()
    state = clip.state_dict()
    rows = 77 if source == "actionclip" else T
    fusion = R.visual_prompt_for(state, layers=2, rows=rows, mmaction=source == "mmaction2").eval()
    assert fusion.transformer.resblocks[0].attn.num_heads == 4
    if source == "actionclip":
        ckpt = {"model_state_dict": state,
                "fusion_model_state_dict": {"module." + k: v for k, v in fusion.state_dict().items()}}
    else:
        inner = {"clip." + k: v for k, v in state.items()}
        inner.update({"adapter." + k: v for k, v in fusion.state_dict().items()})
        ckpt = {"state_dict": inner}
    path = tmp_path / f"{source}.pt"
    torch.save(ckpt, path)
    model = actionclip.load(path)
    assert model.config.fusion_heads == 4 and model.fusion.transformer.resblocks[0].attn.heads == 4
    with torch.no_grad():
        expected = ref_video(clip, fusion, video)
        assert rel_err(model.encode_video(video), expected) < 1e-5
        # the rule matters: embed_dim // 64 = 2 heads on the same weights computes other features
        other = R.VisualPromptTransf(embed=128, layers=2, rows=rows, mmaction=source == "mmaction2", heads=2).eval()
        other.load_state_dict(fusion.state_dict())
        assert rel_err(ref_video(clip, other, video), expected) > 1e-4  # 10x the tolerance above


def test_fusion_heads_rule_for_presets_and_new_fusions(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "clip.pt"
    torch.save(R.CLIP(embed=128, twidth=256).state_dict(), path)
    # a CLIP-only checkpoint given a new Transf fusion: the original builds it from the same state dict
    assert actionclip.load(path, fusion="Transf").fusion.transformer.resblocks[0].attn.heads == 4
    wide_text = actionclip.create_model("tiny-8", text={"width": 256, "heads": 4})
    assert wide_text.config.fusion_heads == 4 and wide_text.fusion.transformer.resblocks[0].attn.heads == 4
    for name in actionclip.list_presets():  # every preset: text width // 64
        cfg = actionclip.preset_config(name)
        assert cfg.fusion_heads == cfg.text.width // 64
    # Transf_cls: ActionCLIP's TAggregate has 8 heads whatever the width
    assert actionclip.create_model("tiny-8", fusion={"kind": "Transf_cls"}).config.fusion_heads == 8
    with pytest.raises(actionclip.ConfigError, match="heads do not divide embed_dim"):
        actionclip.create_model("tiny-8", embed_dim=90, text={"width": 256, "heads": 4})


def test_save_pretrained_round_trip(tmp_path, reference, inputs):
    video, ids = inputs
    model = actionclip.create_model("tiny-8", vision={"image_size": 32, "patch_size": 8})
    out = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    again = actionclip.load(out)
    assert again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model.encode_video(video), again.encode_video(video))
    # the single safetensors file carries its config too
    single = actionclip.load(out / "model.safetensors")
    assert single.config == model.config


def test_openai_export_is_the_original_layout(tmp_path, reference, inputs, capsys):
    """``actionclip model convert --to openai``: a weights-only file the original CLIP class loads strictly, giving
    the same features; the fusion is not part of it."""
    clip, released, fusion, _ = reference
    video, ids = inputs
    src = tmp_path / "ac.pt"
    torch.save({"model_state_dict": released,
                "fusion_model_state_dict": {"module." + k: v for k, v in fusion.state_dict().items()}}, src)
    out = tmp_path / "export" / "ViT-tiny.pt"
    from actionclip.cli import main as cli_main

    assert cli_main(["model", "convert", str(src), str(out), "--to", "openai"]) == 0
    printed = capsys.readouterr().out
    assert "OpenAI CLIP layout" in printed and "Transf fusion has no place" in printed
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values()) and not any(k.startswith("fusion") for k in state)
    peer = R.CLIP().eval()
    peer.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert rel_err(peer.encode_image(video[0]), clip.encode_image(video[0])) < 1e-5
        assert rel_err(peer.encode_text(ids), clip.encode_text(ids)) < 1e-5
    # and back again: the exported file is an ordinary OpenAI checkpoint
    assert detect_format(*read_checkpoint(out)) == "openai"
    # a safetensors export (open_clip reads those; OpenAI's clip does not)
    assert cli_main(["model", "convert", str(src), str(tmp_path / "e.safetensors"), "--to", "openai"]) == 0
    assert "head.weight" not in actionclip.checkpoint.read_checkpoint(tmp_path / "e.safetensors")[0]["state"]
    back = actionclip.load(tmp_path / "e.safetensors")  # the export's metadata keeps the activation
    assert back.config.vision.activation == "quick_gelu"
    with torch.no_grad():
        assert rel_err(back.encode_text(ids), clip.encode_text(ids)) < 1e-5


def test_num_frames_and_fusion_overrides(tmp_path, reference):
    _, released, fusion, _ = reference
    path = tmp_path / "ac.pt"
    torch.save({"model_state_dict": released,
                "fusion_model_state_dict": {"module." + k: v for k, v in fusion.state_dict().items()}}, path)
    assert actionclip.load(path, num_frames=32).num_frames == 32
    assert actionclip.load(path, fusion="meanP").config.fusion.kind == "meanP"
    # switching the fusion of a preset keeps the preset's fusion depth
    tiny = actionclip.load("tiny-8", fusion="Transf_cls").config.fusion
    assert tiny.kind == "Transf_cls" and tiny.layers == 2


# ------------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the cause, never a bare KeyError
# ------------------------------------------------------------------------------------------------------------------
def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_truncated_checkpoint(tmp_path, reference):
    _, released, _, _ = reference
    path = tmp_path / "clip.pt"
    torch.save(released, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(actionclip.CheckpointError) as e:
        actionclip.load(path)
    assert "clip.pt" in one_line_error(e)


def test_non_checkpoint_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(actionclip.CheckpointError) as e:
        actionclip.load(text)
    assert "notes.pt" in one_line_error(e)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(actionclip.CheckpointError, match="empty"):
        actionclip.load(empty)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(actionclip.CheckpointError, match="unrecognised checkpoint layout"):
        actionclip.load(other)


def test_missing_and_misshaped_keys(tmp_path, reference):
    _, released, fusion, _ = reference
    broken = dict(released)
    del broken["ln_final.bias"]
    broken["visual.ln_pre.weight"] = torch.ones(7)
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(actionclip.CheckpointError) as e:
        actionclip.load(path)
    msg = one_line_error(e)
    assert "broken.pt" in msg and "format openai" in msg
    assert "missing" in msg and "text.ln_final.bias" in msg
    assert "mis-shaped" in msg and "visual.norm_pre.weight" in msg

    no_proj = {k: v for k, v in released.items() if k != "visual.proj"}
    no_proj["visual.class_embedding"] = released["visual.class_embedding"]
    path2 = tmp_path / "noproj.pt"
    torch.save(no_proj, path2)
    with pytest.raises(actionclip.CheckpointError, match="visual.proj"):
        actionclip.load(path2)


def test_unknown_preset_and_too_many_frames(tmp_path, reference):
    with pytest.raises(actionclip.CheckpointError, match="no such file or directory.*tiny-8"):
        actionclip.load("ViT-Z/99-8")
    _, released, _, adapter = reference
    state = {"clip." + k: v for k, v in released.items()}
    state.update({"adapter." + k: v for k, v in adapter.state_dict().items()})
    path = tmp_path / "mm.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(actionclip.CheckpointError) as e:
        actionclip.load(path, num_frames=16)
    assert "num_frames=16" in one_line_error(e) and "8-row" in str(e.value)
    with pytest.raises(actionclip.ConfigError, match="unknown preset"):
        actionclip.preset_config("ViT-Z/99-8")
    with pytest.raises(actionclip.ConfigError, match="unknown fusion"):
        actionclip.create_model("tiny-8", fusion={"kind": "GRU"})
