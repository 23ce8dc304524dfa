"""Component: multi-view evaluation with ActionCLIP scoring, zero-shot accuracy, confusion matrix and report."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    dataset: Input[Dataset],
    model: Input[Model],
    prompt: Input[Artifact],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    summary: Output[Markdown],
    parent_run_id: str = "",
    num_clips: int = 1,
    num_crops: int = 1,
    split: str = "val",
    heldout: bool = True,
    batch_size: int = 8,
    max_confusion_classes: int = 20,
    experiment: str = "actionclip",
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 2,
    overrides: dict = {},
    work_root: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
) -> None:
    """Run the evaluation stage and publish its results for the KFP UI and the register step.

    Args:
        dataset: the prepared dataset.
        model: the fine-tuned model.
        prompt: prompt.json whose kept templates score the classes.
        evaluation: output directory: metrics.json (full results) and the PNG plots.
        metrics: headline scalars (top1, top5, mean_class_acc, zero_shot_top1, clips_per_s, ...).
        confusion: confusion matrix (the ``max_confusion_classes`` most confused classes when there are more).
        report: HTML report with the plots embedded.
        summary: Markdown summary.
        parent_run_id: MLflow run to nest this stage's run under.
        num_clips: temporal views per video.
        num_crops: spatial crops per view (1 or 3).
        split: manifest split evaluated.
        heldout: also measure zero-shot accuracy on the held-out labels.
        batch_size: videos per batch.
        max_confusion_classes: largest confusion matrix logged to the UI.
        experiment: MLflow experiment name.
        seed: random seed.
        device: auto, cpu or cuda.
        num_workers: DataLoader workers.
        overrides: other EvaluateConfig fields.
        work_root: shared scratch directory (empty: a temporary directory).
        job_name: the KFP job name (filled in by KFP).
    """
    from pathlib import Path

    from components._runtime import (
        build_config, copy_dir, log_scalars, read_json, stage_errors, timed, top_confused_classes, work_dir,
    )
    from components.report import render_html, render_markdown

    from actionclip.labels import read_labels

    with stage_errors("evaluate"), work_dir(work_root, job_name, "evaluate") as scratch:
        from actionclip.train import EvaluateConfig
        from actionclip.train import evaluate as run_evaluate

        cfg = build_config(EvaluateConfig, {
            "data": dataset.path,
            "model": model.path,
            "prompt": prompt.path,
            "out_dir": str(scratch),
            "split": split,
            "num_clips": num_clips,
            "num_crops": num_crops,
            "heldout": heldout,
            "batch_size": batch_size,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "seed": seed,
            "device": device,
            "num_workers": num_workers,
            "quiet": True,
        }, overrides)
        with timed("evaluate"):
            result = run_evaluate(cfg)
        full = read_json(result.paths["metrics"])
        copy_dir(result.out_dir, evaluation.path)
        evaluation.metadata.update({"mlflow_run_id": result.run_id or ""})
        log_scalars(metrics, {k: v for k, v in full.items() if not isinstance(v, (dict, list))})

        labels = full.get("labels") or read_labels(Path(dataset.path, "labels.txt"))
        matrix = full.get("confusion") or []
        if matrix:
            keep = top_confused_classes(matrix, max_confusion_classes)
            confusion.log_confusion_matrix(
                [labels[i] for i in keep], [[int(round(matrix[i][j])) for j in keep] for i in keep]
            )
        plots = {name.removesuffix("_png").replace("_", " "): path
                 for name, path in result.paths.items() if str(path).endswith(".png")}
        Path(report.path).write_text(render_html(full, plots), encoding="utf-8")
        Path(summary.path).write_text(render_markdown(full), encoding="utf-8")
