"""Component: initialise the model (preset or checkpoint) and optionally continue caption pre-training."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain_model(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    parent_run_id: str = "",
    preset: str = "tiny-8",
    weights: str = "",
    num_frames: int = 0,
    fusion: str = "",
    epochs: float = 0.0,
    max_steps: int = 0,
    batch_size: int = 8,
    lr: float = 5e-6,
    experiment: str = "actionclip",
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 2,
    overrides: dict = {},
    work_root: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
) -> None:
    """Run the pre-training stage; the ``model`` artifact holds model.safetensors + config.json.

    Args:
        dataset: the prepared dataset (captioned "pretrain"/"train" rows are used when ``epochs`` > 0).
        model: output model directory (save_pretrained format).
        metrics: the stage's scalar results.
        parent_run_id: MLflow run to nest this stage's run under.
        preset: model preset (e.g. "ViT-B/32-8", "tiny-8"): the architecture when ``weights`` is empty, else the
            default frame count and fusion applied to the checkpoint.
        weights: checkpoint to start from (OpenAI CLIP, ActionCLIP, MMAction2 or ours), or "shipped:NAME" for a
            checkpoint shipped in the package (``actionclip.pretrained``); empty: random init.
        num_frames: frames per clip (0: the preset's).
        fusion: temporal fusion (meanP, Transf, Conv1D, LSTM, Transf_cls; empty: the preset's).
        epochs: caption pre-training epochs (0: import only).
        max_steps: stop after this many optimiser steps (0: all epochs).
        batch_size: clips per optimiser step.
        lr: base learning rate.
        experiment: MLflow experiment name.
        seed: random seed.
        device: auto, cpu or cuda.
        num_workers: DataLoader workers.
        overrides: other PretrainConfig fields, e.g. {"precision": "bf16"}.
        work_root: shared directory for resumable checkpoints (empty: a temporary directory).
        job_name: the KFP job name (filled in by KFP).
    """
    from components._runtime import build_config, log_scalars, publish_model, stage_errors, timed, work_dir

    with stage_errors("pretrain"), work_dir(work_root, job_name, "pretrain") as scratch:
        from actionclip.train import PretrainConfig, pretrain

        source = weights or preset
        if weights.startswith("shipped:"):
            from actionclip.pretrained import shipped_path

            weights = str(shipped_path(weights.split(":", 1)[1]))
        if weights:
            # The checkpoint fixes the towers; the preset still says how many frames and which fusion to use.
            from actionclip import preset_config

            arch = preset_config(preset)
            num_frames, fusion = num_frames or arch.num_frames, fusion or arch.fusion.kind
        cfg = build_config(PretrainConfig, {
            "data": dataset.path,
            "model": weights or preset,
            "out_dir": str(scratch),
            "num_frames": num_frames,
            "fusion": fusion,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "seed": seed,
            "device": device,
            "num_workers": num_workers,
            "quiet": True,
        }, overrides)
        with timed("pretrain"):
            result = pretrain(cfg)
        publish_model(model, result, "pretrain", dataset, source=source)
        log_scalars(metrics, result.metrics)
