"""scripts/deploy.py, the documented deploy steps: an untouched example env file is refused with a message naming
the file and the key; generated secrets pass and render; a repeated or short password is refused."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_manifests import KUBECTL, MANIFESTS, copy_with_examples

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "deploy.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_untouched_examples_are_refused(tmp_path: Path) -> None:
    work = copy_with_examples(tmp_path / "manifests")
    for overlay in ("local", "gpu"):
        proc = run("check", str(work / "overlays" / overlay))
        assert proc.returncode == 2, proc.stdout
        assert "refusing to deploy" in proc.stderr
        assert "postgres.env: POSTGRES_PASSWORD is still the example's placeholder ('change-me')" in proc.stderr
        assert "mlflow-writer.env: MLFLOW_TRACKING_PASSWORD is still the example's placeholder" in proc.stderr
        # `apply` runs the same check first and never reaches kubectl
        proc = run("apply", str(work / "overlays" / overlay))
        assert proc.returncode == 2 and "refusing to deploy" in proc.stderr


def test_missing_env_files_are_named(tmp_path: Path) -> None:
    work = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, work, ignore=shutil.ignore_patterns("*.env"))
    proc = run("check", str(work / "overlays" / "local"))
    assert proc.returncode == 2
    assert "minio-root.env is missing: copy minio-root.env.example and fill it in" in proc.stderr


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")
def test_generated_secrets_pass_and_render(tmp_path: Path) -> None:
    work = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, work, ignore=shutil.ignore_patterns("*.env"))
    local = work / "overlays" / "local"
    proc = run("secrets", str(local))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("wrote ") == len(list(local.glob("*.env.example")))
    assert run("check", str(local)).returncode == 0
    rendered = subprocess.run([KUBECTL, "kustomize", str(local)], capture_output=True, text=True, check=True).stdout
    assert "change-me" not in rendered
    secrets = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Secret"]
    assert len(secrets) == 9
    # running it again keeps the files (no silent rotation)
    before = (local / "mlflow-admin.env").read_text()
    assert run("secrets", str(local)).stdout.count("wrote ") == 0
    assert (local / "mlflow-admin.env").read_text() == before
    # a password reused across identities is refused
    writer = (local / "mlflow-writer.env").read_text().splitlines()
    reader = dict(line.split("=", 1) for line in (local / "mlflow-reader.env").read_text().splitlines()
                  if "=" in line and not line.startswith("#"))
    (local / "mlflow-writer.env").write_text("\n".join(
        f"MLFLOW_TRACKING_PASSWORD={reader['MLFLOW_TRACKING_PASSWORD']}" if line.startswith("MLFLOW_TRACKING_PASSWORD")
        else line for line in writer) + "\n")
    proc = run("check", str(local))
    assert proc.returncode == 2 and "repeats the value of" in proc.stderr
    # the gpu overlay's bucket keys come from the cloud's IAM: generated secrets leave them to fill in
    gpu = work / "overlays" / "gpu"
    proc = run("secrets", str(gpu))
    assert proc.returncode == 0 and "still to fill in by hand" in proc.stdout and "s3.env: AWS_ACCESS_KEY_ID" in proc.stdout
    assert "s3.env: AWS_SECRET_ACCESS_KEY is still the example's placeholder" in run("check", str(gpu)).stderr
