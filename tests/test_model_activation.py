"""The towers' activation setting: QuickGELU (OpenAI, ActionCLIP, MMAction2) or exact GELU (open_clip's own
architectures). Weights cannot tell the two apart, so it comes from the format, an open_clip model name or the
caller; it is saved with the model and travels into MLflow with it. Checked against the reference implementation."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import actionclip
import reference_clip as R
from actionclip.cli import main as cli_main


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def clips():
    """Reference CLIPs with the same weights, one with each activation, and their state dict (OpenAI layout)."""
    torch.manual_seed(0)
    quick = R.CLIP().eval()
    gelu = R.CLIP(act=nn.GELU).eval()
    gelu.load_state_dict(quick.state_dict())
    return quick, gelu, quick.state_dict()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=g), actionclip.tokenize(["air drumming", "a photo of abseiling"])


def test_config_interface_and_towers():
    assert actionclip.VisionConfig().activation == "quick_gelu" and actionclip.TextConfig().activation == "quick_gelu"
    assert actionclip.ACTIVATIONS == ("quick_gelu", "gelu")
    model = actionclip.create_model("tiny-8", vision={"activation": "gelu"}, text={"activation": "gelu"})
    assert type(model.visual.blocks[0].mlp.act).__name__ == "GELU"  # timm's exact GELU (numerics checked below)
    assert type(model.text.transformer.resblocks[0].mlp.gelu) is nn.GELU
    default = actionclip.create_model("tiny-8")
    assert type(default.visual.blocks[0].mlp.act).__name__ == "QuickGELU"
    assert type(default.text.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    # the temporal fusion keeps the original's QuickGELU whatever the towers use
    assert type(model.fusion.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    with pytest.raises(actionclip.ConfigError, match="unknown activation 'relu'"):
        actionclip.VisionConfig(activation="relu")


def test_load_with_activation_matches_the_reference(tmp_path, clips, inputs):
    quick, gelu, state = clips
    images, ids = inputs
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    default = actionclip.load(path)
    as_gelu = actionclip.load(path, activation="gelu")
    assert default.config.vision.activation == "quick_gelu" and as_gelu.config.text.activation == "gelu"
    with torch.no_grad():
        assert rel_err(default.encode_image(images), quick.encode_image(images)) < 1e-5
        assert rel_err(as_gelu.encode_image(images), gelu.encode_image(images)) < 1e-5
        assert rel_err(as_gelu.encode_text(ids), gelu.encode_text(ids)) < 1e-5
        # and the setting matters: the other activation on the same weights is measurably off
        assert rel_err(default.encode_text(ids), gelu.encode_text(ids)) > 1e-3
    # an open_clip model name sets its activation; an explicit activation wins over the name
    assert actionclip.load(path, open_clip_model="ViT-B-32").config.vision.activation == "gelu"
    assert actionclip.load(path, open_clip_model="ViT-B-32-quickgelu").config.vision.activation == "quick_gelu"
    assert actionclip.load(path, open_clip_model="ViT-B-32", activation="quick_gelu").config.text.activation == "quick_gelu"
    with pytest.raises(actionclip.CheckpointError, match="unknown activation 'swish'"):
        actionclip.load(path, activation="swish")


def test_saved_with_the_model(tmp_path, clips, inputs):
    _, gelu, state = clips
    images, _ = inputs
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    out = actionclip.load(path, activation="gelu").save_pretrained(tmp_path / "m")
    saved = json.loads((out / "config.json").read_text())
    assert saved["vision"]["activation"] == "gelu" and saved["text"]["activation"] == "gelu"
    again = actionclip.load(out)
    assert again.config.vision.activation == "gelu"
    with torch.no_grad():
        assert rel_err(again.encode_image(images), gelu.encode_image(images)) < 1e-5
    # a config.json written before the setting existed means QuickGELU, which was the only activation then
    for tower in ("vision", "text"):
        del saved[tower]["activation"]
    (out / "config.json").write_text(json.dumps(saved))
    assert actionclip.load(out).config.vision.activation == "quick_gelu"


def test_open_clip_files_carry_their_activation(tmp_path, clips, inputs, caplog):
    quick, gelu, state = clips
    images, _ = inputs
    # the hub layout: open_clip_config.json names the model's activation
    for flag, ref in ((True, quick), (False, gelu)):
        hub = tmp_path / f"hub-{flag}"
        hub.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, str(hub / "open_clip_model.safetensors"))
        model_cfg = {"embed_dim": 128, "vision_cfg": {"width": 128}, "text_cfg": {"width": 128}}
        if flag:
            model_cfg["quick_gelu"] = True
        (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
        model = actionclip.load(hub)
        assert actionclip.checkpoint.detect_format(*actionclip.checkpoint.read_checkpoint(hub)) == "open_clip"
        assert model.config.vision.activation == ("quick_gelu" if flag else "gelu")
        with torch.no_grad():
            assert rel_err(model.encode_image(images), ref.encode_image(images)) < 1e-5
    # a bare open_clip_model.safetensors or a training checkpoint: open_clip's default GELU, said in the log
    bare = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bare))
    train_ckpt = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "laion-run", "state_dict": {"module." + k: v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}}, train_ckpt)
    for path in (bare, train_ckpt):
        with caplog.at_level(logging.WARNING, logger="actionclip.checkpoint"):
            caplog.clear()
            model = actionclip.load(path)
        assert model.config.vision.activation == "gelu" and "assuming GELU" in caplog.text
        assert actionclip.load(path, activation="quick_gelu").config.text.activation == "quick_gelu"
    # options that change the computation in ways this port does not follow are refused, by name
    odd = tmp_path / "hub-True"
    (odd / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"text_cfg": {"pool_type": "last"}}}))
    with pytest.raises(actionclip.CheckpointError, match="text_cfg.pool_type='last'"):
        actionclip.load(odd)


def test_cli_activation_options(tmp_path, clips, capsys):
    _, _, state = clips
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    assert cli_main(["model", "convert", str(path), str(tmp_path / "g"), "--open-clip-model", "ViT-B-32"]) == 0
    assert "gelu activation" in capsys.readouterr().out
    assert json.loads((tmp_path / "g" / "config.json").read_text())["text"]["activation"] == "gelu"
    assert cli_main(["model", "info", str(path), "--activation", "gelu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "openai" and info["activation"]["vision"] == "gelu"
    assert info["activation"]["set_by"] == "--activation" and info["activation"]["format_assumes"].startswith("quick_gelu")
    assert info["activation_by_format"]["mmaction2"] == "quick_gelu" and "gelu" in info["activation_by_format"]["open_clip"]
    with pytest.raises(SystemExit):
        cli_main(["model", "info", str(path), "--activation", "relu"])


def test_logged_to_mlflow_with_the_model(tmp_path, clips, monkeypatch):
    """A stage run on a GELU model: the MLflow run's model artifact carries the activation in its config.json."""
    import mlflow

    from actionclip.train import PretrainConfig
    from actionclip.train.pretraining import pretrain

    _, _, state = clips
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    actionclip.load(path, activation="gelu").save_pretrained(tmp_path / "gelu-model")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    result = pretrain(PretrainConfig(model=str(tmp_path / "gelu-model"), out_dir=str(tmp_path / "imp"),
                                     experiment="activation-test"))
    client = mlflow.MlflowClient(tracking_uri=store)  # not a URI another test left set in this process
    local = client.download_artifacts(result.run_id, "model/config.json", str(tmp_path / "dl"))
    logged = json.loads(open(local).read())
    assert logged["vision"]["activation"] == "gelu" and logged["text"]["activation"] == "gelu"
    params = client.get_run(result.run_id).data.params
    assert params["model.activation.vision"] == params["model.activation.text"] == "gelu"
