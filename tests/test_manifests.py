"""Offline checks of the Kubernetes manifests (manifests/).

Every kustomization is rendered with ``kubectl kustomize`` from a temporary copy of manifests/ in which the
committed ``*.env.example`` files stand in for the untracked env files (never a developer's real ones). Then:

- every built-in object is validated against the Kubernetes 1.32 schemas in strict mode (kubernetes-validate);
- the custom resources (InferenceService, ServingRuntime, PyTorchJob) get the structural checks held here for the
  fields they use, and their embedded pod templates / containers are validated as core objects;
- policy: every pod template runs as non-root with the restricted security context, requests and limits on every
  container, probes on long-running servers, credentials only through Secret references, restricted volume
  types, and the project image from components/image.py;
- NetworkPolicies select the stores and let in exactly the tracking server;
- the commands inside the containers parse with the real CLIs (mlflow server / db upgrade / models serve,
  actionclip finetune with its config file), and the names the pipeline uses exist;
- the model URI comes from ``actionclip registry resolve actionclip@champion`` against a real SQLite registry and
  lands in the serving Deployment and the InferenceService.
"""
from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.32.0"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH: the kustomizations cannot be rendered")

# kustomization roots, relative to manifests/
LOCAL, GPU, FINETUNE = "overlays/local", "overlays/gpu", "finetune"
LOCAL_SERVING, GPU_SERVING = "overlays/local/serving", "overlays/gpu/serving"
ROOTS = (LOCAL, LOCAL_SERVING, GPU, GPU_SERVING, FINETUNE)
# what gets applied to one cluster: the overlay, then its serving (once a champion exists), then jobs
CLUSTERS = {"local": (LOCAL, LOCAL_SERVING), "gpu": (GPU, GPU_SERVING, FINETUNE)}
CUSTOM_KINDS = {"InferenceService", "ServingRuntime", "PyTorchJob"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ServingRuntime"}
# third-party images are pinned to an exact release; everything else runs the project image
THIRD_PARTY_IMAGES = {"postgres:17.6", "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
                      "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z"}
# pods that run the slim tracking-server image (components.image.MLFLOW_IMAGE); every other one runs IMAGE
MLFLOW_IMAGE_PODS = {"Deployment/mlflow", "Job/mlflow-identities"}
# Pod Security Standards "restricted": the only volume types allowed
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|KEY_ID|CREDENTIAL|USERNAME|PGUSER|ROOT_USER", re.I)
# Secret name -> the untracked env file next to the overlay it is generated from
SECRET_ENV_FILES = {
    "actionclip-postgres-superuser": "postgres.env", "actionclip-mlflow-db": "mlflow-db.env",
    "actionclip-mlflow-admin": "mlflow-admin.env", "actionclip-mlflow-writer": "mlflow-writer.env",
    "actionclip-mlflow-promoter": "mlflow-promoter.env", "actionclip-mlflow-reader": "mlflow-reader.env",
    "actionclip-minio-root": "minio-root.env", "actionclip-s3-credentials": "s3.env",
    "actionclip-s3-reader": "s3-reader.env",
}


# ---------------------------------------------------------------------------------------------------- rendering
def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize path`` as a list of objects (fails the test with kubectl's message)."""
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed: {proc.stderr.strip()[:2000]}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def copy_with_examples(dst: Path) -> Path:
    """A copy of manifests/ without any real env file, each ``X.env.example`` copied to ``X.env``."""
    shutil.copytree(MANIFESTS, dst, ignore=shutil.ignore_patterns("*.env"))
    for example in dst.rglob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return dst


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_with_examples(tmp_path_factory.mktemp("manifests") / "manifests")


@pytest.fixture(scope="module")
def rendered(work: Path) -> dict[str, list[dict[str, Any]]]:
    return {root: render(work / root) for root in ROOTS}


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = find(objs, kind, name)
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def generated(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """A generated ConfigMap/Secret by its name before kustomize's hash suffix."""
    hits = [o for o in objs if o["kind"] == kind and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?",
                                                                   o["metadata"]["name"])]
    assert len(hits) == 1, f"expected one generated {kind} {name}, found {[h['metadata']['name'] for h in hits]}"
    return hits[0]


def cluster_objects(rendered: dict[str, list[dict[str, Any]]], cluster: str) -> list[dict[str, Any]]:
    return [o for root in CLUSTERS[cluster] for o in rendered[root]]


# ------------------------------------------------------------------------------------------------- pod templates
class PodTemplate:
    """A pod as it will run: where it comes from, its labels, its pod spec (containers + initContainers)."""

    def __init__(self, where: str, kind: str, labels: dict[str, str], spec: dict[str, Any]):
        self.where, self.kind, self.labels, self.spec = where, kind, labels, spec

    def containers(self) -> Iterator[dict[str, Any]]:
        yield from self.spec.get("initContainers", [])
        yield from self.spec["containers"]

    def __repr__(self) -> str:
        return self.where


def kserve_pod(isvc: dict[str, Any], runtimes: list[dict[str, Any]]) -> PodTemplate:
    """The predictor pod KServe builds: the ISVC's pod fields + the runtime's containers/volumes, with the
    model's container fields (resources, env, ...) merged into the runtime container named kserve-container."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtime = next(r for r in runtimes if r["metadata"]["name"] == model["runtime"])
    rspec = runtime["spec"]
    containers = copy.deepcopy(rspec["containers"])
    main = next(c for c in containers if c["name"] == "kserve-container")
    for key, value in model.items():
        if key in KSERVE_MODEL_FIELDS:
            continue
        if key == "env":
            main["env"] = main.get("env", []) + value
        else:
            main[key] = copy.deepcopy(value)
    spec = {k: copy.deepcopy(v) for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS and k != "model"}
    spec["containers"] = containers
    spec["volumes"] = spec.get("volumes", []) + copy.deepcopy(rspec.get("volumes", []))
    # KServe labels every predictor pod with its InferenceService (constants.InferenceServicePodLabelKey)
    labels = {**isvc["metadata"].get("labels", {}), **rspec.get("labels", {}),
              "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    return PodTemplate(f"InferenceService/{isvc['metadata']['name']}", "ServingRuntime", labels, spec)


def pod_templates(objs: list[dict[str, Any]]) -> list[PodTemplate]:
    pods = []
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in WORKLOAD_KINDS:
            t = o["spec"]["template"]
            pods.append(PodTemplate(name, o["kind"], t["metadata"].get("labels", {}), t["spec"]))
        elif o["kind"] == "PyTorchJob":
            for rtype, rspec in o["spec"]["pytorchReplicaSpecs"].items():
                t = rspec["template"]
                pods.append(PodTemplate(f"{name}[{rtype}]", "PyTorchJob", t["metadata"].get("labels", {}), t["spec"]))
        elif o["kind"] == "InferenceService":
            pods.append(kserve_pod(o, find(objs, "ServingRuntime")))
    return pods


def pipeline_task_pod() -> PodTemplate:
    """A pipeline task's pod as KFP creates it: the labels pipelines/platform.py gives every task."""
    from pipelines.platform import PlatformSettings

    return PodTemplate("KFP task", "KFP", dict(PlatformSettings().pod_labels), {"containers": []})


@pytest.fixture(scope="module")
def pods(rendered: dict[str, list[dict[str, Any]]]) -> list[PodTemplate]:
    out = [p for root in ROOTS for p in pod_templates(rendered[root])]
    assert len(out) >= 8, out
    return out


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(container: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (secret values replaced by placeholders)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        cm = one(objs, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm.get("data", {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = one(objs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[var["name"]] = f"<secret {var['name']}>"
    return env


# --------------------------------------------------------------------------------------------------- rendering
def test_every_kustomization_renders_with_its_parts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    local, gpu, ft = cluster_objects(rendered, "local"), cluster_objects(rendered, "gpu"), rendered[FINETUNE]
    for objs in (local, gpu):
        for kind, name in [("Deployment", "mlflow"), ("Service", "mlflow"), ("StatefulSet", "postgres"),
                           ("Service", "postgres"), ("NetworkPolicy", "postgres-from-mlflow-only"),
                           ("Namespace", "actionclip")]:
            one(objs, kind, name)
        assert {o["metadata"].get("namespace", "actionclip") for o in objs} == {"actionclip"}
    # the platform renders without a model (no model.env needed before the first champion exists)
    assert not find(rendered[LOCAL], "Deployment", "actionclip-serving")
    assert not find(rendered[GPU], "InferenceService")
    for root in (LOCAL_SERVING, GPU_SERVING, FINETUNE):
        assert not find(rendered[root], "Namespace") and not find(rendered[root], "Secret")
    # local: in-cluster MinIO, Deployment-based serving, no KServe
    one(local, "Deployment", "minio")
    one(local, "Deployment", "actionclip-serving")
    assert not find(local, "InferenceService") and not find(local, "ServingRuntime")
    # gpu: KServe, external bucket (no MinIO at all)
    one(gpu, "InferenceService", "actionclip")
    one(gpu, "ServingRuntime", "actionclip-mlflow")
    assert not [o for o in gpu if "minio" in o["metadata"]["name"]]
    assert not find(gpu, "Deployment", "actionclip-serving")
    # fine-tune: the PyTorchJob and its checkpoint volume, in the same namespace
    one(ft, "PyTorchJob", "actionclip-finetune")
    one(ft, "PersistentVolumeClaim", "actionclip-checkpoints")
    assert {o["metadata"]["namespace"] for o in ft} == {"actionclip"}


def test_builtin_objects_validate_strictly_against_kubernetes_1_32(rendered: dict[str, list[dict[str, Any]]]) -> None:
    errors, checked = [], 0
    for root, objs in rendered.items():
        for o in objs:
            if o["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(o, K8S_VERSION, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{root}: {o['kind']}/{o['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not errors, "\n".join(errors)
    assert checked >= 30


def test_validation_catches_a_wrong_field() -> None:
    """The validator really is strict: an unknown container field and a wrong type are rejected."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "c", "image": "i", "resource": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    pod["spec"]["containers"][0] = {"name": "c", "image": "i", "ports": [{"containerPort": "80"}]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------- custom resources
# Fields of KServe v1beta1 ComponentExtensionSpec (on the predictor beside the inline PodSpec) and of ModelSpec
# (beside the inline Container); serving.kserve.io/v1alpha1 ServingRuntimeSpec; kubeflow.org/v1 PyTorchJobSpec.
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                           "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
                           "annotations", "deploymentStrategy", "autoScaling"}
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion", "storage"}
SERVING_RUNTIME_FIELDS = {"supportedModelFormats", "multiModel", "disabled", "protocolVersions", "workerSpec",
                          "containers", "volumes", "nodeSelector", "affinity", "tolerations", "labels", "annotations",
                          "imagePullSecrets", "hostIPC", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint",
                          "replicas", "storageHelper", "builtInAdapter"}
KSERVE_STORAGE_SCHEMES = {"s3", "gs", "pvc", "http", "https", "hdfs", "webhdfs", "hf", "oci"}
PYTORCHJOB_FIELDS = {"runPolicy", "elasticPolicy", "nprocPerNode", "pytorchReplicaSpecs"}
RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
                     "schedulingPolicy", "suspend", "managedBy"}


def validate_pod(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Strict core validation of an embedded pod spec (wrapped as a Pod)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded", **(metadata or {})}, "spec": spec}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_serving_runtime_structure(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sr = one(rendered[GPU_SERVING], "ServingRuntime", "actionclip-mlflow")
    assert sr["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = sr["spec"]
    assert set(spec) <= SERVING_RUNTIME_FIELDS, set(spec) - SERVING_RUNTIME_FIELDS
    assert set(spec["protocolVersions"]) <= {"v1", "v2", "grpc-v1", "grpc-v2"}
    for fmt in spec["supportedModelFormats"]:
        assert set(fmt) <= {"name", "version", "autoSelect", "priority"}
        assert isinstance(fmt["name"], str) and isinstance(fmt.get("version", ""), str)
        assert isinstance(fmt.get("autoSelect", False), bool)
    assert [c["name"] for c in spec["containers"]].count("kserve-container") == 1
    pod_fields = {k: v for k, v in spec.items() if k in {"containers", "volumes", "nodeSelector", "affinity",
                                                        "tolerations", "imagePullSecrets"}}
    validate_pod(pod_fields, {"labels": spec.get("labels", {})})
    # the runtime serves what KServe downloads to /mnt/models
    main = next(c for c in spec["containers"] if c["name"] == "kserve-container")
    assert "/mnt/models" in main["command"] + main.get("args", [])


def test_inference_service_structure(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = cluster_objects(rendered, "gpu")
    isvc = one(objs, "InferenceService", "actionclip")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(isvc["spec"]) == {"predictor"}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert set(model["modelFormat"]) <= {"name", "version"}
    # the runtime named exists and declares this model format and version
    runtime = one(objs, "ServingRuntime", model["runtime"])
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model.get("protocolVersion", "v1") in runtime["spec"]["protocolVersions"]
    assert urlparse(model["storageUri"]).scheme in KSERVE_STORAGE_SCHEMES, model["storageUri"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in {"RawDeployment", "Standard"}
    assert isinstance(predictor["minReplicas"], int) and predictor["minReplicas"] >= 1
    assert predictor["maxReplicas"] >= predictor["minReplicas"]
    # the pod part of the predictor and the model's container part are core types
    pod_part = {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS and k != "model"}
    container_part = {k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}
    validate_pod({**pod_part, "containers": [{"name": "kserve-container", "image": "x", **container_part}]})
    # the storage initializer's credentials: the ServiceAccount lists the S3 Secret, which carries the endpoint
    sa = one(objs, "ServiceAccount", predictor["serviceAccountName"])
    secret = one(objs, "Secret", sa["secrets"][0]["name"])
    endpoint_url = one(objs, "ConfigMap", "actionclip-pipeline-env")["data"]["MLFLOW_S3_ENDPOINT_URL"]
    ann = secret["metadata"]["annotations"]
    assert ann["serving.kserve.io/s3-endpoint"] == urlparse(endpoint_url).netloc
    assert ann["serving.kserve.io/s3-usehttps"] == ("1" if urlparse(endpoint_url).scheme == "https" else "0")
    assert set(secret["data"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_pytorchjob_structure(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = one(rendered[FINETUNE], "PyTorchJob", "actionclip-finetune")
    assert job["apiVersion"] == "kubeflow.org/v1"
    spec = job["spec"]
    assert set(spec) <= PYTORCHJOB_FIELDS, set(spec) - PYTORCHJOB_FIELDS
    assert set(spec["runPolicy"]) <= RUN_POLICY_FIELDS
    assert spec["runPolicy"]["cleanPodPolicy"] in {"All", "Running", "None"}
    assert isinstance(spec["runPolicy"]["backoffLimit"], int)
    nproc = spec["nprocPerNode"]
    assert isinstance(nproc, str) and (nproc in {"auto", "cpu", "gpu"} or nproc.isdigit())
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}, "multi-node: a Master and Workers"
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    for rtype, rspec in replicas.items():
        assert set(rspec) <= {"replicas", "template", "restartPolicy"}
        assert rspec["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}
        validate_pod(rspec["template"]["spec"], rspec["template"]["metadata"])
        pytorch = [c for c in rspec["template"]["spec"]["containers"] if c["name"] == "pytorch"]
        assert len(pytorch) == 1, f"{rtype}: the operator needs a container named 'pytorch'"
        limits, requests = pytorch[0]["resources"]["limits"], pytorch[0]["resources"]["requests"]
        assert "nvidia.com/gpu" in limits and "nvidia.com/gpu" not in requests
        if nproc.isdigit():
            assert int(limits["nvidia.com/gpu"]) == int(nproc), "one process per GPU"
        mounts = {m["mountPath"]: m["name"] for m in pytorch[0]["volumeMounts"]}
        volumes = {v["name"]: v for v in rspec["template"]["spec"]["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"] for e in pytorch[0]["env"]}
        assert {"NCCL_SOCKET_IFNAME", "TORCH_NCCL_ASYNC_ERROR_HANDLING"} <= env
    # Master and Worker run the same pod: drift between the two copies would be a bug
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]


def test_finetune_command_parses_and_resumes_from_the_checkpoint_volume(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from actionclip.cli import build_parser
    from actionclip.train.cli import config_from_args

    objs = rendered[FINETUNE]
    job = one(objs, "PyTorchJob", "actionclip-finetune")
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (c,) = pod["containers"]
    cmd = c["command"] + c.get("args", [])
    assert cmd[:3] == ["torchrun", "-m", "actionclip.cli"], cmd
    # the config file is the mounted ConfigMap; read the rendered one instead
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_path = cmd[cmd.index("--config") + 1]
    mount_dir = str(Path(cfg_path).parent)
    cm = one(objs, "ConfigMap", volumes[mounts[mount_dir]["name"]]["configMap"]["name"])
    local_cfg = tmp_path / Path(cfg_path).name
    local_cfg.write_text(cm["data"][Path(cfg_path).name], encoding="utf-8")
    args = build_parser().parse_args([local_cfg.as_posix() if a == cfg_path else a for a in cmd[3:]])
    assert args.stage == "finetune"
    cfg = config_from_args(args)  # unknown keys in the YAML would raise here
    assert cfg.resume == "auto"
    # outputs (checkpoints) on the checkpoint PVC, inputs on the data PVC
    ckpt = volumes[mounts["/checkpoints"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert ckpt == "actionclip-checkpoints" and cfg.out_dir.startswith("/checkpoints/")
    assert cfg.data.startswith("/data/") and cfg.model.startswith("/data/")
    assert volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"] == "actionclip-data"


# ------------------------------------------------------------------------------------------------------- policy
def parse_quantity(q: str | int | float) -> float:
    """Kubernetes quantity -> float (cpu in cores, memory in bytes)."""
    s = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", s)
    assert m and m.group(2) in {"", *units}, f"bad quantity {q!r}"
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def test_every_pod_runs_restricted(pods: list[PodTemplate]) -> None:
    for pod in pods:
        psc = pod.spec["securityContext"]
        assert psc["runAsNonRoot"] is True, pod
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", pod
        assert psc.get("runAsUser", 1) != 0, pod
        assert pod.spec.get("automountServiceAccountToken") is False, f"{pod}: no API token is needed"
        # injected Service env vars (MLFLOW_PORT=tcp://..., POSTGRES_PORT, MINIO_PORT) collide with tool settings
        assert pod.spec.get("enableServiceLinks") is False, pod
        assert not pod.spec.get("hostNetwork") and not pod.spec.get("hostPID") and not pod.spec.get("hostIPC")
        for c in pod.containers():
            sc = c["securityContext"]
            where = f"{pod}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0, where
            assert not sc.get("privileged"), where
        for vol in pod.spec.get("volumes", []):
            kinds = set(vol) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{pod}: volume {vol['name']} is {kinds}"


def test_namespace_pod_security_labels(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Restricted is enforced (controllers' containers are configured by manifests/cluster/); warn and audit too."""
    for root in (LOCAL, GPU):
        labels = one(rendered[root], "Namespace", "actionclip")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_read_only_root_has_writable_scratch(pods: list[PodTemplate]) -> None:
    """Every container that runs a Python tool (project image) gets a writable emptyDir /tmp and HOME in it."""
    for pod in pods:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for c in pod.containers():
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            where = f"{pod}/{c['name']}"
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], where
            if c["image"] not in THIRD_PARTY_IMAGES:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert env.get("HOME", "").startswith("/tmp"), f"{where}: HOME must be writable"


def test_every_container_has_requests_and_limits(pods: list[PodTemplate]) -> None:
    for pod in pods:
        for c in pod.containers():
            res = c["resources"]
            where = f"{pod}/{c['name']}"
            for key in ("cpu", "memory"):
                req, lim = parse_quantity(res["requests"][key]), parse_quantity(res["limits"][key])
                assert 0 < req <= lim, f"{where}: {key} request {req} > limit {lim}"
            # extended resources (GPUs) belong in limits; a request, if any, must equal the limit
            for key, value in res["limits"].items():
                if key not in ("cpu", "memory", "ephemeral-storage"):
                    assert res["requests"].get(key, value) == value, where


def test_long_running_servers_have_probes(pods: list[PodTemplate]) -> None:
    servers = [p for p in pods if p.kind in LONG_RUNNING_KINDS]
    assert {p.where for p in servers} >= {"Deployment/mlflow", "StatefulSet/postgres", "Deployment/minio",
                                          "Deployment/actionclip-serving", "InferenceService/actionclip"}
    for pod in servers:
        for c in pod.spec["containers"]:
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{pod}/{c['name']} lacks a {probe}"
                action = c[probe]
                if "httpGet" in action:
                    assert action["httpGet"]["port"] in ports, f"{pod}/{c['name']} {probe} port"


def test_credentials_only_from_secret_references(rendered: dict[str, list[dict[str, Any]]], pods: list[PodTemplate],
                                                 work: Path) -> None:
    for pod in pods:
        for c in pod.containers():
            for var in c.get("env", []):
                if CREDENTIAL_ENV.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{pod}/{c['name']}: {var['name']} is literal"
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    for root in ROOTS:
                        for cm in find(rendered[root], "ConfigMap", src["configMapRef"]["name"]):
                            assert not [k for k in cm["data"] if CREDENTIAL_ENV.search(k)], cm["metadata"]["name"]
    # every Secret is generated from an env file: its data are exactly that file's values, nothing else is literal
    example_values = set()
    for root in ROOTS:
        for secret in find(rendered[root], "Secret"):
            assert "stringData" not in secret
            base = re.sub(r"-[a-z0-9]{10}$", "", secret["metadata"]["name"])
            env_file = SECRET_ENV_FILES[base]
            values = dict(line.split("=", 1) for line in (work / root / env_file).read_text().splitlines()
                          if line.strip() and not line.startswith("#"))
            assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == values
            example_values |= {v for k, v in values.items() if re.search(r"PASSWORD|SECRET", k)}
    # and no password or secret key appears in plain text anywhere in the rendered output
    for root in ROOTS:
        text = yaml.safe_dump_all(rendered[root])
        for value in example_values:
            assert value not in text, f"{root}: credential {value!r} in plain text"
    # the committed tree holds no Secret manifest and no env file (only the *.env.example templates)
    for path in MANIFESTS.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path} commits a Secret"


def test_real_env_files_are_git_ignored(work: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    env_files = [p.relative_to(work).as_posix() for p in work.rglob("*.env")]
    assert env_files
    for rel in env_files:
        proc = subprocess.run(["git", "check-ignore", "-q", f"manifests/{rel}"], cwd=ROOT)
        assert proc.returncode == 0, f"manifests/{rel} would not be ignored by git"
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [f for f in tracked.split() if f.endswith(".env")], "an env file is committed"


def test_references_resolve_within_the_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every Secret/ConfigMap key and PVC a pod refers to exists in what gets applied to that cluster."""
    for cluster in CLUSTERS:
        objs = cluster_objects(rendered, cluster)
        names = {(o["kind"], o["metadata"]["name"]) for o in objs}
        for pod in pod_templates(objs):
            for c in pod.containers():
                for var in c.get("env", []):
                    for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                        ref = var.get("valueFrom", {}).get(ref_key)
                        if ref:
                            data = one(objs, kind, ref["name"])["data"]
                            assert ref["key"] in data, f"{cluster}: {pod}: {ref['name']} has no {ref['key']}"
                for src in c.get("envFrom", []):
                    assert ("ConfigMap", src["configMapRef"]["name"]) in names
            for vol in pod.spec.get("volumes", []):
                if "persistentVolumeClaim" in vol:
                    claim = vol["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in names or any(
                        claim.startswith(f"{t['metadata']['name']}-") for s in find(objs, "StatefulSet")
                        for t in s["spec"].get("volumeClaimTemplates", [])), f"{cluster}: {pod}: PVC {claim}"
                if "configMap" in vol:
                    assert ("ConfigMap", vol["configMap"]["name"]) in names


def test_images_come_from_the_project_setting(pods: list[PodTemplate]) -> None:
    from components.image import IMAGE, MLFLOW_IMAGE

    project = 0
    for pod in pods:
        for c in pod.containers():
            image = c["image"]
            if image in THIRD_PARTY_IMAGES:
                continue
            want = MLFLOW_IMAGE if pod.where in MLFLOW_IMAGE_PODS else IMAGE
            assert image == want, f"{pod}/{c['name']}: {image} is not components.image's {want}"
            project += 1
    assert project >= 7
    for image in THIRD_PARTY_IMAGES:
        assert ":" in image and not image.endswith(":latest")


# ----------------------------------------------------------------------------------------------- network policy
def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (an empty selector matches everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def test_selector_semantics() -> None:
    assert selector_matches({}, {"a": "1"})
    assert selector_matches({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"})
    assert not selector_matches({"matchLabels": {"a": "1", "c": "3"}}, {"a": "1"})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"})


def test_only_the_tracking_server_reaches_postgres_and_minio(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for cluster in CLUSTERS:
        objs = cluster_objects(rendered, cluster)
        all_pods = pod_templates(objs) + [pipeline_task_pod()]
        server = [p for p in all_pods if p.where == "Deployment/mlflow"]
        assert len(server) == 1
        stores = [p for p in all_pods if p.labels.get("app.kubernetes.io/name") in {"postgres", "minio"}]
        assert len(stores) == (2 if cluster == "local" else 1), stores
        policies = find(objs, "NetworkPolicy")
        for store in stores:
            guarding = [np for np in policies if selector_matches(np["spec"]["podSelector"], store.labels)
                        and "Ingress" in np["spec"]["policyTypes"]]
            assert guarding, f"{cluster}: nothing restricts ingress to {store}"
            store_ports = {p["containerPort"] for c in store.spec["containers"] for p in c.get("ports", [])}
            allowed: set[str] = set()
            for np in guarding:
                for rule in np["spec"].get("ingress", []):
                    assert rule.get("from"), f"{np['metadata']['name']}: a rule without 'from' admits everyone"
                    for peer in rule["from"]:
                        assert set(peer) == {"podSelector"}, f"{np['metadata']['name']}: only pods of this namespace"
                        allowed |= {p.where for p in all_pods if selector_matches(peer["podSelector"], p.labels)}
                    assert {p["port"] for p in rule["ports"]} <= store_ports
            # MinIO also admits its setup Job (bucket, policies, users: the only holder of the root keys)
            expected = {"Deployment/mlflow"} | ({"Job/minio-users"} if "minio" in store.where else set())
            assert allowed == expected, f"{cluster}: {store} is reachable from {sorted(allowed)}"
        # no policy selects a pod it was not written for (e.g. a label typo selecting nothing at all)
        for np in policies:
            assert [p for p in all_pods if selector_matches(np["spec"]["podSelector"], p.labels)], np["metadata"]


# ------------------------------------------------------------------------------------ commands inside the pods
@pytest.fixture(scope="module")
def mlflow_cli():
    pytest.importorskip("mlflow")
    from mlflow.cli import cli

    return cli


def parse_click(command, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse argv with a click command under env (click reads MLFLOW_* option defaults from the environment)."""
    with monkeypatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        ctx = command.make_context(command.name, list(argv))
        return dict(ctx.params)


@pytest.mark.parametrize("root", [LOCAL, GPU])
def test_mlflow_server_command_and_settings(rendered: dict[str, list[dict[str, Any]]], root: str, mlflow_cli,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    objs = rendered[root]
    dep = one(objs, "Deployment", "mlflow")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = container_env(c, objs)
    cmd = [expand(a, env) for a in c["command"] + c.get("args", [])]
    assert cmd[:2] == ["mlflow", "server"]
    params = parse_click(mlflow_cli.commands["server"], cmd[2:], env, monkeypatch)
    assert params["host"] == "0.0.0.0" and params["port"] == c["ports"][0]["containerPort"]
    # backend store: the in-cluster Postgres, credentials from libpq env (PGUSER/PGPASSWORD), none in the URI
    backend = urlparse(params["backend_store_uri"])
    assert backend.scheme == "postgresql+psycopg2" and backend.password is None and backend.username is None
    pg = one(objs, "Service", backend.hostname)
    assert backend.port in {p["port"] for p in pg["spec"]["ports"]}
    assert {"PGUSER", "PGPASSWORD"} <= set(env)
    # artifacts: proxied to MinIO (local) or written directly to the external bucket (gpu)
    if root == LOCAL:
        assert params["serve_artifacts"] is True and params["artifacts_destination"].startswith("s3://")
        s3 = urlparse(env["MLFLOW_S3_ENDPOINT_URL"])
        minio = one(objs, "Service", s3.hostname)
        assert s3.port in {p["port"] for p in minio["spec"]["ports"]}
    else:
        assert params["serve_artifacts"] is False and params["default_artifact_root"].startswith("s3://")
        assert urlparse(env["MLFLOW_S3_ENDPOINT_URL"]).scheme == "https"
    # clients reach it under the pipeline ConfigMap's URI: a Service with that port whose Host header is allowed
    tracking = urlparse(one(objs, "ConfigMap", "actionclip-pipeline-env")["data"]["MLFLOW_TRACKING_URI"])
    svc = one(objs, "Service", tracking.hostname.split(".")[0])
    assert tracking.port in {p["port"] for p in svc["spec"]["ports"]}
    assert selector_matches({"matchLabels": svc["spec"]["selector"]}, dep["spec"]["template"]["metadata"]["labels"])
    allowed = params["allowed_hosts"].split(",")
    assert is_allowed_host_header(allowed, tracking.netloc)
    assert is_allowed_host_header(allowed, "localhost:5000"), "kubectl port-forward"
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")
    # the schema migration runs against the same database before the server starts
    init = {ic["name"]: ic for ic in spec["initContainers"]}
    upgrade = init["db-upgrade"]
    up_env = container_env(upgrade, objs)
    up_cmd = [expand(a, up_env) for a in upgrade["command"]]
    assert up_cmd[:3] == ["mlflow", "db", "upgrade"]
    up = parse_click(mlflow_cli.commands["db"].commands["upgrade"], up_cmd[3:], up_env, monkeypatch)
    assert up["url"] == params["backend_store_uri"]
    # the bucket check is valid Python
    bucket = init["ensure-bucket"]
    assert bucket["command"][:2] == ["python", "-c"]
    compile(bucket["command"][2], "ensure-bucket", "exec")
    assert list(init) == ["db-upgrade", "ensure-bucket"]


def gate_args(command: list[str]):
    from actionclip.serving import gate

    assert command[:3] == ["python", "-m", "actionclip.serving.gate"], command
    return gate.build_parser().parse_args(command[3:])


def scoring_command(command: list[str]) -> list[str]:
    """The `mlflow models serve` command the gate runs as its child (without the interpreter prefix)."""
    from actionclip.serving import gate

    args = gate_args(command)
    full = gate.scoring_command(args.model_uri, args.upstream_port, args.workers)
    return ["mlflow", *full[3:]]


def test_model_servers_run_mlflow_models_serve(rendered: dict[str, list[dict[str, Any]]], mlflow_cli,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    serve = mlflow_cli.commands["models"].commands["serve"]
    local = cluster_objects(rendered, "local")
    (c,) = one(local, "Deployment", "actionclip-serving")["spec"]["template"]["spec"]["containers"]
    env = container_env(c, local)
    cmd = scoring_command([expand(a, env) for a in c["command"] + c.get("args", [])])
    assert cmd[:3] == ["mlflow", "models", "serve"]
    p = parse_click(serve, cmd[3:], env, monkeypatch)
    model_cm = generated(local, "ConfigMap", "actionclip-model")
    assert p["model_uri"] == model_cm["data"]["MODEL_URI"]
    assert p["env_manager"] == "local" and p["host"] == "127.0.0.1"  # only the gate is reachable
    assert gate_args(c["command"]).port == c["ports"][0]["containerPort"]
    assert gate_args(c["command"]).host == "0.0.0.0" and "ACTIONCLIP_SERVING_VIDEO_ROOTS" not in env
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    # mlflow-artifacts:/ locations download through the tracking server
    assert env["MLFLOW_TRACKING_URI"] == one(local, "ConfigMap", "actionclip-pipeline-env")["data"]["MLFLOW_TRACKING_URI"]

    gpu = rendered[GPU_SERVING]
    pod = kserve_pod(one(gpu, "InferenceService", "actionclip"), find(gpu, "ServingRuntime"))
    main = next(c for c in pod.spec["containers"] if c["name"] == "kserve-container")
    cmd = scoring_command(main["command"] + main.get("args", []))
    p = parse_click(serve, cmd[3:], {e["name"]: e["value"] for e in main["env"]}, monkeypatch)
    assert p["model_uri"] == "/mnt/models" and p["env_manager"] == "local" and gate_args(main["command"]).port == 8080
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_bucket_check_fails_in_one_line_when_s3_is_unreachable(rendered: dict[str, list[dict[str, Any]]],
                                                                tmp_path: Path) -> None:
    """The ensure-bucket init container's script, run here against a closed port: a clear one-line error (the
    kubelet then retries it), not a traceback."""
    import sys

    pytest.importorskip("boto3")
    objs = rendered[LOCAL]
    init = next(c for c in one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["initContainers"]
                if c["name"] == "ensure-bucket")
    env = container_env(init, objs)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env = {**keep, **env, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1",
           "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "HOME": tmp_path.as_posix()}
    proc = subprocess.run([sys.executable, *init["command"][1:]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("cannot reach the S3 endpoint for bucket mlflow-artifacts:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_pipeline_names_exist_in_every_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The compiled pipeline mounts these by name (pipelines/platform.py); the overlays must provide them."""
    from pipelines.platform import PlatformSettings

    s = PlatformSettings()
    for root in (LOCAL, GPU):
        objs = rendered[root]
        cm = one(objs, "ConfigMap", s.config_map)  # exact name: no hash suffix
        assert set(s.config_map_keys) <= set(cm["data"])
        secret = one(objs, "Secret", s.s3_secret)
        assert set(s.s3_secret_keys) <= set(secret["data"])
        pvc = one(objs, "PersistentVolumeClaim", s.pvc_name)
        assert pvc["spec"]["accessModes"] == (["ReadWriteOnce"] if root == LOCAL else ["ReadWriteMany"])


# ----------------------------------------------------------------------------------- model URI from the registry
def test_model_uri_comes_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """docs/deploy.md step: ``echo "MODEL_URI=$(actionclip registry resolve actionclip@champion)" > model.env``,
    run against a real SQLite registry; the rendered serving objects carry exactly that URI."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from actionclip.cli import main

    db = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    client.create_registered_model("actionclip")
    old = client.create_model_version("actionclip", source="s3://actionclip-mlflow-artifacts/1/models/m-0ld/artifacts")
    champ = client.create_model_version("actionclip", source="s3://actionclip-mlflow-artifacts/1/models/m-c4a/artifacts")
    client.create_model_version("actionclip", source="s3://actionclip-mlflow-artifacts/1/models/m-n3w/artifacts")
    client.set_registered_model_alias("actionclip", "champion", champ.version)
    assert old.version != champ.version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    assert main(["registry", "resolve", "actionclip@champion"]) == 0
    uri = capsys.readouterr().out.strip()
    assert uri == "s3://actionclip-mlflow-artifacts/1/models/m-c4a/artifacts"

    work = copy_with_examples(tmp_path / "manifests")
    for root in (LOCAL_SERVING, GPU_SERVING):
        (work / root / "model.env").write_text(f"MODEL_URI={uri}\n", encoding="utf-8")
    local, gpu = render(work / LOCAL_SERVING), render(work / GPU_SERVING)
    (c,) = one(local, "Deployment", "actionclip-serving")["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in c["env"] if e["name"] == "MODEL_URI")["valueFrom"]["configMapKeyRef"]
    assert one(local, "ConfigMap", ref["name"])["data"][ref["key"]] == uri
    assert one(gpu, "InferenceService", "actionclip")["spec"]["predictor"]["model"]["storageUri"] == uri
    # a new champion changes the ConfigMap's name, which rolls the serving Deployment
    assert ref["name"] != generated(render(copy_with_examples(tmp_path / "examples") / LOCAL_SERVING), "ConfigMap",
                                    "actionclip-model")["metadata"]["name"]


# ------------------------------------------------------------------- the tracking server as deployed, for real
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A real PostgreSQL server on 127.0.0.1 with the user/password of the committed postgres.env.example and an
    empty ``mlflow`` database, like the StatefulSet's first start. Yields (port, credentials)."""
    import pwd
    import tempfile

    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("createdb")):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    creds = dict(line.split("=", 1) for line in (MANIFESTS / LOCAL / "postgres.env.example").read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pg_uid = pwd.getpwnam("postgres").pw_uid
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the database as")
        prefix = ["runuser", "-u", "postgres", "--"]
    # pytest's tmp_path lives under a root-only folder: the database needs one the postgres user can enter
    base = Path(tempfile.mkdtemp(prefix="actionclip-pg-", dir="/tmp"))
    if prefix:
        os.chown(base, pg_uid, -1)
    (base / "pw").write_text(creds["POSTGRES_PASSWORD"] + "\n")
    if prefix:
        os.chown(base / "pw", pg_uid, -1)
    port = _free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)
    run("initdb", "-D", str(base / "data"), "-U", creds["POSTGRES_USER"], f"--pwfile={base / 'pw'}",
        "-A", "scram-sha-256")
    run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "log"), "-w", "start",
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1")
    try:
        env = {**os.environ, "PGPASSWORD": creds["POSTGRES_PASSWORD"]}
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", creds["POSTGRES_USER"], "-w", "mlflow"],
                       check=True, env=env, capture_output=True, timeout=60)
        yield port, creds
    finally:
        subprocess.run([*prefix, "pg_ctl", "-D", str(base / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.server
def test_tracking_server_runs_from_the_rendered_manifest(rendered: dict[str, list[dict[str, Any]]],
                                                         postgres: tuple[int, dict[str, str]], tmp_path: Path) -> None:
    """The local overlay's mlflow Deployment, run here: its init container's `mlflow db upgrade` on an empty
    Postgres, then its `mlflow server` command with its env (credentials through libpq's PGUSER/PGPASSWORD).
    Only the Service DNS name, the listen address/port and the artifact destination (MinIO) are swapped for
    local ones. The lighter test_mlflow_server_command_and_settings covers the same settings without servers."""
    import signal
    import time

    import requests

    port, creds = postgres
    objs = rendered[LOCAL]
    spec = one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    secrets = {"PGUSER": creds["POSTGRES_USER"], "PGPASSWORD": creds["POSTGRES_PASSWORD"],
               "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}

    def env_of(container: dict[str, Any]) -> dict[str, str]:
        env = {k: secrets.get(k, v) for k, v in container_env(container, objs).items()}
        env["MLFLOW_BACKEND_STORE_URI"] = env["MLFLOW_BACKEND_STORE_URI"].replace("//postgres:5432/",
                                                                                  f"//127.0.0.1:{port}/")
        env["MLFLOW_ARTIFACTS_DESTINATION"] = (tmp_path / "artifacts").as_posix()
        env["HOME"] = tmp_path.as_posix()
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG", "AWS_"))}
        return {**keep, **env}

    upgrade = next(c for c in spec["initContainers"] if c["name"] == "db-upgrade")
    env = env_of(upgrade)
    proc = subprocess.run([expand(a, env) for a in upgrade["command"]], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    (server,) = spec["containers"]
    env = env_of(server)
    http = _free_port()
    cmd = [expand(a, env) for a in server["command"] + server.get("args", [])]
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(http)
    log = (tmp_path / "server.log").open("w")
    srv = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert srv.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                # as the kubelet probes it: by pod IP, which is not an allowed Host
                if requests.get(f"{base}/health", headers={"Host": "10.244.0.7:5000"}, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(1)
        api = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        tracking = urlparse(one(objs, "ConfigMap", "actionclip-pipeline-env")["data"]["MLFLOW_TRACKING_URI"])
        assert requests.get(api, headers={"Host": tracking.netloc}, timeout=10).status_code == 200
        assert requests.get(api, headers={"Host": "localhost:5000"}, timeout=10).status_code == 200
        assert requests.get(api, headers={"Host": "evil.example.com"}, timeout=10).status_code == 403
        # artifacts are proxied: a new experiment's artifact root is the server's mlflow-artifacts:/ scheme
        created = requests.post(f"{base}/api/2.0/mlflow/experiments/create", json={"name": "actionclip"},
                                headers={"Host": tracking.netloc}, timeout=10)
        assert created.status_code == 200, created.text
        exp = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=actionclip",
                           headers={"Host": tracking.netloc}, timeout=10).json()["experiment"]
        assert exp["artifact_location"].startswith("mlflow-artifacts:/")
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
        log.close()


# ------------------------------------------------------------------------------------- authenticated tracking
# MLflow client pod -> the identity Secret it must log in with (scripts/mlflow_identities.py grants)
CLIENT_IDENTITIES = {"Deployment/actionclip-serving": "actionclip-mlflow-reader",
                     "PyTorchJob/actionclip-finetune[Master]": "actionclip-mlflow-writer",
                     "PyTorchJob/actionclip-finetune[Worker]": "actionclip-mlflow-writer",
                     "Job/mlflow-identities": "actionclip-mlflow-admin"}


@pytest.mark.parametrize("root", [LOCAL, GPU])
def test_tracking_server_requires_authentication(rendered: dict[str, list[dict[str, Any]]], root: str, mlflow_cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import configparser

    objs = rendered[root]
    spec = one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = container_env(c, objs)
    params = parse_click(mlflow_cli.commands["server"], c["command"][2:], env, monkeypatch)
    assert params["app_name"] == "basic-auth"
    # the auth config is the mounted ConfigMap's file: a Postgres user store (credentials from libpq env), no
    # admin password in it, nothing granted by default
    mount = next(m for m in c["volumeMounts"] if env["MLFLOW_AUTH_CONFIG_PATH"].startswith(m["mountPath"] + "/"))
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = one(objs, "ConfigMap", vol["configMap"]["name"])
    ini = configparser.ConfigParser()
    ini.read_string(cm["data"][Path(env["MLFLOW_AUTH_CONFIG_PATH"]).name])
    auth = ini["mlflow"]
    assert auth["default_permission"] == "NO_PERMISSIONS" and "admin_password" not in auth
    db = urlparse(auth["database_uri"])
    assert db.scheme == "postgresql+psycopg2" and db.password is None and db.path == "/mlflow_auth"
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        ref = next(e for e in c["env"] if e["name"] == var)["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "actionclip-mlflow-admin"
    # every MLflow client logs in with its own identity, through MLflow's standard variables
    seen = set()
    for root_ in CLUSTERS["local" if root == LOCAL else "gpu"]:
        for pod in pod_templates(rendered[root_]):
            if pod.where not in CLIENT_IDENTITIES:
                continue
            seen.add(pod.where)
            (main,) = [x for x in pod.spec["containers"]]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in main.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})}
            for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert refs[var]["name"] == CLIENT_IDENTITIES[pod.where] and refs[var]["key"] == var, pod
    assert "Job/mlflow-identities" in seen
    # the pipeline's tasks: platform.py's writer and promoter Secrets exist under those names
    from pipelines.platform import PlatformSettings

    for secret in PlatformSettings().mlflow_secrets.values():
        assert set(one(objs, "Secret", secret)["data"]) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
