"""Component: register the fine-tuned model in the MLflow registry (alias challenger, champion when it wins)."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from actionclip.serving.registry import register_model as register
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(register, names={"registry_name": "name", "promotion_metric": "metric", "promotion_margin": "margin"},
               help={"registry_name": "registered model name.",
                     "promotion_metric": "evaluation metric compared with the champion's.",
                     "promotion_margin": "how much better than the champion a version must be to take the alias.",
                     "experiment": "MLflow experiment name."})
def register_model(
    model: Input[Model], dataset: Input[Dataset], prompt: Input[Artifact], evaluation: Input[Artifact],
    pretrained: Input[Model], registered: Output[Artifact], *,
    registry_name: str, promotion_metric: str, promotion_margin: float, experiment: str,
    parent_run_id: str, job_name: str,
) -> str:
    """Log the model as a pyfunc, register a new version with lineage, alias it ``challenger`` and promote it to
    ``champion`` when ``promotion_metric`` beats the current champion's by more than ``promotion_margin``.

    The registration itself is ``actionclip.serving.register_model``; ``job_name`` is also the lineage's pipeline
    run id and the idempotency key, so a retried register step adds no second version.

    Args:
        model: the fine-tuned model directory.
        dataset: the prepared dataset (labels and the dataset hash for lineage).
        prompt: prompt.json served with the model.
        evaluation: the evaluation directory (metrics.json).
        pretrained: the pre-trained model (recorded as the parent checkpoint).
        registered: output JSON {name, version, aliases, promoted, model_uri, run_id, reused}.

    Returns:
        The registered model URI ("models:/<name>/<version>").
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components._runtime import stage_errors, timed

    with stage_errors("register"):
        from actionclip.serving import register_model as register
        from actionclip import tracking

        dataset_hash = dataset.metadata.get("dataset_hash") or json.loads(
            Path(dataset.path, "summary.json").read_text(encoding="utf-8"))["dataset_hash"]
        with timed("register"):
            result = register(
                model.path,
                str(Path(evaluation.path, "metrics.json")),
                registry_name,
                labels=str(Path(dataset.path, "labels.txt")),
                prompt=prompt.path,
                metric=promotion_metric,
                margin=promotion_margin,
                pipeline_run_id=job_name,
                dataset_hash=dataset_hash,
                parent_checkpoint=pretrained.uri,
                parent_run_id=parent_run_id or None,
                experiment=experiment,
            )
        record = asdict(result)
        record["aliases"] = list(record.get("aliases") or [])
        client = tracking.client()
        if parent_run_id:
            # Lineage the other way round: the parent run names the version it produced.
            client.set_tag(parent_run_id, "actionclip.registered_model", result.model_uri)
            client.set_tag(parent_run_id, "actionclip.dataset_hash", dataset_hash)
        client.set_model_version_tag(registry_name, str(result.version), "kfp.pipeline_job_name", job_name)
        Path(registered.path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        registered.metadata.update({k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))})
        print(f"registered {result.model_uri} aliases={record['aliases']} promoted={result.promoted}")
        return result.model_uri
