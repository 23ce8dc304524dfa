"""The authenticated registry: a real ``mlflow server --app-name basic-auth`` on 127.0.0.1, the identities made by
scripts/mlflow_identities.py (as the ``mlflow-identities`` Job does in the cluster), and the project's own
``actionclip registry register`` -> ``promote`` flow run under each identity through MLflow's standard
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` variables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
requests = pytest.importorskip("requests")
pytest.importorskip("mlflow")
pytest.importorskip("flask_wtf", reason="mlflow's basic-auth app needs Flask-WTF (mlflow[auth])")

from mlflow.exceptions import MlflowException  # noqa: E402

import actionclip  # noqa: E402
from actionclip.cli import main  # noqa: E402

from tests.test_serving_http import _free_port, _start, _stop, _wait  # noqa: E402

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "mlflow_identities.py"
ADMIN = ("admin", "admin-password-for-tests-0123")
IDENTITIES = {
    "writer": ("actionclip-writer", "writer-password-0123456789"),
    "promoter": ("actionclip-promoter", "promoter-password-0123456789"),
    "reader": ("actionclip-reader", "reader-password-0123456789"),
}
LABELS = ["waving", "clapping", "jumping"]


def write_auth_ini(path: Path, database_uri: str) -> Path:
    """The cluster's auth ini (manifests/base/mlflow-auth.ini) with ``database_uri`` in place of Postgres."""
    text = (ROOT / "manifests" / "base" / "mlflow-auth.ini").read_text()
    path.write_text("\n".join(f"database_uri = {database_uri}" if line.startswith("database_uri") else line
                              for line in text.splitlines()) + "\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    ini = write_auth_ini(root / "basic_auth.ini", f"sqlite:///{root / 'auth.db'}")
    port = _free_port()
    log = root / "server.log"
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-0123456789"}
    proc = _start([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                   "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                   "--artifacts-destination", str(root / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(proc, url + "/health", log)
        torch.manual_seed(0)
        model_a = root / "model_a"
        actionclip.create_model("tiny-8").save_pretrained(model_a)
        torch.manual_seed(1)
        model_b = root / "model_b"
        actionclip.create_model("tiny-8").save_pretrained(model_b)
        (model_a / "labels.txt").write_text("\n".join(LABELS) + "\n")
        (model_b / "labels.txt").write_text("\n".join(LABELS) + "\n")
        yield {"url": url, "root": root, "a": model_a, "b": model_b, "log": log}
    finally:
        _stop(proc)


def _as(monkeypatch: pytest.MonkeyPatch, url: str, who: tuple[str, str] | None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    if who:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", who[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", who[1])


@pytest.fixture(scope="module")
def identities(server):
    """The bootstrap script, run as a subprocess exactly as the Job runs it; twice, to show it is idempotent."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["url"],
           "MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    for role, (user, password) in IDENTITIES.items():
        env[f"MLFLOW_{role.upper()}_USERNAME"] = user
        env[f"MLFLOW_{role.upper()}_PASSWORD"] = password
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "promoter: user 'actionclip-promoter': experiment" in proc.stdout
    return IDENTITIES


def _metrics(path: Path, top1: float) -> Path:
    path.write_text(json.dumps({"top1": top1, "top5": 1.0}))
    return path


def _json_out(out: str) -> dict:
    """The CLI's --json document (MLflow prints its "View run ..." lines before it)."""
    return json.loads(out[out.index("{\n"):])


def test_health_is_open_and_an_unauthenticated_write_is_refused(server, identities):
    url = server["url"]
    assert requests.get(url + "/health", timeout=10).status_code == 200
    r = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": "anonymous"}, timeout=10)
    assert r.status_code == 401
    r = requests.post(url + "/api/2.0/mlflow/registered-models/alias",
                      json={"name": "actionclip", "alias": "champion", "version": "1"}, timeout=10)
    assert r.status_code == 401
    r = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": "wrong"}, timeout=10,
                      auth=(identities["writer"][0], "not-the-password"))
    assert r.status_code == 401


def test_bootstrap_refuses_placeholder_passwords(server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["url"], "MLFLOW_TRACKING_USERNAME": ADMIN[0],
           "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    for role in IDENTITIES:
        env[f"MLFLOW_{role.upper()}_USERNAME"] = f"actionclip-{role}"
        env[f"MLFLOW_{role.upper()}_PASSWORD"] = "change-me"
    proc = subprocess.run([sys.executable, str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "MLFLOW_WRITER_PASSWORD must be a real secret" in proc.stderr


def test_register_promote_flow_under_separate_identities(server, identities, monkeypatch, capsys):
    url, root = server["url"], server["root"]
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    # writer: the pipeline and training log runs in the experiment ...
    _as(monkeypatch, url, identities["writer"])
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("actionclip")
    run = client.create_run(exp.experiment_id, tags={"actionclip.stage": "finetune"})
    client.log_metric(run.info.run_id, "loss", 0.5)
    client.set_terminated(run.info.run_id)
    # ... and cannot register a version or move an alias
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
        main(["registry", "register", str(server["a"]), "--metrics", str(_metrics(root / "m0.json", 0.1)),
              "--pipeline-run-id", "writer-try"])
    assert not MlflowClient(tracking_uri=url).search_model_versions("name = 'actionclip'")

    # promoter: the pipeline's register step -> v1 champion, v2 challenger, then a manual promotion of v2
    _as(monkeypatch, url, identities["promoter"])
    assert main(["registry", "register", str(server["a"]), "--metrics", str(_metrics(root / "m1.json", 0.5)),
                 "--pipeline-run-id", "run-1", "--json"]) == 0
    first = _json_out(capsys.readouterr().out)
    assert first["version"] == "1" and first["promoted"] is True
    assert main(["registry", "register", str(server["b"]), "--metrics", str(_metrics(root / "m2.json", 0.4)),
                 "--pipeline-run-id", "run-2", "--json"]) == 0
    second = _json_out(capsys.readouterr().out)
    assert second["version"] == "2" and second["promoted"] is False and "challenger" in second["aliases"]
    assert main(["registry", "promote", "actionclip", "2"]) == 0
    capsys.readouterr()

    # writer again: cannot move the champion back
    _as(monkeypatch, url, identities["writer"])
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
        main(["registry", "promote", "actionclip", "1"])

    # reader (serving): resolves and downloads the champion, cannot register or promote
    _as(monkeypatch, url, identities["reader"])
    assert main(["registry", "resolve", "actionclip@champion"]) == 0
    location = capsys.readouterr().out.strip()
    assert location.startswith("mlflow-artifacts:/")
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(root / "download"))
    assert (Path(local) / "MLmodel").is_file()
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
        main(["registry", "promote", "actionclip", "1"])
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
        main(["registry", "register", str(server["a"]), "--metrics", str(_metrics(root / "m3.json", 0.9)),
              "--pipeline-run-id", "reader-try"])
    client = MlflowClient(tracking_uri=url)
    assert client.get_model_version_by_alias("actionclip", "champion").version == "2"
    assert len(client.search_model_versions("name = 'actionclip'")) == 2

    # no identity: not even a read
    _as(monkeypatch, url, None)
    with pytest.raises(MlflowException, match="401|Unauthorized|UNAUTHENTICATED"):
        MlflowClient(tracking_uri=url).get_model_version_by_alias("actionclip", "champion")
