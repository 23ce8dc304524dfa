"""Component: fine-tune the model end to end with ActionCLIP's objective on the labelled clips."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def finetune_model(
    dataset: Input[Dataset],
    pretrained: Input[Model],
    prompt: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    parent_run_id: str = "",
    epochs: float = 10.0,
    max_steps: int = 0,
    warmup_epochs: float = 1.0,
    batch_size: int = 8,
    lr: float = 5e-6,
    few_shot: int = 0,
    loss: str = "kl",
    experiment: str = "actionclip",
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 2,
    overrides: dict = {},
    work_root: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
) -> None:
    """Run the fine-tuning stage; the ``model`` artifact holds model.safetensors + config.json (+ history.json).

    Args:
        dataset: the prepared dataset ("train" rows are trained on, "val" rows validated on).
        pretrained: the model from the pre-training stage.
        prompt: prompt.json whose kept templates are sampled per clip.
        model: output model directory.
        metrics: final training loss and validation accuracy.
        parent_run_id: MLflow run to nest this stage's run under.
        epochs: fine-tuning epochs (fractional allowed).
        max_steps: stop after this many optimiser steps (0: all epochs).
        warmup_epochs: linear warm-up before the cosine schedule.
        batch_size: clips per optimiser step.
        lr: base learning rate of the CLIP towers (the fusion module uses 10x).
        few_shot: train on K clips per class (0: all).
        loss: "kl" (ActionCLIP) or "infonce" (MMAction2).
        experiment: MLflow experiment name.
        seed: random seed.
        device: auto, cpu or cuda.
        num_workers: DataLoader workers.
        overrides: other FinetuneConfig fields, e.g. {"precision": "bf16", "grad_checkpointing": true}.
        work_root: shared directory for resumable checkpoints (empty: a temporary directory).
        job_name: the KFP job name (filled in by KFP).
    """
    from components._runtime import build_config, log_scalars, publish_model, stage_errors, timed, work_dir

    with stage_errors("finetune"), work_dir(work_root, job_name, "finetune") as scratch:
        from actionclip.train import FinetuneConfig, finetune

        cfg = build_config(FinetuneConfig, {
            "data": dataset.path,
            "model": pretrained.path,
            "prompt": prompt.path,
            "out_dir": str(scratch),
            "epochs": epochs,
            "max_steps": max_steps,
            "warmup_epochs": min(warmup_epochs, epochs),
            "batch_size": batch_size,
            "lr": lr,
            "few_shot": few_shot,
            "loss": loss,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "seed": seed,
            "device": device,
            "num_workers": num_workers,
            "quiet": True,
        }, overrides)
        with timed("finetune"):
            result = finetune(cfg)
        publish_model(model, result, "finetune", dataset)
        log_scalars(metrics, result.metrics)
