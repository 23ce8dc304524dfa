"""Kubernetes settings of the pipeline's tasks (GPUs, resources, volumes, credentials, retries, timeouts, caching).

These are compile-time settings (KFP cannot take accelerator types, secret names or volume names from pipeline
parameters), applied with kfp-kubernetes. ``kfp.local`` ignores every one of them except environment variables,
which this module never sets, so the same pipeline runs locally and compiles for a cluster.

Names shared with ``manifests/`` (keep them in sync):
    PVC ``actionclip-data`` mounted at ``/data`` (videos, synthetic clips, resumable checkpoints);
    ConfigMap ``actionclip-pipeline-env``: MLFLOW_TRACKING_URI, MLFLOW_S3_ENDPOINT_URL;
    Secret ``actionclip-s3-credentials``: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY;
    Secrets ``actionclip-mlflow-writer`` (every task) and ``actionclip-mlflow-promoter`` (the register step only):
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, MLflow's own client variables for its basic-auth server;
    pod label ``app.kubernetes.io/name=actionclip-pipeline``, which the NetworkPolicies select.

Every task runs as a non-root user (``kfp.kubernetes.set_security_context``: runAsNonRoot, runAsUser/Group); the KFP
backend adds allowPrivilegeEscalation=false, drops ALL capabilities and sets seccompProfile RuntimeDefault itself
(see docs/deploy.md, "Pod Security").
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Task kinds: "gpu" stages train or run the model over many clips; "data" probes videos (CPU-bound); "light" only
# talks to MLflow.
GPU, DATA, LIGHT = "gpu", "data", "light"
# MLflow identities (scripts/mlflow_identities.py): the writer logs runs and models; only the promoter changes the
# registry (new versions, aliases).
WRITER, PROMOTER = "writer", "promoter"


@dataclass(frozen=True)
class PlatformSettings:
    """Everything the compiled pipeline asks of the cluster. Defaults suit a single-GPU-per-task cluster."""

    gpu_type: str = "nvidia.com/gpu"  # extended resource name (accelerator type) requested by GPU stages
    gpus: int = 1  # GPUs per GPU stage (limits only, as Kubernetes requires)
    gpu_toleration: bool = True  # tolerate the usual `nvidia.com/gpu:NoSchedule` taint of GPU nodes
    gpu_node_selector: dict[str, str] = field(default_factory=dict)  # e.g. {"nvidia.com/gpu.product": "NVIDIA-L4"}
    shm_size: str = "8Gi"  # memory-backed /dev/shm for DataLoader workers on GPU stages
    cpu_request: dict[str, str] = field(default_factory=lambda: {GPU: "4", DATA: "2", LIGHT: "500m"})
    memory_request: dict[str, str] = field(default_factory=lambda: {GPU: "16Gi", DATA: "4Gi", LIGHT: "1Gi"})
    memory_limit: dict[str, str] = field(default_factory=lambda: {GPU: "48Gi", DATA: "8Gi", LIGHT: "4Gi"})
    pvc_name: str = "actionclip-data"  # ReadWriteMany claim holding the videos (and synthetic clips, checkpoints)
    data_mount: str = "/data"
    config_map: str = "actionclip-pipeline-env"
    config_map_keys: tuple[str, ...] = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL")
    s3_secret: str = "actionclip-s3-credentials"
    s3_secret_keys: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    mlflow_secrets: dict[str, str] = field(default_factory=lambda: {
        WRITER: "actionclip-mlflow-writer", PROMOTER: "actionclip-mlflow-promoter"})
    mlflow_secret_keys: tuple[str, ...] = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    pod_labels: dict[str, str] = field(default_factory=lambda: {
        "app.kubernetes.io/name": "actionclip-pipeline", "app.kubernetes.io/part-of": "actionclip"})
    run_as_user: int = 1000  # the project image's non-root user (Dockerfile: UID)
    run_as_group: int = 1000
    retries: int = 2  # GPU stages: preemptions and flaky nodes are retried (training resumes from checkpoints)
    backoff: str = "60s"
    backoff_factor: float = 2.0
    backoff_max: str = "1800s"
    timeout_s: dict[str, int] = field(default_factory=lambda: {GPU: 24 * 3600, DATA: 4 * 3600, LIGHT: 1800})

    def with_overrides(self, **changes: Any) -> "PlatformSettings":
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown platform setting(s): {', '.join(unknown)}")
        return type(self)(**{**{n: getattr(self, n) for n in names}, **changes})


def apply(task: Any, kind: str, settings: PlatformSettings, *, cache: bool = True, identity: str = WRITER) -> Any:
    """Apply the settings for a task of ``kind`` (GPU, DATA or LIGHT) running as the MLflow ``identity`` (WRITER or
    PROMOTER); returns the task."""
    from kfp import kubernetes

    if identity not in settings.mlflow_secrets:
        raise ValueError(f"unknown MLflow identity {identity!r} (known: {', '.join(settings.mlflow_secrets)})")
    kubernetes.set_security_context(task, run_as_user=settings.run_as_user, run_as_group=settings.run_as_group,
                                    run_as_non_root=True)
    for key, value in settings.pod_labels.items():
        kubernetes.add_pod_label(task, label_key=key, label_value=value)

    task.set_cpu_request(settings.cpu_request[kind])
    task.set_memory_request(settings.memory_request[kind])
    task.set_memory_limit(settings.memory_limit[kind])
    kubernetes.mount_pvc(task, pvc_name=settings.pvc_name, mount_path=settings.data_mount)
    kubernetes.use_config_map_as_env(
        task, config_map_name=settings.config_map, config_map_key_to_env={k: k for k in settings.config_map_keys}
    )
    kubernetes.use_secret_as_env(
        task, secret_name=settings.s3_secret, secret_key_to_env={k: k for k in settings.s3_secret_keys}
    )
    kubernetes.use_secret_as_env(
        task, secret_name=settings.mlflow_secrets[identity],
        secret_key_to_env={k: k for k in settings.mlflow_secret_keys},
    )
    kubernetes.set_timeout(task, settings.timeout_s[kind])
    if kind == GPU:
        task.set_accelerator_type(settings.gpu_type)
        task.set_accelerator_limit(settings.gpus)
        if settings.gpu_toleration:
            kubernetes.add_toleration(task, key=settings.gpu_type, operator="Exists", effect="NoSchedule")
        for key, value in settings.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=settings.shm_size)
        task.set_retry(num_retries=settings.retries, backoff_duration=settings.backoff,
                       backoff_factor=settings.backoff_factor, backoff_max_duration=settings.backoff_max)
    task.set_caching_options(cache)
    return task
