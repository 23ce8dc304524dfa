"""Component: multi-view evaluation with ActionCLIP scoring, zero-shot accuracy, confusion matrix and report."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from actionclip.train.config import EvaluateConfig
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(EvaluateConfig, max_confusion_classes=(20, "largest confusion matrix logged to the UI."))
def evaluate_model(
    dataset: Input[Dataset], model: Input[Model], prompt: Input[Artifact],
    evaluation: Output[Artifact], metrics: Output[Metrics], confusion: Output[ClassificationMetrics],
    report: Output[HTML], summary: Output[Markdown], *,
    num_clips: int, num_crops: int, split: str, heldout: bool, batch_size: int, max_confusion_classes: int,
    experiment: str, seed: int, device: str, num_workers: int, overrides: dict,
    parent_run_id: str, work_root: str, job_id: str,
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
    """
    params = dict(locals())
    from pathlib import Path

    from components._runtime import (
        copy_dir, log_scalars, read_json, stage_config, stage_errors, timed, top_confused_classes, work_dir,
    )
    from components.report import render_html, render_markdown

    from actionclip.labels import read_labels

    with stage_errors("evaluate"), work_dir(work_root, job_id, "evaluate") as scratch:
        from actionclip.train import EvaluateConfig
        from actionclip.train import evaluate as run_evaluate

        cfg = stage_config(EvaluateConfig, params, {
            "data": dataset.path, "model": model.path, "prompt": prompt.path, "out_dir": str(scratch),
        })
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
