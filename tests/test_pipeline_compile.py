"""The compiled pipeline (KFP v2 IR YAML + the kfp-kubernetes platform spec), read back with yaml.safe_load_all."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from components.image import IMAGE
from pipelines.params import PipelineParams, defaults
from pipelines.platform import PlatformSettings

GPU_TASKS = {"pretrain-model", "select-prompts", "finetune-model", "evaluate-model"}
ALL_TASKS = GPU_TASKS | {"open-run", "prepare-data", "register-model", "close-run"}


def _compile(path, settings=None) -> tuple[dict, dict]:
    from pipelines.cli import compile_pipeline

    compile_pipeline(path, settings)
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2  # pipeline spec + platform spec (kubernetes settings)
    return docs[0], docs[1]["platforms"]["kubernetes"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compile") / "pipeline.yaml")


def _executor(spec: dict, task: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]


def _tasks(spec: dict) -> dict:
    """Every task spec in the DAG, exit handler body included, by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {name: t for name, t in tasks.items() if not name.startswith("exit-handler")}


def test_every_task_uses_the_project_image_and_no_pip_install(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{t}" for t in ALL_TASKS}
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == IMAGE, name
        command = " ".join(container["command"])
        assert "pip install" not in command, name  # dependencies live in the image


def test_gpu_stages_request_gpus_and_others_do_not(compiled):
    spec, k8s = compiled
    for task in ALL_TASKS:
        resources = _executor(spec, task)["container"]["resources"]
        if task in GPU_TASKS:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "1"
            tolerations = k8s["deploymentSpec"]["executors"][f"exec-{task}"]["tolerations"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
            shm = k8s["deploymentSpec"]["executors"][f"exec-{task}"]["emptyDirMounts"]
            assert shm[0]["mountPath"] == "/dev/shm" and shm[0]["medium"] == "Memory"
        else:
            assert "accelerator" not in resources
        assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"]
        assert resources["resourceMemoryLimit"]


def test_volume_credentials_and_timeouts(compiled):
    _, k8s = compiled
    settings = PlatformSettings()
    for task in ALL_TASKS:
        ex = k8s["deploymentSpec"]["executors"][f"exec-{task}"]
        assert ex["pvcMount"] == [{"constant": settings.pvc_name, "mountPath": "/data",
                                   "pvcNameParameter": {"runtimeValue": {"constant": settings.pvc_name}}}]
        secrets = {s["secretName"]: s for s in ex["secretAsEnv"]}
        s3 = secrets["actionclip-s3-credentials"]
        assert {e["envVar"] for e in s3["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert s3["optional"] is False
        # exactly one MLflow identity per task, required: only the register step may change the registry
        mlflow_ids = [n for n in secrets if n.startswith("actionclip-mlflow-")]
        assert mlflow_ids == ["actionclip-mlflow-promoter" if task == "register-model" else "actionclip-mlflow-writer"]
        assert secrets[mlflow_ids[0]]["optional"] is False
        env_cm = ex["configMapAsEnv"][0]
        assert env_cm["configMapName"] == "actionclip-pipeline-env"
        assert {e["envVar"] for e in env_cm["keyToEnv"]} == {"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"}
        kind = "gpu" if task in GPU_TASKS else ("data" if task == "prepare-data" else "light")
        assert int(ex["activeDeadlineSeconds"]) == settings.timeout_s[kind]


def test_no_literal_credentials_anywhere(compiled):
    spec, k8s = compiled
    text = yaml.safe_dump(spec) + yaml.safe_dump(k8s)
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "env" not in ex["container"]  # every credential comes from a Secret/ConfigMap reference
    assert "change-me" not in text and "password" not in text.lower().replace("mlflow_tracking_password", "")


def test_retries_on_gpu_stages_and_caching(compiled):
    spec, _ = compiled
    tasks = _tasks(spec)
    assert set(tasks) == ALL_TASKS
    for name, task in tasks.items():
        retry = task.get("retryPolicy")
        if name in GPU_TASKS:
            assert retry["maxRetryCount"] == 2 and retry["backoffDuration"] == "60s"
            assert retry["backoffFactor"] == 2.0 and retry["backoffMaxDuration"] == "1800s"
        else:
            assert retry is None, name
    # Side effects (MLflow runs, registration) and mutable inputs (the data folder) are never served from cache.
    for name in ("open-run", "prepare-data", "register-model", "close-run"):
        assert tasks[name]["cachingOptions"].get("enableCache", False) is False, name
    for name in GPU_TASKS:
        assert tasks[name]["cachingOptions"]["enableCache"] is True
        # ... and they consume the fresh parent run id, so a new pipeline run never matches an old cache key.
        assert tasks[name]["inputs"]["parameters"]["parent_run_id"]["taskOutputParameter"]["producerTask"] == "open-run"
        # A retry resumes from the stage's folder under work_root, keyed by the run's UUID (never its name).
        assert tasks[name]["inputs"]["parameters"]["job_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert tasks["close-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # The parent run exists before any stage can fail, so every failure is recorded in MLflow.
    assert tasks["prepare-data"]["dependentTasks"] == ["open-run"]


def test_parameters_exposed_with_defaults(compiled):
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    expected = defaults()
    assert set(inputs) == set(expected)
    for name, value in expected.items():
        assert inputs[name].get("isOptional") is True, name
        assert inputs[name]["defaultValue"] == value, name
    kinds = {"str": "STRING", "int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE", "bool": "BOOLEAN",
             "list[str]": "LIST", "dict": "STRUCT"}
    for f in dataclasses.fields(PipelineParams):
        assert inputs[f.name]["parameterType"] == kinds[str(f.type)], f.name
    for knob in ("data_source", "preset", "num_frames", "finetune_epochs", "pretrain_max_steps",
                 "finetune_batch_size", "finetune_lr", "templates", "few_shot", "eval_num_clips", "eval_num_crops",
                 "registry_name", "promotion_metric", "promotion_margin"):
        assert knob in inputs


def test_platform_overrides(tmp_path):
    settings = PlatformSettings().with_overrides(gpu_type="nvidia.com/mig-1g.10gb", gpus=2, pvc_name="videos",
                                                 gpu_node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})
    spec, k8s = _compile(tmp_path / "p.yaml", settings)
    acc = _executor(spec, "finetune-model")["container"]["resources"]["accelerator"]
    assert (acc["resourceType"], acc["resourceCount"]) == ("nvidia.com/mig-1g.10gb", "2")
    ex = k8s["deploymentSpec"]["executors"]["exec-finetune-model"]
    assert ex["pvcMount"][0]["constant"] == "videos"
    assert ex["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    with pytest.raises(TypeError, match="unknown platform setting"):
        PlatformSettings().with_overrides(gpu="x")


def test_compile_command(tmp_path, capsys):
    from actionclip.cli import main

    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "-o", str(out), "--gpus", "4", "--node-selector", "pool=gpu"]) == 0
    assert str(out) in capsys.readouterr().out
    spec, k8s = (yaml.safe_load_all(out.read_text()))
    assert spec["pipelineInfo"]["name"] == "actionclip"
    assert _executor(spec, "evaluate-model")["container"]["resources"]["accelerator"]["resourceCount"] == "4"
    assert k8s["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain-model"]["nodeSelector"] == {
        "labels": {"pool": "gpu"}}
    assert main(["pipeline", "compile", "-o", str(out), "--node-selector", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_image_is_one_setting(tmp_path):
    """ACTIONCLIP_IMAGE / --image retags every task (a fresh process: the image is read when components load)."""
    import subprocess
    import sys

    out = tmp_path / "p.yaml"
    subprocess.run([sys.executable, "-m", "actionclip.cli", "pipeline", "compile", "-o", str(out),
                    "--image", "local/actionclip:dev"], check=True, capture_output=True)
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"local/actionclip:dev"}


def test_submit_to_unreachable_host_is_one_clear_line(capsys):
    from actionclip.cli import main

    code = main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--experiment", "x", "--finetune-epochs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("actionclip pipeline: error: could not submit to http://127.0.0.1:9")


def test_cli_parameter_errors(capsys):
    from actionclip.cli import main

    assert main(["pipeline", "run", "--finetune-epochs", "many"]) == 2
    assert "pipeline parameter 'finetune_epochs' expects float, got 'many'" in capsys.readouterr().err
    assert main(["pipeline", "run", "--finetune-overrides", "[1]"]) == 2
    assert "expects dict" in capsys.readouterr().err


def test_run_summary_names_outputs_store_and_model(tmp_path):
    from pipelines.local import LocalRun, TaskTiming, describe

    run = LocalRun(workdir=tmp_path, run_dir=tmp_path / "pipeline-runs" / "actionclip-1", job_name="actionclip-1",
                   tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", succeeded=True, seconds=12.5,
                   timings=[TaskTiming("prepare-data", 3.0, "SUCCESS", 1.0)],
                   registered={"model_uri": "models:/actionclip/3", "aliases": ["challenger"], "promoted": False})
    text = describe(run)
    assert str(run.run_dir) in text and run.tracking_uri in text
    assert "models:/actionclip/3" in text and "aliases: challenger" in text and "prepare-data 3.0s" in text
    assert run.timings[0].overhead_seconds == 2.0


def test_unknown_parameter_is_named(tmp_path):
    from actionclip.errors import ConfigError
    from pipelines.local import run_local

    with pytest.raises(ConfigError, match="unknown pipeline parameter 'finetune_epoch' .*'finetune_epochs'"):
        run_local(tmp_path, {"finetune_epoch": 2})
    assert not (tmp_path / "pipeline-runs").exists()  # refused before anything ran
