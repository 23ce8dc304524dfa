"""The pre-train stage: initialise a model and optionally continue contrastive video-caption training.

``cfg.model`` is any source ``actionclip.load`` accepts (preset name = random init, OpenAI CLIP, ActionCLIP,
MMAction2 or our own checkpoint); ``num_frames``/``fusion`` reconfigure it, and where they are 0/"" a checkpoint
takes them from ``cfg.preset`` (when set). With ``epochs`` 0 the stage only imports
and saves. Otherwise clips of ``cfg.split`` (default the "pretrain" and "train" splits, never val/heldout) are paired
with their captions (or ``caption_template`` filled with the label) under CLIP's symmetric InfoNCE with the learned
temperature. Validation after each epoch reports zero-shot top-1 on the val split and on the held-out labels.
"""
from __future__ import annotations

import torch
from torch import nn

from actionclip.errors import ConfigError
from actionclip.train.common import load_dataset, split_rows, train_transform
from actionclip.train.config import PretrainConfig
from actionclip.train.data import fill_template, item_seed
from actionclip.train.distributed import DistEnv
from actionclip.train.result import StageResult
from actionclip.train.runner import run_training_stage
from actionclip.train.trainer import TrainingJob


def pretrain(cfg: PretrainConfig) -> StageResult:
    """Import ``cfg.model`` and, with ``epochs`` > 0, pre-train it on captioned clips; writes ``out_dir/model``."""
    from actionclip import load

    cfg.validate()

    num_frames, fusion = cfg.num_frames, cfg.fusion
    if cfg.preset and not (num_frames and fusion):
        from actionclip import preset_config

        arch = preset_config(cfg.preset)
        num_frames, fusion = num_frames or arch.num_frames, fusion or arch.fusion.kind

    def load_model() -> nn.Module:
        return load(cfg.model, num_frames=num_frames or None, fusion=fusion or None)

    if cfg.epochs <= 0:
        dataset_hash = load_dataset(cfg.data).dataset_hash if cfg.data else None
        return run_training_stage(cfg, load_model, None, dataset_hash)

    ds = load_dataset(cfg.data)
    bad = [s for s in cfg.split if s in ("val", "heldout")]
    if bad:
        raise ConfigError(f"pretrain config: split {bad[0]!r} is for evaluation; pre-train on pretrain/train")
    rows = [r for r in split_rows(ds, cfg.split) if r.get("caption") or r.get("label")]
    if not rows:
        raise ConfigError(f"no clip with a caption or label in split(s) {cfg.split} of {ds.root}")
    texts_by_index = [r.get("caption") or fill_template(cfg.caption_template, r["label"]) for r in rows]
    # Equal texts share a group id, so the "kl" loss treats identical captions as positives.
    group_of = [item_seed("caption", t) for t in texts_by_index]
    val_rows = split_rows(ds, "val", ds.labels, require=False) if cfg.val_every else []
    heldout_rows = split_rows(ds, "heldout", ds.heldout_labels, require=False) if cfg.val_every else []

    def make_job(model: nn.Module, env: DistEnv) -> TrainingJob:
        from actionclip.data import VideoClipDataset

        dataset = VideoClipDataset(rows, list(ds.labels), model.num_frames, model.image_size,
                                   mode="train" if cfg.augment else "test",
                                   transform=train_transform(cfg, model.image_size))

        def texts(batch: dict, epoch: int) -> tuple[list[str], torch.Tensor]:
            idx = torch.as_tensor(batch["index"]).tolist()
            return [texts_by_index[i] for i in idx], torch.tensor([group_of[i] for i in idx], dtype=torch.long)

        validate = None
        if val_rows or heldout_rows:
            from actionclip import TEMPLATES
            from actionclip.train.scoring import encode_clips, eval_loader, prompt_bank, view_scores

            sets = [(name, r, lab, eval_loader(r, lab, model, cfg.batch_size, cfg.num_workers))
                    for name, r, lab in (("val_top1", val_rows, ds.labels), ("heldout_top1", heldout_rows,
                                                                              ds.heldout_labels)) if r and lab]

            def validate(m: nn.Module) -> dict[str, float]:
                res = {}
                for name, _, lab, loader in sets:
                    feats, y, _ = encode_clips(m, loader, env.device, cfg.precision)
                    probs = view_scores(feats, prompt_bank(m, lab, TEMPLATES))
                    res[name] = float((probs.argmax(1) == y).float().mean())
                return res

        return TrainingJob(dataset=dataset, texts=texts, loss=cfg.loss, validate=validate)

    extra = {"train_clips": len(rows), "captioned_clips": sum(1 for r in rows if r.get("caption"))}
    return run_training_stage(cfg, load_model, make_job, ds.dataset_hash, extra)
