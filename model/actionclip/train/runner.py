"""The lifetime of a training stage (pre-train or fine-tune), around ``trainer.train``.

Distributed setup -> pick the checkpoint to resume from -> seed -> build the model -> open (or re-open) the MLflow
run -> train -> on rank 0: ``out_dir/model`` (save_pretrained + history.json), ``metrics.json``, the curves PNG and
the model as MLflow artifacts -> tear down.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from actionclip.train import checkpointing as ckpt
from actionclip.tracking import scalar_metrics
from actionclip.train.common import apply_threads, seed_everything, tracked_stage, write_json
from actionclip.train.config import TrainingConfig
from actionclip.train.distributed import DistEnv, barrier, cleanup_distributed, setup_distributed
from actionclip.train.result import StageResult
from actionclip.train.resume import check_resumable, find_resume_checkpoint
from actionclip.train.trainer import TrainingJob, TrainOutcome, train


def save_outputs(cfg: TrainingConfig, model: nn.Module, outcome: TrainOutcome | None, tracker: Any,
                 metrics: dict[str, Any]) -> dict[str, str]:
    """Rank 0: write the model directory, history, metrics and curves, and log them to MLflow."""
    from actionclip.train.plots import curves_png

    out = cfg.output_dir
    model_dir = model.save_pretrained(out / "model")
    # not in any state dict: the run says which activation its towers compute (searchable, unlike config.json)
    tracker.log_params({"model.activation": {"vision": model.config.vision.activation,
                                             "text": model.config.text.activation}})
    paths = {"model": str(model_dir), "checkpoints": str(out / "checkpoints")}
    if outcome is not None:
        write_json(model_dir / "history.json", outcome.history)
        if outcome.history.get("steps"):
            paths["curves_png"] = str(curves_png(outcome.history, out / "training_curves.png", f"{cfg.STAGE}"))
            tracker.log_artifact(paths["curves_png"])
    paths["metrics"] = str(write_json(out / "metrics.json", metrics))
    tracker.log_metrics(scalar_metrics({f"final_{k}": v for k, v in metrics.items()}))
    tracker.log_artifact(paths["metrics"])
    tracker.log_artifacts(model_dir, "model")
    return paths


def run_training_stage(
    cfg: TrainingConfig,
    load_model: Callable[[], nn.Module],
    make_job: Callable[[nn.Module, DistEnv], TrainingJob] | None,
    dataset_hash: str | None = None,
    extra_params: dict[str, Any] | None = None,
) -> StageResult:
    """Run a training stage end to end. ``make_job`` None (or 0 epochs) only imports and saves the model."""
    env = setup_distributed(cfg.device)
    try:
        out = cfg.output_dir
        out.mkdir(parents=True, exist_ok=True)
        trains = make_job is not None and cfg.epochs > 0
        state = None
        if trains:
            path = find_resume_checkpoint(cfg)
            if path is not None:
                state = ckpt.load_checkpoint(path)
                check_resumable(cfg, state, path)
                if env.is_main:  # also in quiet mode: a resume is worth one line in any log
                    import sys

                    print(f"resuming from {path} (step {state['progress']['global_step']})", file=sys.stderr)
        apply_threads(cfg.threads)
        seed_everything(cfg.seed)
        model = load_model()
        with tracked_stage(cfg, env.is_main, dataset_hash, state.get("run_id") if state else None,
                           extra_params) as tracker:
            outcome = None
            if trains:
                outcome = train(cfg, env, model, make_job(model, env), tracker, state)
                if state is not None:
                    tracker.set_tags({"resumed_from_step": str(state["progress"]["global_step"])})
            metrics = dict(outcome.metrics) if outcome else {"global_step": 0.0}
            paths = {"model": str(out / "model"), "checkpoints": str(out / "checkpoints"),
                     "metrics": str(out / "metrics.json")}
            if env.is_main:
                paths = save_outputs(cfg, model, outcome, tracker, metrics)
            barrier(env)
            run_id = tracker.run_id
        return StageResult(cfg.STAGE, str(out), paths, scalar_metrics(metrics), run_id)
    finally:
        cleanup_distributed(env)
