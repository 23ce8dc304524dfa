"""The ActionCLIP pipeline: prepare data -> pre-train -> prompt -> fine-tune -> evaluate -> register.

Every knob is a pipeline parameter with a default, declared once in ``pipelines.params.PipelineParams``; the
defaults are the tiny synthetic demo that
``actionclip pipeline run`` executes on a CPU in a few minutes. Real runs pass real values through the same
parameters (``data_source=/data/videos``, ``weights=/data/weights/ViT-B-32.pt``, ``preset=ViT-B/32-8``, ...).
The Kubernetes side (GPUs, volumes, credentials, retries, timeouts, caching) comes from ``pipelines.platform``.
"""
import inspect
from types import SimpleNamespace
from typing import Any, Callable, List, Optional

from kfp import dsl

import components as c
from pipelines.params import defaults, help_text, param_fields
from pipelines.platform import DATA, GPU, LIGHT, PROMOTER, PlatformSettings, apply

PIPELINE_NAME = "actionclip"
PIPELINE_DESCRIPTION = (
    "ActionCLIP video-text action recognition: prepare data, pre-train, select prompts, fine-tune, evaluate and "
    "register the model in MLflow (one MLflow parent run per pipeline run)."
)


def build_pipeline(settings: Optional[PlatformSettings] = None) -> Callable[..., Any]:
    """The pipeline function (a KFP ``GraphComponent``) with the given platform settings applied."""
    settings = settings or PlatformSettings()

    def actionclip_pipeline(*values: Any) -> None:
        p = SimpleNamespace(**dict(zip(NAMES, values)))
        closer = apply(c.close_run(experiment=p.experiment), LIGHT, settings, cache=False)
        with dsl.ExitHandler(closer, name="actionclip-run"):
            # A fresh parent run per pipeline run; it feeds every stage, so no stage is ever served from another
            # run's cache (its MLflow runs would belong to another run tree).
            parent = apply(c.open_run(experiment=p.experiment), LIGHT, settings, cache=False)
            parent.set_display_name("open-mlflow-run")
            # Not cached: the source is a path whose contents can change between runs. After open-run, so that a
            # failure here is recorded as a FAILED pipeline run in MLflow.
            prepared = apply(c.prepare_data(
                **_pick(p, PREPARE_PARAMS), seed=p.seed, workers=p.num_workers,
            ), DATA, settings, cache=False).after(parent)
            dataset = prepared.outputs["dataset"]
            # job_id keys each stage's folder under work_root: a retried task finds its own checkpoints, another
            # run never does. Passed explicitly so KFP resolves it as a task input.
            stage = dict(parent_run_id=parent.output, experiment=p.experiment, seed=p.seed, device=p.device,
                         num_workers=p.num_workers, work_root=p.work_root, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            pre = apply(c.pretrain_model(
                dataset=dataset, preset=p.preset, weights=p.weights, num_frames=p.num_frames, fusion=p.fusion,
                epochs=p.pretrain_epochs, max_steps=p.pretrain_max_steps, batch_size=p.pretrain_batch_size,
                lr=p.pretrain_lr, overrides=p.pretrain_overrides, **stage,
            ), GPU, settings)
            prm = apply(c.select_prompts(
                dataset=dataset, model=pre.outputs["model"], templates=p.templates,
                include_default=p.include_default_templates, rule=p.prompt_rule, keep=p.prompt_keep,
                max_clips=p.prompt_max_clips, batch_size=p.eval_batch_size, overrides=p.prompt_overrides, **stage,
            ), GPU, settings)
            fin = apply(c.finetune_model(
                dataset=dataset, pretrained=pre.outputs["model"], prompt=prm.outputs["prompt"],
                epochs=p.finetune_epochs, max_steps=p.finetune_max_steps, warmup_epochs=p.finetune_warmup_epochs,
                batch_size=p.finetune_batch_size, lr=p.finetune_lr, few_shot=p.few_shot, loss=p.finetune_loss,
                overrides=p.finetune_overrides, **stage,
            ), GPU, settings)
            ev = apply(c.evaluate_model(
                dataset=dataset, model=fin.outputs["model"], prompt=prm.outputs["prompt"],
                num_clips=p.eval_num_clips, num_crops=p.eval_num_crops, batch_size=p.eval_batch_size,
                overrides=p.eval_overrides, **stage,
            ), GPU, settings)
            # Never cached: registration and alias promotion are side effects a cache hit would silently skip.
            apply(c.register_model(
                model=fin.outputs["model"], dataset=dataset, prompt=prm.outputs["prompt"],
                evaluation=ev.outputs["evaluation"], pretrained=pre.outputs["model"], parent_run_id=parent.output,
                registry_name=p.registry_name, promotion_metric=p.promotion_metric,
                promotion_margin=p.promotion_margin, experiment=p.experiment,
            ), LIGHT, settings, cache=False, identity=PROMOTER)

    # KFP reads the pipeline's inputs from the function's signature and docstring (it never ships a pipeline's
    # source), so both are built from PipelineParams, the one declaration of the parameters.
    actionclip_pipeline.__signature__ = SIGNATURE  # type: ignore[attr-defined]
    actionclip_pipeline.__doc__ = DOC
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(actionclip_pipeline)


def _pick(p: SimpleNamespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(p, name) for name in names}


def _signature() -> inspect.Signature:
    kinds = {"str": str, "int": int, "float": float, "bool": bool, "list[str]": List[str], "dict": dict}
    values = defaults()
    return inspect.Signature([
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=values[f.name],
                          annotation=kinds[str(f.type)])
        for f in param_fields()
    ], return_annotation=None)


NAMES = tuple(f.name for f in param_fields())
SIGNATURE = _signature()
DOC = "ActionCLIP: prepare -> pretrain -> prompt -> finetune -> evaluate -> register.\n\nArgs:\n" + "".join(
    f"    {name}: {help_text(name) or name.replace('_', ' ')}\n" for name in NAMES)
# the pipeline parameters the prepare component takes under the same names
PREPARE_PARAMS = ("data_source", "data_format", "label_map", "video_root", "heldout_labels", "val_fraction",
                  "synthetic_dir", "synthetic_classes", "synthetic_clips_per_class", "synthetic_pretrain_clips",
                  "synthetic_frames", "synthetic_size", "frames_dir", "frame_size", "frame_stride")

actionclip_pipeline = build_pipeline()
