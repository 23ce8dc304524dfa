"""The ActionCLIP pipeline: prepare data -> pre-train -> prompt -> fine-tune -> evaluate -> register.

Every knob is a pipeline parameter with a default; the defaults are the tiny synthetic demo that
``actionclip pipeline run`` executes on a CPU in a few minutes. Real runs pass real values through the same
parameters (``data_source=/data/videos``, ``weights=/data/weights/ViT-B-32.pt``, ``preset=ViT-B/32-8``, ...).
The Kubernetes side (GPUs, volumes, credentials, retries, timeouts, caching) comes from ``pipelines.platform``.
"""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of the pipeline function.
from typing import Any, Callable, List, Optional

from kfp import dsl

import components as c
from pipelines.platform import DATA, GPU, LIGHT, PlatformSettings, apply

PIPELINE_NAME = "actionclip"
PIPELINE_DESCRIPTION = (
    "ActionCLIP video-text action recognition: prepare data, pre-train, select prompts, fine-tune, evaluate and "
    "register the model in MLflow (one MLflow parent run per pipeline run)."
)


def build_pipeline(settings: Optional[PlatformSettings] = None) -> Callable[..., Any]:
    """The pipeline function (a KFP ``GraphComponent``) with the given platform settings applied."""
    settings = settings or PlatformSettings()

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def actionclip_pipeline(
        data_source: str = "synthetic",
        data_format: str = "auto",
        label_map: str = "",
        video_root: str = "",
        heldout_labels: List[str] = [],
        val_fraction: float = 0.25,
        synthetic_dir: str = "/data/synthetic",
        synthetic_classes: List[str] = [],
        synthetic_clips_per_class: int = 300,
        synthetic_pretrain_clips: int = 0,
        synthetic_frames: int = 16,
        synthetic_size: int = 64,
        frames_dir: str = "",
        frame_size: int = 256,
        frame_stride: int = 1,
        preset: str = "tiny-8-32px",
        weights: str = "shipped:synthetic-captions",
        num_frames: int = 0,
        fusion: str = "",
        pretrain_epochs: float = 0.0,
        pretrain_max_steps: int = 0,
        pretrain_batch_size: int = 32,
        pretrain_lr: float = 3e-4,
        templates: List[str] = [],
        include_default_templates: bool = True,
        prompt_rule: str = "top_k",
        prompt_keep: int = 8,
        prompt_max_clips: int = 0,
        finetune_epochs: float = 14.0,
        finetune_max_steps: int = 0,
        finetune_warmup_epochs: float = 0.7,
        finetune_batch_size: int = 16,
        finetune_lr: float = 1.5e-4,
        few_shot: int = 0,
        finetune_loss: str = "kl",
        eval_num_clips: int = 1,
        eval_num_crops: int = 1,
        eval_batch_size: int = 16,
        registry_name: str = "actionclip",
        promotion_metric: str = "top1",
        promotion_margin: float = 0.0,
        experiment: str = "actionclip",
        seed: int = 0,
        device: str = "auto",
        num_workers: int = 2,
        work_root: str = "",
        pretrain_overrides: dict = {"flip": False, "color_jitter": False, "multiscale_crop": False,
                                    "weight_decay": 0.05},
        prompt_overrides: dict = {},
        finetune_overrides: dict = {"flip": False, "color_jitter": False, "multiscale_crop": False,
                                    "weight_decay": 0.05, "cache_clips": True, "num_workers": 0, "val_every": 0,
                                    "freeze": ["text"], "threads": 1},
        eval_overrides: dict = {},
    ) -> None:
        """ActionCLIP: prepare -> pretrain -> prompt -> finetune -> evaluate -> register.

        Args:
            data_source: "synthetic" or a path on the data volume (class folders, list file, CSV, frame folders).
            data_format: "auto" or the source format (synthetic, folder, mmaction, kinetics, frames, captions).
            label_map: label-map file for list sources.
            video_root: root for relative paths in list sources.
            heldout_labels: labels kept out of fine-tuning for zero-shot evaluation.
            val_fraction: per-label validation fraction.
            synthetic_dir: where synthetic clips are generated (on the data volume).
            synthetic_classes: classes to synthesise (empty: 8 seen + 3 held-out defaults).
            synthetic_clips_per_class: synthetic clips per class.
            synthetic_pretrain_clips: extra captioned pre-training clips per synthetic class.
            synthetic_frames: frames per synthetic clip.
            synthetic_size: synthetic frame size (pixels).
            frames_dir: extract every video into JPEG frame folders here (data volume) and train from those, so
                training decodes only the frames it samples (empty: read the videos).
            frame_size: scale extracted frames down to this short side, never up (0 keeps the video's size).
            frame_stride: extract every k-th frame (1: all).
            preset: model preset (architecture, frames, fusion), e.g. "ViT-B/32-8".
            weights: checkpoint to start from (OpenAI CLIP / ActionCLIP / MMAction2 / ours, or "shipped:NAME" for
                one shipped in the package); empty: random init.
            num_frames: frames per clip (0: the preset's).
            fusion: temporal fusion override (empty keeps the preset's).
            pretrain_epochs: caption pre-training epochs (0: import the weights only).
            pretrain_max_steps: cap on pre-training optimiser steps (0: none).
            pretrain_batch_size: pre-training clips per step.
            pretrain_lr: pre-training learning rate.
            templates: extra prompt templates (with "{}") scored beside ActionCLIP's 16.
            include_default_templates: score ActionCLIP's 16 templates too.
            prompt_rule: "top_k" or "all".
            prompt_keep: templates kept by "top_k".
            prompt_max_clips: clips used to score templates (0: all).
            finetune_epochs: fine-tuning epochs.
            finetune_max_steps: cap on fine-tuning optimiser steps (0: none).
            finetune_warmup_epochs: warm-up epochs.
            finetune_batch_size: fine-tuning clips per step.
            finetune_lr: fine-tuning learning rate (towers; fusion x10).
            few_shot: K clips per class for few-shot fine-tuning (0: all).
            finetune_loss: "kl" (ActionCLIP) or "infonce".
            eval_num_clips: temporal views per video at evaluation.
            eval_num_crops: spatial crops per view (1 or 3).
            eval_batch_size: videos per evaluation batch.
            registry_name: MLflow registered model name.
            promotion_metric: evaluation metric compared with the champion's.
            promotion_margin: margin the new version must beat the champion by to become champion.
            experiment: MLflow experiment.
            seed: random seed for every stage.
            device: auto, cpu or cuda.
            num_workers: DataLoader workers per stage.
            work_root: shared directory for resumable stage checkpoints (empty: per-task temporary directories).
            pretrain_overrides: other PretrainConfig fields (defaults: the synthetic demo's, no flips etc.).
            prompt_overrides: other PromptConfig fields.
            finetune_overrides: other FinetuneConfig fields (defaults: the synthetic demo's, no flips etc.).
            eval_overrides: other EvaluateConfig fields.
        """
        closer = apply(c.close_run(experiment=experiment), LIGHT, settings, cache=False)
        with dsl.ExitHandler(closer, name="actionclip-run"):
            # A fresh parent run per pipeline run; it feeds every stage, so no stage is ever served from another
            # run's cache (its MLflow runs would belong to another run tree).
            parent = apply(c.open_run(experiment=experiment), LIGHT, settings, cache=False)
            parent.set_display_name("open-mlflow-run")
            # Not cached: the source is a path whose contents can change between runs. After open-run, so that a
            # failure here is recorded as a FAILED pipeline run in MLflow.
            prepared = apply(c.prepare_data(
                data_source=data_source, data_format=data_format, label_map=label_map, video_root=video_root,
                heldout_labels=heldout_labels, val_fraction=val_fraction, synthetic_dir=synthetic_dir,
                synthetic_classes=synthetic_classes, synthetic_clips_per_class=synthetic_clips_per_class,
                synthetic_pretrain_clips=synthetic_pretrain_clips, synthetic_frames=synthetic_frames,
                synthetic_size=synthetic_size, seed=seed, workers=num_workers, frames_dir=frames_dir,
                frame_size=frame_size, frame_stride=frame_stride,
            ), DATA, settings, cache=False).after(parent)
            dataset = prepared.outputs["dataset"]
            pre = apply(c.pretrain_model(
                dataset=dataset, parent_run_id=parent.output, preset=preset, weights=weights,
                num_frames=num_frames, fusion=fusion, epochs=pretrain_epochs, max_steps=pretrain_max_steps,
                batch_size=pretrain_batch_size, lr=pretrain_lr, experiment=experiment, seed=seed, device=device,
                num_workers=num_workers, overrides=pretrain_overrides, work_root=work_root,
            ), GPU, settings)
            prm = apply(c.select_prompts(
                dataset=dataset, model=pre.outputs["model"], parent_run_id=parent.output, templates=templates,
                include_default=include_default_templates, rule=prompt_rule, keep=prompt_keep,
                max_clips=prompt_max_clips, batch_size=eval_batch_size, experiment=experiment, seed=seed,
                device=device, num_workers=num_workers, overrides=prompt_overrides, work_root=work_root,
            ), GPU, settings)
            fin = apply(c.finetune_model(
                dataset=dataset, pretrained=pre.outputs["model"], prompt=prm.outputs["prompt"],
                parent_run_id=parent.output, epochs=finetune_epochs, max_steps=finetune_max_steps,
                warmup_epochs=finetune_warmup_epochs, batch_size=finetune_batch_size, lr=finetune_lr,
                few_shot=few_shot, loss=finetune_loss, experiment=experiment, seed=seed, device=device,
                num_workers=num_workers, overrides=finetune_overrides, work_root=work_root,
            ), GPU, settings)
            ev = apply(c.evaluate_model(
                dataset=dataset, model=fin.outputs["model"], prompt=prm.outputs["prompt"],
                parent_run_id=parent.output, num_clips=eval_num_clips, num_crops=eval_num_crops,
                batch_size=eval_batch_size, experiment=experiment, seed=seed, device=device,
                num_workers=num_workers, overrides=eval_overrides, work_root=work_root,
            ), GPU, settings)
            # Never cached: registration and alias promotion are side effects a cache hit would silently skip.
            apply(c.register_model(
                model=fin.outputs["model"], dataset=dataset, prompt=prm.outputs["prompt"],
                evaluation=ev.outputs["evaluation"], pretrained=pre.outputs["model"], parent_run_id=parent.output,
                registry_name=registry_name, promotion_metric=promotion_metric,
                promotion_margin=promotion_margin, experiment=experiment,
            ), LIGHT, settings, cache=False)

    return actionclip_pipeline


actionclip_pipeline = build_pipeline()
