"""Component: score candidate text templates by zero-shot accuracy and keep the best (ActionCLIP's "prompt")."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from actionclip.train.config import PromptConfig
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(PromptConfig)
def select_prompts(
    dataset: Input[Dataset], model: Input[Model], prompt: Output[Artifact], metrics: Output[Metrics], *,
    templates: List[str], include_default: bool, rule: str, keep: int, max_clips: int, split: str, batch_size: int,
    experiment: str, seed: int, device: str, num_workers: int, overrides: dict,
    parent_run_id: str, work_root: str, job_id: str,
) -> None:
    """Run the prompt stage; the ``prompt`` artifact is prompt.json ({"templates", "scores", "rule", "zero_shot"}).

    Args:
        dataset: the prepared dataset.
        model: the pre-trained model directory.
        prompt: output prompt.json.
        metrics: zero-shot top-1/top-5 of the kept templates and the number kept.
    """
    params = dict(locals())
    import shutil

    from components._runtime import log_scalars, read_json, stage_config, stage_errors, timed, work_dir

    with stage_errors("prompt"), work_dir(work_root, job_id, "prompt") as scratch:
        from actionclip.train import PromptConfig
        from actionclip.train import prompt as run_prompt

        params["templates"] = list(templates)
        cfg = stage_config(PromptConfig, params, {"data": dataset.path, "model": model.path, "out_dir": str(scratch)})
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
