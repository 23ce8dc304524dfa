"""The fine-tune stage: ActionCLIP's end-to-end training on labelled clips.

Each clip is paired with one prompt: a template drawn per clip (from the prompt artifact's kept templates, else
ActionCLIP's 16) filled with its label. Loss "kl" is ActionCLIP's symmetric KL against softmax(10 G) (G: same-label
pairs); "infonce" is MMAction2's diagonal InfoNCE. Validation after each epoch scores the val split with the same
templates (ActionCLIP scoring, one view).
"""
from __future__ import annotations


import torch
from torch import nn

from actionclip.train.common import load_dataset, split_rows, train_transform
from actionclip.train.config import FinetuneConfig
from actionclip.train.data import few_shot_rows, fill_template, pick_templates
from actionclip.train.distributed import DistEnv
from actionclip.train.result import StageResult
from actionclip.train.prompting import read_prompt_templates
from actionclip.train.runner import run_training_stage
from actionclip.train.batches import token_length
from actionclip.train.trainer import TrainingJob
from actionclip.zeroshot import build_prompts


def finetune(cfg: FinetuneConfig) -> StageResult:
    """Fine-tune ``cfg.model`` on the train split of ``cfg.data``; outputs under ``cfg.out_dir`` (see ARCHITECTURE)."""
    from actionclip import load

    cfg.validate()
    ds = load_dataset(cfg.data)
    rows = split_rows(ds, "train", ds.labels)
    if cfg.few_shot:
        rows = few_shot_rows(rows, cfg.few_shot, cfg.seed)
    val_rows = split_rows(ds, cfg.val_split, ds.labels, require=False) if cfg.val_every else []
    templates = read_prompt_templates(cfg.prompt)
    labels = list(ds.labels)

    def make_job(model: nn.Module, env: DistEnv) -> TrainingJob:
        from actionclip.data import VideoClipDataset

        dataset = VideoClipDataset(rows, labels, model.num_frames, model.image_size,
                                   mode="train" if cfg.augment else "test",
                                   transform=train_transform(cfg, model.image_size))

        def texts(batch: dict, epoch: int) -> tuple[list[str], torch.Tensor]:
            label_idx = torch.as_tensor(batch["label"]).long()
            chosen = pick_templates(templates, cfg.seed, epoch, torch.as_tensor(batch["index"]).tolist())
            return [fill_template(t, labels[i]) for t, i in zip(chosen, label_idx.tolist())], label_idx

        validate = None
        if val_rows:
            from actionclip.train.metrics import classification_metrics
            from actionclip.train.scoring import encode_clips, eval_loader, prompt_bank, view_scores

            loader = eval_loader(val_rows, labels, model, cfg.batch_size, cfg.num_workers)

            def validate(m: nn.Module) -> dict[str, float]:
                feats, y, _ = encode_clips(m, loader, env.device, cfg.precision)
                res = classification_metrics(view_scores(feats, prompt_bank(m, labels, templates)), y, labels)
                return {"val_top1": res["top1"], "val_top5": res["top5"], "val_mean_class_acc": res["mean_class_acc"]}

        return TrainingJob(dataset=dataset, texts=texts, loss=cfg.loss, validate=validate,
                           text_length=token_length(build_prompts(labels, templates), model.context_length))

    extra = {"train_clips": len(rows), "val_clips": len(val_rows), "num_classes": len(labels),
             "templates": templates}
    return run_training_stage(cfg, lambda: load(cfg.model), make_job, ds.dataset_hash, extra)
