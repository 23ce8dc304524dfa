"""The project image, built for real and run with the network off.

A session fixture runs ``scripts/build_image.sh`` (private dockerd, locally made base, BuildKit ``--network=none``;
it skips the build when an image from the same inputs exists), then:

* the image itself: non-root user, ``actionclip --help``, the heavy imports, no network interface but loopback;
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
    name: str
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


@pytest.fixture(scope="session")
def project_image() -> Iterator[BuiltImage]:
    """Build (or reuse) the project image with its private engine.

    The engine is left running: another session on the machine may be using it (``build_image.sh --stop`` stops it).
    """
    if os.geteuid() != 0:
        pytest.skip("container tests need root: build_image.sh installs Docker and starts a private dockerd")
    if not (Path("/usr/bin/docker").exists() and shutil.which("dockerd")) and not shutil.which("apt-get"):
        pytest.skip("no Docker engine installed and no apt-get to install one")
    from components.image import IMAGE

    # The tag comes from the project's one image setting; pass it explicitly so script and components agree.
    env = {**os.environ, "ACTIONCLIP_IMAGE": IMAGE, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=1500)
    if proc.returncode == 3:
        pytest.skip(f"no Docker engine can be started here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, f"build_image.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    # What the build did and how long each step took (shown with -s / -rA).
    print("\n".join(line for line in proc.stderr.splitlines() if line.startswith("[build_image")))
    exported = _exports(proc.stdout)
    assert exported.get("ACTIONCLIP_IMAGE") == IMAGE, proc.stdout
    docker_host = exported["DOCKER_HOST"]

    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = docker_host  # kfp.local.DockerRunner uses docker.from_env()
    try:
        yield BuiltImage(IMAGE, docker_host)
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


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
