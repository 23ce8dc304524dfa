"""Pod Security Standards "restricted", checked on every pod that runs in the namespace: the rendered pod templates,
every task of the compiled pipeline, and the containers controllers add once the settings in manifests/cluster/
are applied (Argo's executor containers, KServe's storage initializer, the Training Operator's init container).

The checker follows the rules of the restricted profile (kubernetes.io/docs/concepts/security/pod-security-standards,
"latest"): the baseline controls (no host namespaces, privileged containers, hostPath volumes, host ports, unsafe
capabilities / sysctls / AppArmor / SELinux / procMount) plus the restricted ones (allowed volume types,
allowPrivilegeEscalation false, runAsNonRoot with a non-zero UID, seccomp RuntimeDefault or Localhost, drop ALL with
at most NET_BIND_SERVICE added).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_manifests import (KUBECTL, ROOTS, FINETUNE, GPU_SERVING, LOCAL, GPU, copy_with_examples, find, one,
                                  pod_templates, render)

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "manifests" / "cluster"
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> list[str]:
    """Every way ``spec`` (a PodSpec) breaks Pod Security "restricted"; empty when it complies."""
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    annotations = (metadata or {}).get("annotations", {})
    containers = [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]
    # --- baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{key}=true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod hostProcess")
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {vol['name']}: hostPath")
        elif not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}: type {sorted(kinds)} not allowed")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl['name']}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value == "unconfined":
            out.append(f"AppArmor unconfined ({key})")
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append("pod AppArmor Unconfined")

    def selinux(where: str, opts: dict[str, Any] | None) -> None:
        opts = opts or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type {opts['type']}")
        if opts.get("user") or opts.get("role"):
            out.append(f"{where}: seLinuxOptions user/role set")

    selinux("pod", psc.get("seLinuxOptions"))
    # --- restricted: pod-level defaults that containers may inherit
    pod_non_root = psc.get("runAsNonRoot")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser=0")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"pod seccompProfile {pod_seccomp}")
    for c in containers:
        where = f"container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {sc['procMount']}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: AppArmor Unconfined")
        selinux(where, sc.get("seLinuxOptions"))
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            out.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{where}: runAsUser=0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (got {seccomp})")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"{where}: capabilities must drop ALL")
        extra = set(caps.get("add", [])) - {"NET_BIND_SERVICE"}
        if extra:
            out.append(f"{where}: capabilities add {sorted(extra)}")
    return out


def test_the_checker_catches_each_rule() -> None:
    good = {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "t", "emptyDir": {}}]}
    assert restricted_violations(good) == []
    cases = {
        "hostNetwork=true": lambda s: s.update(hostNetwork=True),
        "hostPath": lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "type ['nfs'] not allowed": lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
        "privileged": lambda s: s["containers"][0]["securityContext"].update(privileged=True),
        "allowPrivilegeEscalation": lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "runAsNonRoot must be true": lambda s: s["securityContext"].pop("runAsNonRoot"),
        "runAsUser=0": lambda s: s["containers"][0]["securityContext"].update(runAsUser=0),
        "seccompProfile must be": lambda s: s["securityContext"].pop("seccompProfile"),
        "pod seccompProfile Unconfined": lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "capabilities must drop ALL": lambda s: s["containers"][0]["securityContext"].pop("capabilities"),
        "capabilities add ['SYS_ADMIN']": lambda s: s["containers"][0]["securityContext"]["capabilities"].update(
            add=["SYS_ADMIN"]),
        "hostPort 80": lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "sysctl kernel.msgmax": lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "procMount Unmasked": lambda s: s["containers"][0]["securityContext"].update(procMount="Unmasked"),
    }
    for needle, mutate in cases.items():
        bad = copy.deepcopy(good)
        mutate(bad)
        found = restricted_violations(bad)
        assert any(needle in v for v in found), (needle, found)
    # an added NET_BIND_SERVICE and a Localhost profile are allowed
    ok = copy.deepcopy(good)
    ok["containers"][0]["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                                                  seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})
    assert restricted_violations(ok) == []


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    work = copy_with_examples(tmp_path_factory.mktemp("pss") / "manifests")
    return {root: render(work / root) for root in ROOTS}


def test_namespace_enforces_restricted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for root in (LOCAL, GPU):
        labels = one(rendered[root], "Namespace", "actionclip")["metadata"]["labels"]
        for mode in ("enforce", "warn", "audit"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", (root, mode)


def test_every_rendered_pod_template_is_restricted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pods = [p for root in ROOTS for p in pod_templates(rendered[root])]
    assert {p.where for p in pods} >= {"Deployment/mlflow", "StatefulSet/postgres", "Deployment/minio",
                                       "Job/minio-users", "Job/mlflow-identities", "Deployment/actionclip-serving",
                                       "InferenceService/actionclip", "PyTorchJob/actionclip-finetune[Master]",
                                       "PyTorchJob/actionclip-finetune[Worker]"}
    bad = {p.where: v for p in pods if (v := restricted_violations(p.spec))}
    assert not bad, bad


# ------------------------------------------------------------------------------ controller-added containers
def _cluster_yaml(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_kserve_predictor_with_the_configured_storage_initializer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """KServe injects the storage-initializer as an init container with the ClusterStorageContainer's
    securityContext (manifests/cluster/kserve-storage-initializer.yaml); the whole pod must pass."""
    pod = next(p for p in pod_templates(rendered[GPU_SERVING]) if p.where == "InferenceService/actionclip")
    spec = copy.deepcopy(pod.spec)
    sc = _cluster_yaml("kserve-storage-initializer.yaml")["spec"]["container"]["securityContext"]
    spec["initContainers"] = [{"name": "storage-initializer", "image": "kserve/storage-initializer",
                               "securityContext": sc}]
    spec["volumes"].append({"name": "kserve-provision-location", "emptyDir": {}})
    assert restricted_violations(spec) == []
    # without the setting (KServe's default: no securityContext) admission would refuse the pod
    spec["initContainers"][0].pop("securityContext")
    assert restricted_violations(spec)


def test_pytorchjob_worker_with_the_configured_init_container(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = next(p for p in pod_templates(rendered[FINETUNE]) if p.where.endswith("[Worker]"))
    template = _cluster_yaml("training-operator-init-container.yaml")["data"]["initContainer.yaml"]
    filled = template.replace("{{.InitContainerImage}}", "alpine:3.10").replace("{{.MasterAddr}}", "master")
    spec = copy.deepcopy(pod.spec)
    spec["initContainers"] = yaml.safe_load(filled)
    assert [c["name"] for c in spec["initContainers"]] == ["init-pytorch"]
    assert restricted_violations(spec) == []


# ------------------------------------------------------------------------------------ compiled pipeline tasks
@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    pytest.importorskip("kfp")
    from pipelines.cli import compile_pipeline

    path = compile_pipeline(tmp_path_factory.mktemp("pss-kfp") / "pipeline.yaml")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]


# added by the KFP backend to every task container (kfp.kubernetes.set_security_context's contract, enforced by the
# backend since kubeflow/pipelines#12782); the compiled pipeline carries the identity fields
KFP_BACKEND_DEFAULTS = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"}}


def task_pod(executor: dict[str, Any]) -> dict[str, Any]:
    """The pod KFP + Argo run for one task: the main container with the compiled securityContext plus the backend's
    defaults, Argo's init/wait containers with manifests/cluster/argo-executor.yaml, and the task's volumes."""
    ctx = {k: (int(v) if k in ("runAsUser", "runAsGroup") else v)
           for k, v in executor.get("securityContext", {}).items()}
    main = {"name": "main", "securityContext": {**KFP_BACKEND_DEFAULTS, **ctx}}
    argo = yaml.safe_load(_cluster_yaml("argo-executor.yaml")["data"]["executor"])["securityContext"]
    volumes = [{"name": m["constant"], "persistentVolumeClaim": {"claimName": m["constant"]}}
               for m in executor.get("pvcMount", [])]
    volumes += [{"name": m["volumeName"], "emptyDir": {"medium": m.get("medium", "")}}
                for m in executor.get("emptyDirMounts", [])]
    volumes += [{"name": "var-run-argo", "emptyDir": {}}, {"name": "kfp-launcher", "emptyDir": {}}]
    return {"initContainers": [{"name": "init", "securityContext": argo},
                               {"name": "kfp-launcher", "securityContext": {**KFP_BACKEND_DEFAULTS, **ctx}}],
            "containers": [{"name": "wait", "securityContext": argo}, main], "volumes": volumes}


def test_every_compiled_task_runs_as_non_root_and_is_restricted(compiled) -> None:
    spec, k8s = compiled
    executors = k8s["deploymentSpec"]["executors"]
    # one executor per container task: every executor the pipeline spec defines is configured
    assert set(executors) == set(spec["deploymentSpec"]["executors"]) and len(executors) >= 8
    for name, ex in executors.items():
        ctx = ex["securityContext"]
        assert ctx["runAsNonRoot"] is True and int(ctx["runAsUser"]) > 0 and int(ctx["runAsGroup"]) > 0, name
        assert restricted_violations(task_pod(ex)) == [], name
    # the three backend-added fields really are needed: without them the task pod would be refused
    ex = next(iter(executors.values()))
    pod = task_pod(ex)
    pod["containers"][1]["securityContext"] = {k: v for k, v in pod["containers"][1]["securityContext"].items()
                                               if k not in KFP_BACKEND_DEFAULTS}
    assert restricted_violations(pod)
