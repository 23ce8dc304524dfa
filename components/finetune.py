"""Component: fine-tune the model end to end with ActionCLIP's objective on the labelled clips."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from actionclip.train.config import FinetuneConfig
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(FinetuneConfig)
def finetune_model(
    dataset: Input[Dataset], pretrained: Input[Model], prompt: Input[Artifact],
    model: Output[Model], metrics: Output[Metrics], *,
    epochs: float, max_steps: int, warmup_epochs: float, batch_size: int, lr: float, few_shot: int, loss: str,
    experiment: str, seed: int, device: str, num_workers: int, overrides: dict,
    parent_run_id: str, work_root: str, job_id: str,
) -> None:
    """Run the fine-tuning stage; the ``model`` artifact holds model.safetensors + config.json (+ history.json).

    Args:
        dataset: the prepared dataset ("train" rows are trained on, "val" rows validated on).
        pretrained: the model from the pre-training stage.
        prompt: prompt.json whose kept templates are sampled per clip.
        model: output model directory.
        metrics: final training loss and validation accuracy.
    """
    params = dict(locals())
    from components._runtime import log_scalars, publish_model, stage_config, stage_errors, timed, work_dir

    with stage_errors("finetune"), work_dir(work_root, job_id, "finetune") as scratch:
        from actionclip.train import FinetuneConfig, finetune

        params["warmup_epochs"] = min(warmup_epochs, epochs)  # a short run gets no longer warm-up than it lasts
        cfg = stage_config(FinetuneConfig, params, {
            "data": dataset.path, "model": pretrained.path, "prompt": prompt.path, "out_dir": str(scratch),
        })
        with timed("finetune"):
            result = finetune(cfg)
        publish_model(model, result, "finetune", dataset)
        log_scalars(metrics, result.metrics)
