"""Component: score candidate text templates by zero-shot accuracy and keep the best (ActionCLIP's "prompt")."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_prompts(
    dataset: Input[Dataset],
    model: Input[Model],
    prompt: Output[Artifact],
    metrics: Output[Metrics],
    parent_run_id: str = "",
    templates: List[str] = [],
    include_default: bool = True,
    rule: str = "top_k",
    keep: int = 8,
    max_clips: int = 0,
    split: str = "val",
    batch_size: int = 8,
    experiment: str = "actionclip",
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 2,
    overrides: dict = {},
    work_root: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
) -> None:
    """Run the prompt stage; the ``prompt`` artifact is prompt.json ({"templates", "scores", "rule", "zero_shot"}).

    Args:
        dataset: the prepared dataset.
        model: the pre-trained model directory.
        prompt: output prompt.json.
        metrics: zero-shot top-1/top-5 of the kept templates and the number kept.
        parent_run_id: MLflow run to nest this stage's run under.
        templates: user templates with "{}" for the label, scored beside ActionCLIP's 16.
        include_default: also score ActionCLIP's 16 templates.
        rule: "top_k" keeps the ``keep`` best templates; "all" keeps every candidate.
        keep: templates kept by "top_k".
        max_clips: score on at most this many clips (0: all).
        split: manifest split to score on.
        batch_size: clips per evaluation batch.
        experiment: MLflow experiment name.
        seed: random seed.
        device: auto, cpu or cuda.
        num_workers: DataLoader workers.
        overrides: other PromptConfig fields.
        work_root: shared scratch directory (empty: a temporary directory).
        job_name: the KFP job name (filled in by KFP).
    """
    import shutil

    from components._runtime import build_config, log_scalars, read_json, stage_errors, timed, work_dir

    with stage_errors("prompt"), work_dir(work_root, job_name, "prompt") as scratch:
        from actionclip.train import PromptConfig
        from actionclip.train import prompt as run_prompt

        cfg = build_config(PromptConfig, {
            "data": dataset.path,
            "model": model.path,
            "out_dir": str(scratch),
            "templates": list(templates),
            "include_default": include_default,
            "rule": rule,
            "keep": keep,
            "max_clips": max_clips,
            "split": split,
            "batch_size": batch_size,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "seed": seed,
            "device": device,
            "num_workers": num_workers,
            "quiet": True,
        }, overrides)
        with timed("prompt"):
            result = run_prompt(cfg)
        shutil.copyfile(result.paths["prompt"], prompt.path)
        chosen = read_json(prompt.path)
        log_scalars(metrics, result.metrics)
        metrics.log_metric("templates_kept", float(len(chosen["templates"])))
        prompt.metadata.update({
            "templates_kept": len(chosen["templates"]), "rule": chosen.get("rule", rule),
            "mlflow_run_id": result.run_id or "",
        })
