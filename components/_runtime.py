"""Helpers the component bodies import at run time (inside the container, where the project is installed).

KFP lightweight components ship only their own function source, so anything shared lives here and is imported inside
the body (``from components._runtime import ...``): the project image installs this package next to ``actionclip``.
Only the standard library is imported at module level.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping

# One greppable line per failed stage in the task log; `actionclip pipeline run` reads it back to name the cause.
ERROR_MARKER = "ACTIONCLIP_STAGE_ERROR"
# One line per stage with the seconds spent in the library call itself (the rest of the task's wall time is the
# pipeline machinery: process start, imports, artifact I/O); the local runner and the benchmark read it.
TIME_MARKER = "ACTIONCLIP_STAGE_TIME"
# MLflow tag that ties the pipeline's parent run to the KFP job (the exit handler finds the run by it).
JOB_TAG = "kfp.pipeline_job_name"


@contextlib.contextmanager
def stage_errors(stage: str) -> Iterator[None]:
    """Re-raise any error from a stage after printing it as one marked JSON line.

    The task still fails (KFP marks it FAILURE and stops the downstream tasks); the marker lets the local runner and
    anyone reading the pod log see the stage's own message instead of the orchestrator's generic one.
    """
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - re-raised below; KeyboardInterrupt/SystemExit are reported too
        record = {"stage": stage, "type": type(exc).__name__, "message": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}
        traceback.print_exc()
        print(f"{ERROR_MARKER} {json.dumps(record)}", flush=True)
        sys.stdout.flush()
        raise


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Print how long the body took as a marked JSON line (only when it succeeds)."""
    import time

    start = time.perf_counter()
    yield
    print(f"{TIME_MARKER} {json.dumps({'stage': stage, 'seconds': round(time.perf_counter() - start, 4)})}", flush=True)


def parse_marker(line: str, marker: str) -> dict[str, Any] | None:
    """The JSON record of a ``marker`` line, or None for any other line."""
    idx = line.find(marker + " ")
    if idx < 0:
        return None
    try:
        record = json.loads(line[idx + len(marker) + 1:].strip())
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def parse_error_line(line: str) -> dict[str, str] | None:
    """The record from a marker line written by ``stage_errors``, or None for any other line."""
    record = parse_marker(line, ERROR_MARKER)
    return record if record is not None and "message" in record else None


@contextlib.contextmanager
def work_dir(work_root: str, job_id: str, stage: str) -> Iterator[Path]:
    """Where a stage writes its scratch outputs (checkpoints, logs) before the kept parts are copied to artifacts.

    With ``work_root`` on shared storage (a PVC path) the directory is stable per (run, stage): ``job_id`` is the
    KFP run's UUID, the same for every retry of a task in that run and different for every other run, so a retry
    resumes from the stage's last checkpoint and a new run never does. The folder is kept. Without ``work_root``, a
    temporary directory that is removed when the stage is done (the task's artifacts hold everything worth keeping).
    """
    if work_root:
        if not job_id or job_id.startswith("{{"):
            raise ValueError(
                f"work_root {work_root!r} needs the KFP run id to key the {stage} stage's folder, got {job_id!r}; "
                "pass job_id (KFP fills in {{$.pipeline_job_uuid}}) or leave work_root empty for a temporary folder")
        path = Path(work_root) / _safe(job_id) / stage
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=f"actionclip-{stage}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def copy_dir(src: str | Path, dst: str | Path) -> Path:
    """Copy a directory's contents into ``dst`` (created; existing files replaced). Returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"expected a directory from the stage, found none at {src}")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def publish_model(model_artifact: Any, result: Any, stage: str, dataset_artifact: Any, **extra: str) -> None:
    """Copy a training stage's model directory into its KFP ``Model`` artifact and label it for the UI and lineage
    (framework, format, stage, MLflow run id, dataset hash, plus ``extra``)."""
    copy_dir(result.paths["model"], model_artifact.path)
    model_artifact.metadata.update({
        "framework": "actionclip", "format": "safetensors", "stage": stage, "mlflow_run_id": result.run_id or "",
        "dataset_hash": dataset_artifact.metadata.get("dataset_hash", ""), **extra,
    })


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def top_confused_classes(confusion: list[list[float]], n: int) -> list[int]:
    """Indices of at most ``n`` classes to show in a confusion matrix, in label order.

    Picks the classes involved in the most errors (off-diagonal mass of their row and column), then fills up with
    the most frequent classes, so a 400-class matrix becomes a readable n x n view of where the model goes wrong.
    """
    c = len(confusion)
    if c <= n:
        return list(range(c))
    errors = [0.0] * c
    support = [0.0] * c
    for i, row in enumerate(confusion):
        for j, value in enumerate(row):
            support[i] += value
            if i != j:
                errors[i] += value
                errors[j] += value
    order = sorted(range(c), key=lambda k: (-errors[k], -support[k], k))
    return sorted(order[:n])


# Fields the pipeline wires itself (artifacts, tracking); a per-stage override may not redirect them.
WIRED_FIELDS = frozenset({"data", "model", "out_dir", "parent_run_id", "prompt", "experiment", "tracking"})


def build_config(config_cls: Any, values: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> Any:
    """``config_cls.from_dict(values | overrides)``, refusing overrides of the fields the pipeline wires.

    ``overrides`` is the stage's free-form pipeline parameter (e.g. ``{"precision": "bf16"}``) for config fields
    that have no pipeline parameter of their own; unknown names are rejected by the config class itself.
    """
    overrides = dict(overrides or {})
    wired = sorted(k for k in overrides if k.replace("-", "_") in WIRED_FIELDS)
    if wired:
        from actionclip.errors import ConfigError

        raise ConfigError(
            f"{config_cls.STAGE} overrides may not set {', '.join(wired)}: the pipeline wires these from its artifacts"
        )
    return config_cls.from_dict({**values, **overrides})


def stage_config(config_cls: Any, params: Mapping[str, Any], wired: Mapping[str, Any]) -> Any:
    """The stage config of a component call: each of the component's ``params`` that names a config field, the
    values the pipeline wires (``wired``: artifact paths, scratch folder) and the stage's ``overrides`` on top."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in params.items() if k in fields and k not in wired}
    return build_config(config_cls, {**values, **wired, "quiet": True}, params.get("overrides"))


def log_scalars(metrics_artifact: Any, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Log the finite scalars of ``metrics`` on a KFP ``Metrics`` artifact; returns what was logged."""
    from actionclip.tracking import scalar_metrics

    scalars = scalar_metrics(metrics)
    for key, value in scalars.items():
        metrics_artifact.log_metric(prefix + key, value)
    return scalars
