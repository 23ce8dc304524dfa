"""Component: initialise the model (preset or checkpoint) and optionally continue caption pre-training."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from actionclip.train.config import PretrainConfig
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(PretrainConfig, names={"preset": "model"}, weights=(
    "", "checkpoint to start from (OpenAI CLIP, ActionCLIP, MMAction2, ours, or \"shipped:NAME\" for one shipped in "
    "the package); empty: random init of `preset`."))
def pretrain_model(
    dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics], *,
    preset: str, weights: str, num_frames: int, fusion: str, epochs: float, max_steps: int, batch_size: int,
    lr: float, experiment: str, seed: int, device: str, num_workers: int, overrides: dict,
    parent_run_id: str, work_root: str, job_id: str,
) -> None:
    """Run the pre-training stage; the ``model`` artifact holds model.safetensors + config.json.

    Args:
        dataset: the prepared dataset (captioned "pretrain"/"train" rows are used when ``epochs`` > 0).
        model: output model directory (save_pretrained format).
        metrics: the stage's scalar results.
    """
    params = dict(locals())
    from components._runtime import log_scalars, publish_model, stage_config, stage_errors, timed, work_dir

    with stage_errors("pretrain"), work_dir(work_root, job_id, "pretrain") as scratch:
        from actionclip.train import PretrainConfig, pretrain

        source = weights or preset
        if weights.startswith("shipped:"):  # a start checkpoint shipped in the package (actionclip.pretrained)
            from actionclip.pretrained import shipped_path

            weights = str(shipped_path(weights.split(":", 1)[1]))
        # the preset is the architecture without weights, and the frame count and fusion of the checkpoint with them
        cfg = stage_config(PretrainConfig, params, {
            "data": dataset.path, "model": weights or preset, "out_dir": str(scratch),
        })
        with timed("pretrain"):
            result = pretrain(cfg)
        publish_model(model, result, "pretrain", dataset, source=source)
        log_scalars(metrics, result.metrics)
