"""MLflow tracking for the stages, through ``MlflowClient`` (no global "active run" state, so several stages can run
in one process and nest under a pipeline run).

* Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``.
* One experiment per name. When it is created here its artifact location is pinned explicitly:
  ``ACTIONCLIP_ARTIFACT_ROOT/<experiment>`` if that variable is set; for a local store (sqlite/file) ``mlartifacts/
  <experiment>`` beside the database; for a tracking server the server's own (proxied) default.
* A stage run is nested under a pipeline run by the ``mlflow.parentRunId`` tag (``parent_run_id``).
* Only rank 0 talks to MLflow: other ranks get a ``NullTracker`` with the same methods.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Mapping

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 6000  # MLflow's limit on one parameter value


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics mapping (MLflow and KFP Metrics accept numbers only; bools, lists,
    dicts, NaN and infinities are left out)."""
    return {str(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def tracking_uri() -> str:
    """The tracking URI the stages use."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _artifact_location(uri: str, experiment: str) -> str | None:
    root = os.environ.get("ACTIONCLIP_ARTIFACT_ROOT")
    if root:
        return f"{root.rstrip('/')}/{experiment}"
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts" / experiment).as_uri()
    if uri.startswith("file:") or "://" not in uri:
        base = Path(uri[len("file:"):] if uri.startswith("file:") else uri).resolve()
        return (base / "mlartifacts" / experiment).as_uri()
    return None  # a tracking server decides (e.g. --artifacts-destination, proxied)


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``, creating it (with a pinned artifact location) when missing."""
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=_artifact_location(tracking_uri(), name))
    except MlflowException:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_parent_run(experiment: str = "actionclip", run_name: str = "pipeline", tags: Mapping[str, str] | None = None) -> str:
    """Create a pipeline-level parent run (left RUNNING; end it with :func:`end_run`) and return its id."""
    c = client()
    run = c.create_run(ensure_experiment(experiment), run_name=run_name, tags=dict(tags or {}))
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b": "value"} with values as strings (lists as JSON), cut to MLflow's limit."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            s = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
            out[key] = s[:MAX_PARAM_CHARS]
    return out


def system_info() -> dict[str, str]:
    import torch

    info = {
        "sys.python": platform.python_version(),
        "sys.platform": platform.platform(),
        "sys.host": socket.gethostname(),
        "sys.cpu_count": str(os.cpu_count()),
        "sys.torch": torch.__version__,
        "sys.cuda": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        info["sys.gpu"] = torch.cuda.get_device_name(0)
        info["sys.gpu_count"] = str(torch.cuda.device_count())
    return info


class NullTracker:
    """Does nothing; used when tracking is off and on ranks other than 0."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dict(self, data: Any, artifact_file: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class Tracker(NullTracker):
    """One MLflow run of one stage, created fresh or re-opened (``run_id``) when a run resumes."""

    def __init__(self, experiment: str, run_name: str, parent_run_id: str = "", run_id: str | None = None,
                 tags: Mapping[str, str] | None = None) -> None:
        self.client = client()
        self.resumed = False
        if run_id:
            self.client.get_run(run_id)  # raises if it does not exist in this store
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            self.resumed = True
        else:
            all_tags = dict(tags or {})
            if parent_run_id:
                self.client.get_run(parent_run_id)  # fail early on a wrong parent id
                all_tags[PARENT_TAG] = parent_run_id
            run = self.client.create_run(ensure_experiment(experiment), run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # params are immutable in MLflow and were logged by the first attempt
            return
        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def open_tracker(cfg: Any, is_main: bool = True, run_id: str | None = None) -> NullTracker:
    """The tracker for a stage config (``tracking``, ``experiment``, ``run_name``, ``parent_run_id`` fields)."""
    if not (cfg.tracking and is_main):
        return NullTracker()
    tags = {"actionclip.stage": cfg.STAGE}
    if run_id:
        from mlflow.exceptions import MlflowException

        try:
            return Tracker(cfg.experiment, cfg.run_name or cfg.STAGE, cfg.parent_run_id, run_id=run_id, tags=tags)
        except MlflowException:  # the checkpoint's run lives in another store: start a new run
            import logging

            logging.getLogger(__name__).warning("MLflow run %s of the checkpoint not found; starting a new run", run_id)
    return Tracker(cfg.experiment, cfg.run_name or cfg.STAGE, cfg.parent_run_id, tags=tags)


def log_stage_start(tracker: NullTracker, cfg: Any, dataset_hash: str | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """Params (resolved config), system info tags, dataset hash and ``config.json``: what every stage logs first."""
    params = dict(cfg.to_dict())
    params.update(extra or {})
    if dataset_hash:
        params["dataset_hash"] = dataset_hash
    tracker.log_params(params)
    tags = system_info()
    if dataset_hash:
        tags["dataset_hash"] = dataset_hash
    tracker.set_tags(tags)
    tracker.log_dict(cfg.to_dict(), "config.json")
