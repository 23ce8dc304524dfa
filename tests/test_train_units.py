"""Unit tests of the training building blocks: configs, losses, schedule, sampler, checkpoints, metrics.
No videos and no MLflow here (see test_train_stages.py for the stages end to end)."""
from __future__ import annotations

import argparse
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actionclip.errors import CheckpointError, ConfigError
from actionclip.train import EvaluateConfig, FinetuneConfig, PretrainConfig, PromptConfig
from actionclip.train import checkpointing as ckpt
from actionclip.train.data import RankBatchSampler, SeededClips, few_shot_rows, pick_templates
from actionclip.train.losses import actionclip_kl_loss, gather_features, infonce_loss, same_label_matrix
from actionclip.train.metrics import classification_metrics
from actionclip.train.schedule import WarmupCosine, lr_factor


# ---------------------------------------------------------------------------------------------------------- config
def test_config_from_yaml_json_and_overrides(tmp_path):
    y = tmp_path / "ft.yaml"
    y.write_text("data: /d\nepochs: 3\nfreeze: [image]\nlr: 1.0e-4\naugment: false\n")
    cfg = FinetuneConfig.from_file(y, {"epochs": "5"})
    assert (cfg.data, cfg.epochs, cfg.freeze, cfg.lr, cfg.augment) == ("/d", 5.0, ["image"], 1e-4, False)
    j = tmp_path / "ev.json"
    j.write_text('{"data": "/d", "num_crops": 3}')
    assert EvaluateConfig.from_file(j).num_crops == 3
    d = cfg.to_dict()
    assert d["stage"] == "finetune" and FinetuneConfig.from_dict({k: v for k, v in d.items() if k != "stage"}) == cfg


@pytest.mark.parametrize("values, fragment", [
    ({"data": "d", "learning_rate": 1}, "unknown finetune config key"),
    ({"data": "d", "lr": "fast"}, "'lr' must be float"),
    ({"data": "d", "loss": "mse"}, "loss must be one of"),
    ({"data": "d", "freeze": ["legs"]}, "freeze accepts"),
    ({"data": "d", "batch_size": 0}, "batch_size must be > 0"),
    ({"epochs": 2}, "a prepared dataset is required"),
])
def test_config_rejects_bad_values(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        FinetuneConfig.from_dict(values)


def test_config_unknown_key_suggests_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'keep'"):
        PromptConfig.from_dict({"kep": 3})
    with pytest.raises(ConfigError, match="not found"):
        PromptConfig.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        PromptConfig.from_file(bad)
    with pytest.raises(ConfigError, match="needs a prepared dataset"):
        PretrainConfig.from_dict({"epochs": 1})
    with pytest.raises(ConfigError, match="'{}'"):
        PromptConfig.from_dict({"templates": ["no placeholder"]})


def test_cli_flags_cover_every_field_and_override_the_file(tmp_path):
    from actionclip.train import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    for stage, cls in (("pretrain", PretrainConfig), ("finetune", FinetuneConfig)):
        # every field is settable from the command line
        actions = {a.dest for a in parser._subparsers._group_actions[0].choices[stage]._actions}
        assert set(cls.field_types()) <= actions
    y = tmp_path / "c.yaml"
    y.write_text("data: /d\nlr: 0.5\nseed: 3\n")
    args = parser.parse_args(["finetune", "--config", str(y), "--lr", "0.25", "--no-augment",
                              "--freeze", "image", "text", "--betas", "0.8", "0.9"])
    cfg = cli.config_from_args(args)
    assert (cfg.lr, cfg.seed, cfg.augment, cfg.freeze, cfg.betas) == (0.25, 3, False, ["image", "text"], [0.8, 0.9])


# ---------------------------------------------------------------------------------------------------------- losses
def test_kl_loss_matches_the_definition():
    torch.manual_seed(0)
    v, t = F.normalize(torch.randn(6, 16), dim=-1), F.normalize(torch.randn(6, 16), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    s = 37.0
    logits = s * v @ t.T
    q = torch.softmax(10 * same_label_matrix(labels), dim=1)

    def kl_rows(pred):  # (1/N) sum_i KL(q_i || softmax(pred_i))
        return (q * (q.log() - torch.log_softmax(pred, dim=1))).sum(1).mean()

    expected = 0.5 * (kl_rows(logits) + kl_rows(logits.T))
    assert torch.allclose(actionclip_kl_loss(v, t, labels, s), expected, atol=1e-6)
    # same-label pairs are positives: a perfect same-label similarity structure beats a diagonal-only one
    assert same_label_matrix(labels).sum() == 6 + 2 * 3 + 2


def test_infonce_matches_cross_entropy_and_prefers_aligned_pairs():
    torch.manual_seed(1)
    v = F.normalize(torch.randn(5, 8), dim=-1)
    aligned = infonce_loss(v, v, 20.0)
    shuffled = infonce_loss(v, v[torch.tensor([1, 2, 3, 4, 0])], 20.0)
    logits = 20.0 * v @ v.T
    ce = F.cross_entropy(logits, torch.arange(5))
    assert torch.allclose(aligned, ce, atol=1e-6)  # symmetric logits: both directions equal
    assert aligned < shuffled


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_features(x) is x


# -------------------------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_by_fractional_epoch():
    assert lr_factor(0.0, 5, 50) == 0.0
    assert lr_factor(2.5, 5, 50) == pytest.approx(0.5)
    assert lr_factor(5.0, 5, 50) == pytest.approx(1.0)
    assert lr_factor(27.5, 5, 50) == pytest.approx(0.5)
    assert lr_factor(50.0, 5, 50) == pytest.approx(0.0, abs=1e-12)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1e-3}])
    sched = WarmupCosine(opt, warmup_epochs=1, total_epochs=3, steps_per_epoch=4)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(12):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0 and lrs[2] == pytest.approx(5e-4) and lrs[4] == pytest.approx(1e-3)
    assert lrs[8] == pytest.approx(5e-4) and lrs[12] == pytest.approx(0, abs=1e-12)
    state = sched.state_dict()
    sched2 = WarmupCosine(torch.optim.AdamW([{"params": [p], "lr": 1e-3}]), 1, 3, 4)
    sched2.load_state_dict({**state, "step_count": 2})
    assert sched2.get_last_lr()[0] == pytest.approx(5e-4)


# --------------------------------------------------------------------------------------------------------- sampler
def test_rank_slices_concatenate_to_the_single_process_batches():
    def indices(sampler):
        return [[i for e, i in b] for b in sampler]

    one = indices(RankBatchSampler(23, 6, seed=4))
    r0 = indices(RankBatchSampler(23, 6, rank=0, world_size=2, seed=4))
    r1 = indices(RankBatchSampler(23, 6, rank=1, world_size=2, seed=4))
    assert len(one) == 3 and all(len(b) == 6 for b in one)
    assert [a + b for a, b in zip(r0, r1)] == one
    s = RankBatchSampler(23, 6, seed=4)
    s.set_epoch(0, start_batch=2)
    assert indices(s) == one[2:]
    s.set_epoch(1)
    assert indices(s) != one and all(e == 1 for b in s for e, _ in b)  # a new shuffle each epoch, epoch passed on
    with pytest.raises(ConfigError):
        RankBatchSampler(10, 3, world_size=2)


def test_seeded_items_do_not_depend_on_rng_state_and_keep_it():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.rand(2) + i, "y": random.random(), "z": np.random.rand()}

    ds = SeededClips(Noisy(), seed=7)
    torch.manual_seed(123)
    a = ds[2]
    before = torch.rand(1)
    torch.manual_seed(123)
    torch.rand(5)
    b = ds[2]
    assert torch.equal(a["x"], b["x"]) and a["y"] == b["y"] and a["z"] == b["z"] and a["index"] == 2
    torch.manual_seed(123)
    ds[2]
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert torch.equal(ds[(0, 2)]["x"], a["x"])
    assert not torch.equal(ds[(1, 2)]["x"], a["x"])


def test_few_shot_and_template_draws_are_seeded():
    rows = [{"label": l, "path": f"{l}{i}"} for l in "abc" for i in range(5)]
    k2 = few_shot_rows(rows, 2, seed=0)
    assert sorted(r["label"] for r in k2) == ["a", "a", "b", "b", "c", "c"]
    assert k2 == few_shot_rows(rows, 2, seed=0) and few_shot_rows(rows, 9, 0) == rows
    t = pick_templates(["x {}", "y {}", "z {}"], 0, 0, range(30))
    assert t == pick_templates(["x {}", "y {}", "z {}"], 0, 0, range(30)) and len(set(t)) == 3


# ------------------------------------------------------------------------------------------------------ checkpoint
def test_checkpoint_roundtrip_is_atomic_weights_only_and_pruned(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    for step in (1, 2, 3):
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": ckpt.capture_rng(),
                 "progress": {"epoch": 0, "batch_in_epoch": step, "global_step": step}, "run_id": None,
                 "config": {"seed": 0, "betas": [0.9, 0.98]}, "history": {"steps": [{"loss": 1.0}]}}
        ckpt.save_checkpoint(tmp_path, state, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002.pt", "step-00000003.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    expected = (torch.rand(3), random.random(), np.random.rand())
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    ckpt.restore_rng(loaded["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach())
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(loaded["optimizer"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an actionclip training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")


# --------------------------------------------------------------------------------------------------------- metrics
def test_classification_metrics():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    labels = torch.tensor([0, 1, 1, 0])
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["top1"] == 0.5 and m["n"] == 4
    assert m["per_class"] == {"a": 0.5, "b": 0.5}
    assert m["mean_class_acc"] == 0.5
    assert m["confusion"] == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert m["top5"] == 1.0 and not math.isnan(m["top5"])


def test_prompt_bank_follows_weights_updated_by_the_fused_optimiser():
    """Validation during training must see the current text tower (a fused AdamW step does not bump the parameters'
    version counters, which a version-keyed cache would miss)."""
    from actionclip import create_model, tokenize
    from actionclip.train.optim import build_optimizer
    from actionclip.train.scoring import prompt_bank

    torch.manual_seed(0)
    model = create_model("tiny-8")
    before = prompt_bank(model, ["left", "right"], ["{}", "a video of {}"])
    assert before.shape == (2, 2, model.embed_dim)
    opt = build_optimizer(model, lr=1e-2)
    model.train()
    model.encode_text(tokenize(["left"])).pow(2).sum().backward()
    opt.step()
    after = prompt_bank(model, ["left", "right"], ["{}", "a video of {}"])
    assert not torch.allclose(before, after)


def test_multiscale_crop_switch_keeps_the_whole_square_frame():
    """--no-multiscale-crop: the training transform resizes the whole (square) frame, so object speed and size are
    not rescaled; with the switch on, ActionCLIP's multi-scale crops zoom in on parts of it."""
    import torchvision.transforms.v2.functional as TF

    from actionclip.train.common import train_transform

    video = torch.randint(0, 256, (8, 3, 36, 36), dtype=torch.uint8)
    whole = TF.resize(video, [32, 32], antialias=True)
    off = train_transform(FinetuneConfig(multiscale_crop=False, flip=False, color_jitter=False), 32)
    g = torch.Generator().manual_seed(0)
    assert all(torch.equal(off(video, g), whole) for _ in range(5))
    on = train_transform(FinetuneConfig(flip=False, color_jitter=False), 32)
    assert any(not torch.equal(on(video, g), whole) for _ in range(10))


class _Clips(torch.utils.data.Dataset):
    """Random clips through a TrainTransform that draws from torch's global RNG, as VideoClipDataset does."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        video = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8)
        return {"video": self.transform(video), "label": index % 2, "caption": "", "path": f"clip{index}"}


def test_colour_on_the_device_equals_colour_in_the_loader():
    """color_on=device moves colour jitter + grayscale out of the workers without changing what a clip gets: the
    seeded item draws the same factors, and the batched device op reproduces the per-clip one."""
    from actionclip.data import TrainTransform, apply_color
    from actionclip.train.batches import collate as _collate, device_color_transform

    cfg = FinetuneConfig(data="d", color_on="device")
    in_loader = SeededClips(_Clips(TrainTransform(16, jitter_p=0.6, grayscale_p=0.4)), seed=3)
    colored = _Clips(TrainTransform(16, jitter_p=0.6, grayscale_p=0.4))
    on_device = SeededClips(colored, seed=3, color=device_color_transform(cfg, torch.device("cpu"), colored))
    assert colored.transform.color_on_device
    keys = [(1, i) for i in range(6)]
    expected = torch.stack([in_loader[k]["video"] for k in keys])
    batch = _collate([on_device[k] for k in keys])
    assert batch["color"].shape == (6, 4, 9)
    assert not torch.equal(batch["video"], expected)  # the workers left the colours alone
    assert (apply_color(batch["video"], batch["color"]).int() - expected.int()).abs().max() <= 1

    plain = _Clips(TrainTransform(16))
    assert device_color_transform(FinetuneConfig(data="d"), torch.device("cpu"), plain) is None  # auto: CPU keeps it
    assert device_color_transform(FinetuneConfig(data="d"), torch.device("cuda"), plain) is plain.transform
    no_jitter = _Clips(TrainTransform(16, jitter_p=0.0, grayscale_p=0.0))
    assert device_color_transform(cfg, torch.device("cpu"), no_jitter) is None  # nothing to move
    with pytest.raises(ConfigError, match="color_on must be one of"):
        FinetuneConfig.from_dict({"data": "d", "color_on": "gpu"})
