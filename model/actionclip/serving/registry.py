"""MLflow Model Registry: register a fine-tuned model (the pipeline's last stage), promote by alias, resolve an
alias to the storage location of its artifacts.

Promotion rule: the new version gets alias ``challenger``; it also gets ``champion`` when there is no champion yet
or when its metric beats the champion's by more than ``margin``. Registration is idempotent per key (the pipeline
run id, else the sha256 of the weights): running the step again finds the version it made instead of adding one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from actionclip.serving.errors import RegistryError
from actionclip.tracking import scalar_metrics

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_KEY = "actionclip.key"
TAG_METRIC = "actionclip.metric"
TAG_METRIC_VALUE = "actionclip.metric_value"
LINEAGE_TAGS = ("pipeline_run_id", "dataset_hash", "parent_checkpoint")
_METRIC_NAME_RE = re.compile(r"^[\w\-. /]+$")


@dataclass
class RegisterResult:
    name: str
    version: str
    aliases: list[str]
    promoted: bool                 # this version holds @champion after the call
    model_uri: str                 # models:/<name>/<version>
    run_id: str | None = None      # the MLflow run that logged the model
    reused: bool = False           # the key was registered before: no new version was made
    previous_champion: str | None = None
    reason: str = ""               # why it was (not) promoted, for logs
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[str]:
    """Run the block against ``uri`` (default: ``actionclip.tracking`` conventions). The fluent tracking URI
    is left pointing at it (``log_model`` needs the fluent API); the environment variable is restored."""
    import mlflow

    from actionclip import tracking

    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    resolved = tracking.tracking_uri()
    mlflow.set_tracking_uri(resolved)
    try:
        yield resolved
    finally:
        if uri:
            if old_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_env


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def read_metrics(metrics: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, float]:
    """Scalar metrics from a dict or a metrics.json (lists/dicts such as per_class and confusion are skipped)."""
    if isinstance(metrics, (str, os.PathLike)):
        p = Path(metrics)
        try:
            metrics = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read metrics file {p}: {exc}") from None
    if not isinstance(metrics, Mapping):
        raise RegistryError("metrics must be a mapping of names to numbers")
    return {k: v for k, v in scalar_metrics(metrics).items() if _METRIC_NAME_RE.match(k)}


def weights_sha256(model_dir: str | os.PathLike[str]) -> str:
    p = Path(model_dir)
    p = p / "model.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise RegistryError(f"weights not found: {p}")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def register_model(
    model_dir: str | os.PathLike[str],
    metrics: Mapping[str, Any] | str | os.PathLike[str],
    name: str = "actionclip",
    *,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    prompt: str | os.PathLike[str] | None = None,
    metric: str = "top1",
    margin: float = 0.0,
    higher_is_better: bool = True,
    pipeline_run_id: str | None = None,
    dataset_hash: str | None = None,
    parent_checkpoint: str | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "actionclip",
    int8: bool = False,
    await_seconds: int = 300,
) -> RegisterResult:
    """Log ``model_dir`` as a pyfunc with its metrics and lineage, register a version, set aliases.

    Args:
        model_dir: ``save_pretrained`` directory (model.safetensors + config.json).
        metrics: dict or metrics.json; ``metric`` must be among its scalars.
        labels: labels.txt path or list (default ``model_dir/labels.txt``); prompt: prompt.json (default all
            16 templates).
        margin: promote only if ``metric`` beats the champion's by more than this (absolute).
        pipeline_run_id: lineage, and the idempotency key (default: sha256 of the weights).
        parent_run_id: MLflow run to nest the registration run under.
    """
    from mlflow.exceptions import MlflowException

    scalars = read_metrics(metrics)
    if metric not in scalars:
        raise RegistryError(f"metric {metric!r} is not in the metrics ({', '.join(sorted(scalars)) or 'none'})")
    if not Path(model_dir).exists():
        raise RegistryError(f"model directory not found: {model_dir}")
    key = pipeline_run_id or f"sha256:{weights_sha256(model_dir)}"
    lineage = {"pipeline_run_id": pipeline_run_id, "dataset_hash": dataset_hash,
               "parent_checkpoint": parent_checkpoint}
    lineage = {k: str(v) for k, v in lineage.items() if v}

    with using_tracking_uri(tracking_uri) as uri:
        client = _client(uri)
        existing = _find_version(client, name, key)
        run_id = None
        if existing is not None:
            version, reused = existing.version, True
            run_id = existing.run_id
            new_value = float(existing.tags.get(TAG_METRIC_VALUE, scalars[metric]))
        else:
            version, run_id = _log_and_register(
                client, model_dir, scalars, name, labels, prompt, metric, key, lineage,
                parent_run_id, experiment, int8, await_seconds,
            )
            reused, new_value = False, scalars[metric]
            client.set_registered_model_alias(name, CHALLENGER, version)

        champion = _alias_version(client, name, CHAMPION)
        previous = str(champion.version) if champion is not None else None
        if champion is None:
            promote_now, reason = True, "no champion yet"
        elif champion.version == version:
            promote_now, reason = False, "already champion"
        else:
            champ_value = _metric_of(client, champion, metric)
            if champ_value is None:
                promote_now, reason = False, f"champion v{champion.version} has no {metric!r}; not compared"
            else:
                gain = (new_value - champ_value) if higher_is_better else (champ_value - new_value)
                promote_now = gain > margin
                reason = (f"{metric} {new_value:.4f} vs champion v{champion.version} {champ_value:.4f} "
                          f"(margin {margin}): {'promoted' if promote_now else 'kept champion'}")
        if promote_now:
            client.set_registered_model_alias(name, CHAMPION, version)
        try:
            aliases = sorted(client.get_model_version(name, version).aliases)
        except MlflowException as exc:
            raise RegistryError(f"cannot read {name} v{version}: {exc.message}") from None
    return RegisterResult(
        name=name, version=str(version), aliases=aliases, promoted=CHAMPION in aliases,
        model_uri=f"models:/{name}/{version}", run_id=run_id, reused=reused,
        previous_champion=previous, reason=reason, metrics=scalars,
    )


def _log_and_register(client, model_dir, scalars, name, labels, prompt, metric, key, lineage, parent_run_id,
                      experiment, int8, await_seconds) -> tuple[str, str]:
    import mlflow

    from actionclip.serving.packaging import log_pyfunc
    from actionclip import tracking

    tracker = tracking.Tracker(experiment, f"register-{name}", parent_run_id or "",
                               tags={"actionclip.stage": "register", TAG_KEY: key, **lineage})
    try:
        tracker.log_params({**lineage, "registered_model": name, "metric": metric, "int8": int8})
        tracker.log_metrics(scalars)
        # nested: the caller (a notebook, a KFP step) may already have an active fluent run
        with mlflow.start_run(run_id=tracker.run_id, nested=mlflow.active_run() is not None):
            info = log_pyfunc(model_dir, labels, prompt, int8=int8, params=lineage or None,
                              tags={TAG_KEY: key})
        version_tags = {TAG_KEY: key, TAG_METRIC: metric, TAG_METRIC_VALUE: repr(scalars[metric]),
                        **{f"actionclip.{k}": v for k, v in lineage.items()}}
        mv = mlflow.register_model(info.model_uri, name, await_registration_for=await_seconds, tags=version_tags)
        _wait_ready(client, name, mv.version, await_seconds)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return str(mv.version), tracker.run_id


def _find_version(client, name: str, key: str):
    """The newest READY version of ``name`` tagged with ``key``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{_q(name)}' and tags.`{TAG_KEY}` = '{_q(key)}'")
    except MlflowException:
        return None  # registered model does not exist yet
    ready = [v for v in versions if v.status == "READY"]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def _q(text: str) -> str:
    return text.replace("'", "''")


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _metric_of(client, version, metric: str) -> float | None:
    """The comparison metric of a version: its tag, else its source run's metric."""
    if version.tags.get(TAG_METRIC) == metric and TAG_METRIC_VALUE in version.tags:
        return float(version.tags[TAG_METRIC_VALUE])
    if version.run_id:
        value = client.get_run(version.run_id).data.metrics.get(metric)
        if value is not None:
            return float(value)
    return None


def _wait_ready(client, name: str, version: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} v{version} is {status}, not READY")
        time.sleep(0.5)


_URI_RE = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` | ``name@alias`` | ``models:/name/3`` | ``name/3`` -> (name, alias, version)."""
    m = _URI_RE.match(uri.strip())
    if not m:
        raise RegistryError(
            f"cannot parse model URI {uri!r} (expected models:/<name>@<alias> or models:/<name>/<version>)"
        )
    return m["name"], m["alias"], m["version"]


def get_version(uri: str, tracking_uri: str | None = None):
    """The ``ModelVersion`` a registry URI points at, with a one-line error when it does not exist."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    with using_tracking_uri(tracking_uri) as turi:
        client = _client(turi)
        try:
            if alias:
                return client.get_model_version_by_alias(name, alias)
            return client.get_model_version(name, version)
        except MlflowException:
            what = f"alias @{alias}" if alias else f"version {version}"
            raise RegistryError(f"registered model {name!r} has no {what} in {turi}") from None


def resolve(uri: str, tracking_uri: str | None = None) -> str:
    """Storage location of the artifacts of the version ``uri`` points at (e.g. ``s3://.../artifacts`` or
    ``file:///.../artifacts``): what a KServe ``storageUri`` or ``mlflow models serve -m`` can read directly."""
    mv = get_version(uri, tracking_uri)
    with using_tracking_uri(tracking_uri) as turi:
        return _client(turi).get_model_version_download_uri(mv.name, mv.version)


def promote(name: str, version: str | int, alias: str = CHAMPION, tracking_uri: str | None = None) -> None:
    """Point ``alias`` at ``version`` (manual promotion or rollback); the version must exist and be READY."""
    from mlflow.exceptions import MlflowException

    with using_tracking_uri(tracking_uri) as turi:
        client = _client(turi)
        try:
            mv = client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"registered model {name!r} has no version {version} in {turi}") from None
        if mv.status != "READY":
            raise RegistryError(f"{name} v{version} is {mv.status}, not READY")
        client.set_registered_model_alias(name, alias, str(version))


def list_versions(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Versions of ``name`` (newest first) with aliases, metric and lineage tags, for ``registry show``."""
    from mlflow.exceptions import MlflowException

    with using_tracking_uri(tracking_uri) as turi:
        client = _client(turi)
        try:
            versions = client.search_model_versions(f"name = '{_q(name)}'")
        except MlflowException as exc:
            raise RegistryError(f"cannot list {name!r}: {exc.message}") from None
        rows = []
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
            # search results do not carry aliases on every store; read each version
            full = client.get_model_version(name, v.version)
            rows.append({
                "version": full.version, "status": full.status, "aliases": sorted(full.aliases),
                "metric": full.tags.get(TAG_METRIC), "value": full.tags.get(TAG_METRIC_VALUE),
                **{k: full.tags.get(f"actionclip.{k}") for k in LINEAGE_TAGS},
            })
    return rows
