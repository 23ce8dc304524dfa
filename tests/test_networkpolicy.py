"""The NetworkPolicies, evaluated: a small evaluator of Kubernetes NetworkPolicy semantics (pod and namespace
selectors, ipBlocks with exceptions, numbered and named ports, protocols, policy types, the additive allow-list rule)
runs over the ``kubectl kustomize`` output of each cluster and must reproduce, row by row, the "who can reach whom"
table in docs/deploy.md, including that pods outside the allowed set cannot reach the tracking server."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_manifests import (CLUSTERS, KUBECTL, FINETUNE, GPU, GPU_SERVING, LOCAL, LOCAL_SERVING, PodTemplate,
                                  copy_with_examples, find, pipeline_task_pod, pod_templates, render,
                                  selector_matches)

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "actionclip"


@dataclass
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.0.10"
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


@dataclass
class Cluster:
    namespaces: dict[str, dict[str, str]]  # name -> labels
    policies: list[dict[str, Any]]         # all NetworkPolicies (with metadata.namespace)


def _port_matches(rule_ports: list[dict[str, Any]] | None, dst: Endpoint, port: int, proto: str) -> bool:
    if not rule_ports:
        return True  # no ports: every port
    for p in rule_ports:
        if p.get("protocol", "TCP") != proto:
            continue
        if "port" not in p:
            return True
        want = p["port"]
        number = dst.ports.get(want) if isinstance(want, str) else want
        if number is None:
            continue
        if number == port or (number <= port <= p.get("endPort", number)):
            return True
    return False


def _peer_matches(peer: dict[str, Any], other: Endpoint, policy_ns: str, cluster: Cluster) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return (ip in ipaddress.ip_network(block["cidr"])
                and not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])))
    if other.namespace is None:
        return False  # selectors only ever match pods
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], cluster.namespaces[other.namespace]):
            return False
    elif other.namespace != policy_ns:
        return False  # a bare podSelector means the policy's own namespace
    return selector_matches(peer.get("podSelector", {}), other.labels)


def _direction_allows(cluster: Cluster, me: Endpoint, other: Endpoint, dst: Endpoint, port: int, proto: str,
                      kind: str) -> bool:
    """Does ``me``'s side allow the connection (kind "Ingress": other -> me; "Egress": me -> other)?"""
    if me.namespace is None:
        return True  # outside the cluster: no policy applies
    selecting = [p for p in cluster.policies if p["metadata"]["namespace"] == me.namespace
                 and kind in p["spec"].get("policyTypes", ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], me.labels)]
    if not selecting:
        return True  # not isolated in this direction
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if peers is not None and not any(_peer_matches(p, other, me.namespace, cluster) for p in peers):
                continue
            if _port_matches(rule.get("ports"), dst, port, proto):
                return True
    return False


def can_reach(cluster: Cluster, src: Endpoint, dst: Endpoint, port: int, proto: str = "TCP") -> bool:
    return (_direction_allows(cluster, src, dst, dst, port, proto, "Egress")
            and _direction_allows(cluster, dst, src, dst, port, proto, "Ingress"))


# --------------------------------------------------------------------------------------------- evaluator checks
def test_evaluator_semantics() -> None:
    ns = {"a": {"kubernetes.io/metadata.name": "a"}, "b": {"kubernetes.io/metadata.name": "b", "gw": "1"}}
    web = Endpoint("web", "a", {"app": "web"}, ports={"http": 8080})
    cli = Endpoint("cli", "a", {"app": "cli"})
    far = Endpoint("far", "b", {"app": "cli"})
    ext = Endpoint("ext", None, ip="52.1.2.3")
    meta = {"namespace": "a", "name": "x"}
    open_ = Cluster(ns, [])
    assert can_reach(open_, cli, web, 8080) and can_reach(open_, far, web, 1)
    deny = {"metadata": meta, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    allow = {"metadata": meta, "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}],
                                                     "ports": [{"port": "http"}]}]}}
    out = {"metadata": meta, "spec": {"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"],
                                      "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                                                      "except": ["52.0.0.0/8"]}}]},
                                                 {"to": [{"podSelector": {}}]}]}}
    c = Cluster(ns, [deny, allow, out])
    assert can_reach(c, cli, web, 8080)
    assert not can_reach(c, cli, web, 8081), "named port resolves to 8080 only"
    assert not can_reach(c, cli, web, 8080, "UDP")
    assert not can_reach(c, far, web, 8080), "a bare podSelector does not reach into other namespaces"
    assert not can_reach(c, web, cli, 1), "web has no egress"
    assert not can_reach(c, cli, ext, 443), "excepted range"
    assert can_reach(c, cli, Endpoint("x", None, ip="8.8.8.8"), 443)
    gw = {"metadata": meta, "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"gw": "1"}}}]}]}}
    assert can_reach(Cluster(ns, [deny, gw]), far, web, 9999)


# ------------------------------------------------------------------------------------------------ the table
def read_table() -> list[dict[str, str]]:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- reachability-table -->\n(.*?)<!-- /reachability-table -->", text, re.S)
    assert m, "docs/deploy.md lacks the reachability table"
    lines = [line.strip() for line in m.group(1).strip().splitlines()]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    assert header == ["from", "to", "port", "local", "gpu"]
    rows = [dict(zip(header, (v.strip() for v in line.strip("|").split("|")))) for line in lines[2:]]
    assert len(rows) >= 30
    return rows


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    work = copy_with_examples(tmp_path_factory.mktemp("np") / "manifests")
    for root in (LOCAL_SERVING, GPU_SERVING):
        (work / root / "model.env").write_text("MODEL_URI=s3://actionclip-mlflow-artifacts/1/models/m-1/artifacts\n")
    rendered = {root: render(work / root) for root in (LOCAL, LOCAL_SERVING, GPU, GPU_SERVING, FINETUNE)}
    return {name: [o for root in roots for o in rendered[root]] for name, roots in CLUSTERS.items()}


# table name -> the rendered pod template that plays it (where), or a synthetic endpoint outside the manifests
POD_ROLES = {"mlflow": "Deployment/mlflow", "postgres": "StatefulSet/postgres", "minio": "Deployment/minio",
             "minio-users": "Job/minio-users", "mlflow-identities": "Job/mlflow-identities",
             "serving": "Deployment/actionclip-serving", "kserve": "InferenceService/actionclip",
             "finetune": "PyTorchJob/actionclip-finetune[Master]"}


def endpoints(objs: list[dict[str, Any]]) -> dict[str, Endpoint]:
    pods = {p.where: p for p in pod_templates(objs)}

    def pod_endpoint(name: str, pod: PodTemplate) -> Endpoint:
        ports = {p["name"]: p["containerPort"] for c in pod.spec["containers"] for p in c.get("ports", []) if "name" in p}
        return Endpoint(name, NAMESPACE, dict(pod.labels), ports=ports)

    out = {name: pod_endpoint(name, pods[where]) for name, where in POD_ROLES.items() if where in pods}
    # every pod the manifests define plays a role in the table
    assert set(pods) <= set(POD_ROLES.values()) | {"PyTorchJob/actionclip-finetune[Worker]"}, set(pods)
    out["pipeline"] = pod_endpoint("pipeline", pipeline_task_pod())
    out["unlabelled"] = Endpoint("unlabelled", NAMESPACE, {"app": "debug-shell"})
    out["other-ns"] = Endpoint("other-ns", "default", {"app.kubernetes.io/name": "mlflow",
                                                       "app.kubernetes.io/component": "tracking-server"})
    out["gateway"] = Endpoint("gateway", "istio-ingress", {"app": "istio-ingressgateway"})
    out["kfp"] = Endpoint("kfp", "kubeflow", {"app": "ml-pipeline"}, ports={"http": 8888, "grpc": 8887})
    out["kube-dns"] = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, ports={"dns": 53})
    out["s3"] = Endpoint("s3", None, ip="52.216.8.10")
    return out


def cluster_model(objs: list[dict[str, Any]]) -> Cluster:
    ns_obj = next(o for o in objs if o["kind"] == "Namespace")
    namespaces = {
        NAMESPACE: {**ns_obj["metadata"].get("labels", {}), "kubernetes.io/metadata.name": NAMESPACE},
        "default": {"kubernetes.io/metadata.name": "default"},
        "istio-ingress": {"kubernetes.io/metadata.name": "istio-ingress", "actionclip.io/gateway": "true"},
        "kubeflow": {"kubernetes.io/metadata.name": "kubeflow"},
        "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    }
    policies = find(objs, "NetworkPolicy")
    assert all(p["metadata"]["namespace"] == NAMESPACE for p in policies)
    return Cluster(namespaces, policies)


@pytest.mark.parametrize("name", ["local", "gpu"])
def test_reachability_table_holds(clusters: dict[str, list[dict[str, Any]]], name: str) -> None:
    objs = clusters[name]
    model, eps = cluster_model(objs), endpoints(objs)
    # default deny in both directions for every pod of the namespace
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in model.policies)
    wrong = []
    checked = 0
    for row in read_table():
        want = row[name]
        src, dst = row["from"], row["to"]
        if want == "n/a":
            assert src not in eps or dst not in eps, f"{name}: {src} -> {dst} exists; the table says n/a"
            continue
        assert want in ("yes", "no"), row
        assert src in eps and dst in eps, f"{name}: unknown endpoint in {row}"
        port, _, proto = row["port"].partition("/")
        got = can_reach(model, eps[src], eps[dst], int(port), proto or "TCP")
        checked += 1
        if got != (want == "yes"):
            wrong.append(f"{src} -> {dst}:{row['port']} is {'allowed' if got else 'denied'}, table says {want}")
    assert not wrong, f"{name}:\n" + "\n".join(wrong)
    assert checked >= 20


@pytest.mark.parametrize("name", ["local", "gpu"])
def test_only_the_listed_clients_reach_mlflow(clusters: dict[str, list[dict[str, Any]]], name: str) -> None:
    """Beyond the table's rows: every endpoint, tried against the tracking server's port."""
    objs = clusters[name]
    model, eps = cluster_model(objs), endpoints(objs)
    allowed = {n for n, ep in eps.items() if n != "mlflow" and can_reach(model, ep, eps["mlflow"], 5000)}
    expected = {"pipeline", "mlflow-identities"} | ({"serving"} if name == "local" else {"finetune"})
    assert allowed == expected
