"""The project's two images, built for real and run with the network off.

A session fixture runs ``scripts/build_image.sh`` (private dockerd, locally made bases, BuildKit ``--network=none``;
it skips a build when an image from the same inputs exists), then:

* each build's own tag beside the setting's, and the same tags again when nothing changed;
* the project image: non-root user, ``actionclip --help``, the heavy imports, no network interface but loopback;
  ``torch.compile`` of the model (forward and backward) on CPU, matching eager;
* the slim tracking-server image: no torch, well under the project image's size, ``mlflow server --app-name
  basic-auth`` answers ``/health`` and refuses an unauthenticated write;
* a two-stage slice of the pipeline (prepare-data on a synthetic dataset -> pre-train, import only) with
  ``kfp.local.DockerRunner(network_mode="none")``, whose artifacts are then checked on the host;
* a failing stage inside the container fails the run with the stage's own error.

Skips (with the reason) only where no engine can be started: not root, or no Docker and no apt-get.
"""
# No `from __future__ import annotations`: KFP reads the pipeline function's real annotation objects.

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_image.sh"
IMAGE_UID = 1000  # the Dockerfile's USER


@dataclass(frozen=True)
class BuiltImage:
    name: str  # the setting's tag (components/image.py): what the components and kfp.local run
    unique: str  # this build's own tag, <setting tag>-<UTC build time>-<inputs hash>: what a deployment pins
    docker_host: str


def _exports(stdout: str) -> dict[str, str]:
    """``export KEY=VALUE`` lines printed by build_image.sh (values are shell-quoted only if they need it)."""
    import shlex

    out = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def _build() -> subprocess.CompletedProcess:
    from components.image import IMAGE, MLFLOW_IMAGE

    # The tags come from the project's image settings; pass them explicitly so script and components agree.
    env = {**os.environ, "ACTIONCLIP_IMAGE": IMAGE, "ACTIONCLIP_MLFLOW_IMAGE": MLFLOW_IMAGE, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=2400)
    if proc.returncode == 3:
        pytest.skip(f"no Docker engine can be started here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, f"build_image.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def built() -> Iterator[dict]:
    """Build (or reuse) both images with the private engine; what the script printed.

    The engine is left running: another session on the machine may be using it (``build_image.sh --stop`` stops it).
    """
    if os.geteuid() != 0:
        pytest.skip("container tests need root: build_image.sh installs Docker and starts a private dockerd")
    if not (Path("/usr/bin/docker").exists() and shutil.which("dockerd")) and not shutil.which("apt-get"):
        pytest.skip("no Docker engine installed and no apt-get to install one")
    proc = _build()
    # What the build did and how long each step took (shown with -s / -rA).
    print("\n".join(line for line in proc.stderr.splitlines() if line.startswith("[build_image")))
    exported = _exports(proc.stdout)
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = exported["DOCKER_HOST"]  # kfp.local.DockerRunner uses docker.from_env()
    try:
        yield {"exports": exported, "stdout": proc.stdout}
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


@pytest.fixture(scope="session")
def project_image(built: dict) -> BuiltImage:
    from components.image import IMAGE

    return BuiltImage(IMAGE, built["exports"]["ACTIONCLIP_IMAGE"], built["exports"]["DOCKER_HOST"])


@pytest.fixture(scope="session")
def mlflow_image(built: dict) -> BuiltImage:
    from components.image import MLFLOW_IMAGE

    return BuiltImage(MLFLOW_IMAGE, built["exports"]["ACTIONCLIP_MLFLOW_IMAGE"], built["exports"]["DOCKER_HOST"])


def _inspect(image: BuiltImage, ref: str) -> dict:
    import docker

    client = docker.DockerClient(base_url=image.docker_host)
    try:
        return client.api.inspect_image(ref)
    finally:
        client.close()


def test_each_build_has_its_own_tag_and_a_printed_id(built, project_image, mlflow_image) -> None:
    import re

    for image in (project_image, mlflow_image):
        # <setting>-<UTC time>-<8 hex of the inputs hash>, on the same image as the setting's tag
        assert re.fullmatch(re.escape(image.name) + r"-\d{8}T\d{6}Z-[0-9a-f]{8}", image.unique), image.unique
        image_id = _inspect(image, image.unique)["Id"]
        assert _inspect(image, image.name)["Id"] == image_id
        assert f"# {image.unique} id {image_id} (" in built["stdout"], built["stdout"]
    # Nothing changed: no rebuild, and the same unique tags (a rebuild of changed inputs gets new ones).
    again = _exports(_build().stdout)
    assert (again["ACTIONCLIP_IMAGE"], again["ACTIONCLIP_MLFLOW_IMAGE"]) == (project_image.unique, mlflow_image.unique)


def _run_in_image(image: BuiltImage, script: str) -> str:
    """Run ``sh -c script`` in a fresh container with no network; returns stdout+stderr (raises on failure)."""
    import docker

    client = docker.DockerClient(base_url=image.docker_host)
    try:
        out = client.containers.run(
            image.name, ["sh", "-c", script], network_mode="none", remove=True, stdout=True, stderr=True
        )
    except docker.errors.ContainerError as exc:
        raise AssertionError(f"{script!r} failed in {image.name}: {exc.stderr!r}") from exc
    finally:
        client.close()
    return out.decode()


def test_image_is_non_root_and_self_contained(project_image: BuiltImage) -> None:
    from importlib.metadata import version

    out = _run_in_image(
        project_image,
        "id -u; ls /sys/class/net; actionclip --help; "
        "python -c 'import actionclip, torch, timm, decord, mlflow, kfp; from importlib.metadata import version; "
        "print(\"versions\", version(\"kfp\"), version(\"torch\"))'",
    )
    lines = out.splitlines()
    assert lines[0].strip().isdigit() and int(lines[0]) == IMAGE_UID, out
    assert lines[1].strip() == "lo", f"network_mode=none should leave only loopback: {out}"
    assert "usage: actionclip" in out and "pipeline" in out, out
    versions = next(line for line in lines if line.startswith("versions ")).split()
    # Each lightweight component starts with `pip install kfp==<host version>` unless told not to: the image must
    # hold exactly the host's kfp for that to be a network-free no-op; torch must match what the tests ran with.
    assert versions[1] == version("kfp"), out
    assert versions[2] == version("torch"), out


COMPILE_SCRIPT = r"""
import glob, os, torch, actionclip
torch.manual_seed(0)
model = actionclip.create_model("tiny-8-32px")
video, ids = torch.randn(2, 8, 3, 32, 32), torch.randint(1, 400, (3, 77))
eager = model(video, ids)
compiled = torch.compile(model)
out = compiled(video, ids)
(out[0].square().mean() + out[1].square().mean()).backward()  # the backward graph compiles too
diff = max((a - b).abs().max().item() for a, b in zip(eager, out))
kernels = glob.glob(os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "**", "*.so"), recursive=True)
grads = sum(p.grad is not None for p in model.parameters())
print(f"compiled max_diff={diff:.3g} kernels={len(kernels)} grads={grads}")
"""


def test_torch_compile_runs_in_image(project_image: BuiltImage) -> None:
    """The GPU fast path (``--compile``) needs inductor's C++ toolchain; on CPU it is the same compiler path."""
    out = _run_in_image(project_image, f"python -c '{COMPILE_SCRIPT}'")
    line = next(line for line in out.splitlines() if line.startswith("compiled "))
    fields = dict(f.split("=") for f in line.split()[1:])
    assert float(fields["max_diff"]) < 1e-4, out
    assert int(fields["kernels"]) > 0, f"inductor built no C++ kernel (fell back?): {out}"
    assert int(fields["grads"]) > 0, out


def test_mlflow_server_image_is_slim_and_authenticates(mlflow_image: BuiltImage, project_image: BuiltImage,
                                                       tmp_path: Path) -> None:
    import time

    import docker
    import requests

    from tests.test_mlflow_auth import ADMIN, write_auth_ini
    from tests.test_serving_http import _free_port

    server_size = _inspect(mlflow_image, mlflow_image.unique)["Size"]
    assert server_size < _inspect(project_image, project_image.unique)["Size"] / 3, server_size
    out = _run_in_image(mlflow_image, "python -c 'import importlib.util as u; print(\"torch\", u.find_spec(\"torch\"))'")
    assert "torch None" in out, out

    # The cluster's auth ini with SQLite in place of Postgres, in a folder the image's user owns.
    write_auth_ini(tmp_path / "basic_auth.ini", "sqlite:////work/auth.db")
    os.chown(tmp_path, IMAGE_UID, IMAGE_UID)
    port = _free_port()
    client = docker.DockerClient(base_url=mlflow_image.docker_host)
    # host networking: the private engine has no bridge; the server listens on 127.0.0.1 only
    container = client.containers.run(
        mlflow_image.unique,
        ["mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", "sqlite:////work/mlflow.db", "--artifacts-destination", "/work/artifacts",
         "--workers", "1"],
        network_mode="host", detach=True, volumes={str(tmp_path): {"bind": "/work", "mode": "rw"}},
        environment={"MLFLOW_AUTH_CONFIG_PATH": "/work/basic_auth.ini", "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
                     "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
                     "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-0123456789",
                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()[-3000:]
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "no /health within 180 s:\n" + container.logs().decode()[-3000:]
            time.sleep(1)
        create = url + "/api/2.0/mlflow/experiments/create"
        assert requests.post(create, json={"name": "anonymous"}, timeout=10).status_code == 401
        admin = requests.post(create, json={"name": "by-admin"}, timeout=10, auth=ADMIN)
        assert admin.status_code == 200, admin.text
    finally:
        container.remove(force=True)
        client.close()


def _reset_kfp_local() -> None:
    from kfp.local import config

    config.LocalExecutionConfig.instance = None  # other tests call local.init with their own runner


def test_pipeline_slice_runs_in_image_offline(project_image: BuiltImage, tmp_path: Path) -> None:
    from kfp import dsl, local
    from kfp.dsl import Dataset, Model

    from components import prepare_data, pretrain_model

    root = tmp_path / "pipeline-root"
    root.mkdir()
    # The containers run as UID 1000 and write their outputs into the bind-mounted root (as on a PVC with fsGroup).
    os.chown(root, IMAGE_UID, IMAGE_UID)
    db = root / "mlflow.db"

    @dsl.pipeline(name="container-slice")
    def container_slice(synthetic_dir: str) -> NamedTuple("Outputs", dataset=Dataset, model=Model):  # type: ignore[valid-type]
        prep = prepare_data(
            data_source="synthetic", synthetic_dir=synthetic_dir, synthetic_clips_per_class=3,
            synthetic_pretrain_clips=1, synthetic_frames=8, synthetic_size=32, workers=1,
        )
        pre = pretrain_model(
            dataset=prep.outputs["dataset"], preset="tiny-8", epochs=0.0, device="cpu", num_workers=0,
            experiment="container-test",
        )
        Outputs = NamedTuple("Outputs", dataset=Dataset, model=Model)
        return Outputs(dataset=prep.outputs["dataset"], model=pre.outputs["model"])

    local.init(
        runner=local.DockerRunner(
            network_mode="none", environment={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
        ),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    try:
        run = container_slice(synthetic_dir=str(root / "synthetic"))
    finally:
        _reset_kfp_local()

    dataset_dir, model_dir = Path(run.outputs["dataset"].path), Path(run.outputs["model"].path)
    assert dataset_dir.is_relative_to(root) and model_dir.is_relative_to(root)

    # The prepared dataset, read back on the host with the library: rows point at the clips the container wrote.
    from actionclip.data import PreparedDataset

    prepared = PreparedDataset.load(dataset_dir)
    rows = list(prepared.rows())
    assert len(prepared.labels) >= 2 and rows
    assert {row["split"] for row in rows} <= {"train", "val", "heldout", "pretrain"}
    for row in rows:
        assert Path(row["path"]).is_file() and Path(row["path"]).is_relative_to(root / "synthetic"), row
        assert row["frames"] == 8 and row["width"] == 32, row
    summary = json.loads((dataset_dir / "summary.json").read_text())
    assert summary["dataset_hash"] == prepared.dataset_hash

    # The model artifact loads on the host and has the tiny preset's architecture.
    import torch

    import actionclip

    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    loaded = actionclip.load(str(model_dir))
    reference = actionclip.create_model("tiny-8")
    assert loaded.state_dict().keys() == reference.state_dict().keys()
    assert loaded.num_frames == reference.num_frames
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    assert run.outputs["model"].metadata["dataset_hash"] == prepared.dataset_hash

    # Written by the image's non-root user, not by root.
    for path in (dataset_dir / "manifest.jsonl", model_dir / "model.safetensors", Path(rows[0]["path"])):
        assert path.stat().st_uid == IMAGE_UID, path

    # The stage's MLflow run landed in the SQLite store passed in through the container's environment.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("container-test")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert any(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


def test_failing_stage_in_image_reports_its_own_error(
    project_image: BuiltImage, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from kfp import local

    from components import prepare_data

    root = tmp_path / "pipeline-root"
    empty = root / "no-videos"
    empty.mkdir(parents=True)
    os.chown(root, IMAGE_UID, IMAGE_UID)
    local.init(runner=local.DockerRunner(network_mode="none"), pipeline_root=str(root), raise_on_error=True)
    try:
        try:
            task = prepare_data(data_source=str(empty), workers=1)
        except RuntimeError as exc:
            assert "FAILURE" in str(exc)
        else:
            # kfp 2.17.3's DockerRunner runs containers with auto_remove=True and reports SUCCESS when a container
            # that exited quickly is already gone before its exit code is read (docker_task_handler.py). The stage
            # still failed: it produced no output, and its error line below is the evidence.
            assert task.outputs == {}, task.outputs
    finally:
        _reset_kfp_local()
    from components._runtime import parse_error_line

    records = [r for r in map(parse_error_line, capfd.readouterr().out.splitlines()) if r]
    # The library's own one-line error, raised inside the container, names the bad source.
    assert records and records[-1]["stage"] == "prepare-data", records
    assert str(empty) in records[-1]["message"], records
