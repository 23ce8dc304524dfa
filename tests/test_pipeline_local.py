"""The whole pipeline run locally with kfp.local (SubprocessRunner, real subprocesses, real decord decoding of real
H.264 files, a real SQLite MLflow store and registry) on a tiny synthetic configuration.

One module-scoped fixture runs the pipeline twice in the same working directory with the task cache on (as a
cluster would); the checks read what the runs left behind. The failing-stage case then runs a broken data source
in the same directory and checks that nothing written before is lost.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.local import LocalRun, run_local

CLASSES = ["moving left", "moving right", "growing", "shaking"]
HELDOUT = ["shaking"]
TASKS = ["open-run", "prepare-data", "pretrain-model", "select-prompts", "finetune-model", "evaluate-model",
         "register-model", "close-run"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small enough that every stage is mostly process start and imports, but every stage does real work: one caption
# pre-training step, template scoring, two fine-tuning steps, evaluation with zero-shot on the held-out class.
TINY = {
    "synthetic_classes": CLASSES, "heldout_labels": HELDOUT, "synthetic_clips_per_class": 3,
    "synthetic_pretrain_clips": 1, "synthetic_frames": 8, "val_fraction": 0.34,
    "pretrain_epochs": 1.0, "pretrain_max_steps": 1, "pretrain_batch_size": 4,
    "prompt_keep": 4, "templates": ["a clip of {} motion"],
    "finetune_epochs": 1.0, "finetune_max_steps": 2, "finetune_warmup_epochs": 0.0, "finetune_batch_size": 4,
    "eval_batch_size": 8, "num_workers": 0, "device": "cpu", "registry_name": "actionclip-test",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    import io

    from pipelines.console import Console

    workdir = tmp_path_factory.mktemp("pipeline")
    # the first run goes through the console `actionclip pipeline run` shows (no terminal: no progress bar)
    out = io.StringIO()
    console = Console(out, workdir / "console.log")
    first = run_local(workdir, TINY, console=console)
    console.close()
    second = run_local(workdir, TINY, quiet=True)
    return {"workdir": workdir, "first": first, "second": second, "console": console, "console_text": out.getvalue(),
            "summary": console.summary(first)}


def _client(run: LocalRun):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=run.tracking_uri)


def _executor_output(run: LocalRun, task: str) -> dict:
    return json.loads((run.run_dir / task / "executor_output.json").read_text())


def _artifact_metadata(run: LocalRun, task: str, name: str) -> dict:
    return _executor_output(run, task)["artifacts"][name]["artifacts"][0]["metadata"]


def _parent_run_id(run: LocalRun) -> str:
    return _executor_output(run, "open-run")["parameterValues"]["Output"]


def test_every_stage_ran_and_timed(runs):
    for run in (runs["first"], runs["second"]):
        assert run.succeeded and run.error is None
        assert [t.task for t in run.timings] == TASKS
        assert all(t.status == "SUCCESS" for t in run.timings)
        for t in run.timings:
            assert t.stage_seconds is not None and 0 < t.stage_seconds < t.seconds, t


def test_console_stage_lines_and_summary(runs):
    text, log = runs["console_text"], (runs["workdir"] / "console.log").read_text()
    lines = text.splitlines()
    for task in TASKS:  # one line as the stage starts, one as it ends with its time
        assert sum(task in ln and ln.startswith("> ") for ln in lines) == 1, task
    ends = [ln for ln in lines if ln.startswith("  ") and " ok in " in ln]
    assert len(ends) == len(TASKS) and all(re.search(r"ok in +\d+\.\d s", ln) for ln in ends)
    assert any("val top-1" in ln and "held-out zero-shot" in ln for ln in ends)  # evaluate's headline metric
    # kfp.local's dumps and its warnings about cluster-only settings stay out of the console, in the log file
    for noise in ("executor_output", "Streamed logs", "have no effect in the current local runner",
                  "custom or non-Python base image", "ACTIONCLIP_STAGE_TIME"):
        assert noise not in text, noise
    for kept in ("Streamed logs", "have no effect in the current local runner", "ACTIONCLIP_STAGE_TIME"):
        assert kept in log, kept
    summary = runs["summary"]
    run = runs["first"]
    table = summary.split("summary\n", 1)[1]
    header, rule, *rows = table.splitlines()[:len(TASKS) + 3]
    assert header.split() == ["stage", "time", "metric"]
    assert len(rows) == len(TASKS) + 1 and rows[-1].split()[0] == "total"
    prompt = json.loads(run.output("select-prompts", "prompt").read_text())
    best = max(prompt["scores"], key=lambda t: prompt["scores"][t])
    assert f"best  {prompt['scores'][best]:.3f}  {best!r}" in summary and "worst" in summary
    metrics = json.loads((run.output("evaluate-model", "evaluation") / "metrics.json").read_text())
    assert f"held-out top-1 {metrics['zero_shot_top1']:.3f} vs chance {metrics['zero_shot_chance']:.3f}" in summary
    assert f"val top-1 {metrics['top1']:.3f} vs chance {1 / 3:.3f}" in summary
    assert run.tracking_uri in summary and run.registered["model_uri"] in summary
    assert str(runs["workdir"] / "console.log") in summary
    assert "actionclip predict" in summary and "mlflow models serve" in summary


def test_dataset_artifact(runs):
    run = runs["first"]
    ds = run.output("prepare-data", "dataset")
    rows = [json.loads(line) for line in (ds / "manifest.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} >= {"train", "val", "heldout"}
    assert (ds / "labels.txt").read_text().splitlines() == [c for c in CLASSES if c not in HELDOUT]
    assert (ds / "heldout_labels.txt").read_text().splitlines() == HELDOUT
    summary = json.loads((ds / "summary.json").read_text())
    assert _artifact_metadata(run, "prepare-data", "dataset")["dataset_hash"] == summary["dataset_hash"]
    # Videos stay on shared storage: the manifest points into the synthetic folder, nothing is copied.
    synthetic = run.workdir / "data" / "synthetic"
    assert all(Path(r["path"]).is_file() and Path(r["path"]).is_relative_to(synthetic) for r in rows)
    assert not any(p.suffix in (".mp4", ".avi", ".webm") for p in ds.rglob("*"))


@pytest.mark.parametrize("task", ["pretrain-model", "finetune-model"])
def test_model_artifacts_load(runs, task):
    import actionclip
    from safetensors.torch import load_file

    model_dir = runs["first"].output(task, "model")
    assert load_file(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    model = actionclip.load(model_dir)
    assert model.num_frames == config["num_frames"] == 8
    meta = _artifact_metadata(runs["first"], task, "model")
    assert meta["format"] == "safetensors" and meta["mlflow_run_id"]


def test_prompt_artifact(runs):
    prompt = json.loads(runs["first"].output("select-prompts", "prompt").read_text())
    assert 1 <= len(prompt["templates"]) <= TINY["prompt_keep"]
    assert set(prompt["templates"]) <= set(prompt["scores"])
    assert "a clip of {} motion" in prompt["scores"]  # the user template was scored beside the defaults
    assert all("{}" in t for t in prompt["templates"])


def test_evaluation_artifacts_and_metrics(runs):
    run = runs["first"]
    metrics = json.loads((run.output("evaluate-model", "evaluation") / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert 0.0 <= metrics["mean_class_acc"] <= 1.0
    assert 0.0 <= metrics["zero_shot_top1"] <= 1.0
    assert metrics["clips_per_s"] > 0
    for png in run.output("evaluate-model", "evaluation").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    # KFP UI artifacts: scalar Metrics, the confusion matrix, the HTML report with plots inlined, the Markdown.
    ui_metrics = _artifact_metadata(run, "evaluate-model", "metrics")
    assert ui_metrics["top1"] == pytest.approx(metrics["top1"])
    matrix = _artifact_metadata(run, "evaluate-model", "confusion")["confusionMatrix"]
    labels = [c for c in CLASSES if c not in HELDOUT]
    assert [s["displayName"] for s in matrix["annotationSpecs"]] == labels
    assert sum(sum(r["row"]) for r in matrix["rows"]) == metrics["n"]
    html = run.output("evaluate-model", "report").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "top1" in html
    assert "| top1 |" in run.output("evaluate-model", "summary").read_text()


def test_registry_version_alias_and_lineage(runs):
    run = runs["first"]
    client = _client(run)
    reg = run.registered
    assert reg["name"] == "actionclip-test" and reg["model_uri"] == f"models:/actionclip-test/{reg['version']}"
    champion = client.get_model_version_by_alias("actionclip-test", "champion")
    assert str(champion.version) == reg["version"] == "1" and set(reg["aliases"]) == {"challenger", "champion"}
    summary = json.loads((run.output("prepare-data", "dataset") / "summary.json").read_text())
    assert champion.tags["actionclip.dataset_hash"] == summary["dataset_hash"]
    assert champion.tags["actionclip.pipeline_run_id"] == run.job_name
    assert champion.tags["actionclip.parent_checkpoint"] == str(run.output("pretrain-model", "model"))
    # One run tree: every stage run and the registration run nest under the pipeline's parent run.
    parent_id = _parent_run_id(run)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"  # closed by the exit handler
    assert parent.data.tags["kfp.pipeline_job_name"] == run.job_name
    assert parent.data.tags["actionclip.registered_model"] == reg["model_uri"]
    assert client.get_run(champion.run_id).data.tags["mlflow.parentRunId"] == parent_id
    stage_run_ids = {_artifact_metadata(run, "pretrain-model", "model")["mlflow_run_id"],
                     _artifact_metadata(run, "select-prompts", "prompt")["mlflow_run_id"],
                     _artifact_metadata(run, "finetune-model", "model")["mlflow_run_id"],
                     _artifact_metadata(run, "evaluate-model", "evaluation")["mlflow_run_id"]}
    assert len(stage_run_ids) == 4
    for run_id in stage_run_ids:
        stage_run = client.get_run(run_id)
        assert stage_run.data.tags["mlflow.parentRunId"] == parent_id
        assert stage_run.info.status == "FINISHED"


def test_second_run_reuses_nothing(runs):
    first, second = runs["first"], runs["second"]
    assert second.run_dir != first.run_dir and second.job_name != first.job_name
    # Every task executed again: each wrote its own executor output, and every artifact it passed on lives in the
    # second run's folder (a cache hit would hand back the first run's URIs and write nothing here).
    for task in TASKS:
        out = _executor_output(second, task)
        for artifact in out.get("artifacts", {}).values():
            for a in artifact["artifacts"]:
                assert Path(a["uri"]).is_relative_to(second.run_dir), (task, a["uri"])
    # The cache is on and was filled by the first run; it did not serve the second.
    assert any((first.workdir / ".kfp-cache").glob("*.json"))
    assert _parent_run_id(second) != _parent_run_id(first)
    assert (_artifact_metadata(second, "finetune-model", "model")["mlflow_run_id"]
            != _artifact_metadata(first, "finetune-model", "model")["mlflow_run_id"])
    # A new registry version, challenger moves to it; champion follows the promotion rule (margin 0).
    client = _client(second)
    assert second.registered["version"] == "2" and second.registered["reused"] is False
    assert str(client.get_model_version_by_alias("actionclip-test", "challenger").version) == "2"
    better = second.registered["metrics"]["top1"] > first.registered["metrics"]["top1"]
    assert str(client.get_model_version_by_alias("actionclip-test", "champion").version) == ("2" if better else "1")
    assert second.registered["promoted"] is better


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_failing_stage_reports_its_error_and_keeps_earlier_outputs(runs, tmp_path, capsys):
    from actionclip.cli import main

    workdir = runs["workdir"]
    bad = tmp_path / "videos"
    for label in ("waving", "jumping"):
        (bad / label).mkdir(parents=True)
        (bad / label / "clip.mp4").write_bytes(b"this is not a video")
    earlier = {d: _snapshot(runs[d].run_dir) for d in ("first", "second")}
    synthetic = _snapshot(workdir / "data" / "synthetic")

    code = main(["pipeline", "run", "--workdir", str(workdir), "--quiet", "--data", str(bad),
                 "--registry-name", "actionclip-test", "--mlflow-experiment", "actionclip", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # One line naming the stage and the data layer's own reason (not the orchestrator's generic message).
    assert err[-1].startswith("actionclip pipeline: error: stage 'prepare-data' failed: DatasetError:")
    assert "FAILURE" not in err[-1]

    for d in ("first", "second"):
        assert _snapshot(runs[d].run_dir) == earlier[d]
    assert _snapshot(workdir / "data" / "synthetic") == synthetic
    client = _client(runs["first"])
    assert sorted(str(v.version) for v in client.search_model_versions("name='actionclip-test'")) == ["1", "2"]
    # The exit handler still ran: the failed run's parent run is closed as FAILED, not left RUNNING.
    failed_dirs = sorted((workdir / "pipeline-runs").iterdir())
    failed = failed_dirs[-1]
    assert failed not in (runs["first"].run_dir, runs["second"].run_dir)
    parent_id = json.loads((failed / "open-run" / "executor_output.json").read_text())["parameterValues"]["Output"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED" and parent.data.tags["kfp.pipeline_status"] == "FAILED"


# A KFP retry re-runs a task with the same run id, so it finds the stage folder under work_root its killed attempt
# left. This pipeline is the fine-tuning task alone, over the first run's artifacts, with that id fixed.
RETRY_SCRIPT = """
import json, sys
from kfp import dsl
from components.finetune import finetune_model
from pipelines.local import run_local

a = json.loads(sys.argv[1])

@dsl.pipeline(name="finetune-retry")
def retry(synthetic_dir: str, work_root: str):
    imported = {name: dsl.importer(artifact_uri=a[name], artifact_class=cls, reimport=False).output
                for name, cls in (("dataset", dsl.Dataset), ("pretrained", dsl.Model), ("prompt", dsl.Artifact))}
    finetune_model(**imported, epochs=100.0, max_steps=a["steps"], warmup_epochs=0.0, batch_size=4,
                   overrides={"checkpoint_every": 1}, experiment="retry", seed=0, device="cpu", num_workers=0,
                   parent_run_id="", work_root=work_root, job_id=a["job_id"])

run = run_local(a["workdir"], {"work_root": a["work_root"]}, pipeline=retry, cache=False, quiet=True)
print("RESULT " + json.dumps({"succeeded": run.succeeded, "run_dir": str(run.run_dir)}))
"""


def test_killed_finetune_task_resumes_on_retry(runs, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from actionclip.train.checkpointing import load_checkpoint

    first, steps, job_id = runs["first"], 30, "one-run-retried"
    args = {"dataset": str(first.output("prepare-data", "dataset")),
            "pretrained": str(first.output("pretrain-model", "model")),
            "prompt": str(first.output("select-prompts", "prompt")),
            "workdir": str(tmp_path / "runs"), "work_root": str(tmp_path / "work"), "steps": steps, "job_id": job_id}
    ckpts = tmp_path / "work" / job_id / "finetune" / "checkpoints"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", RETRY_SCRIPT, json.dumps(args)]

    # Attempt 1: SIGKILL (no cleanup, as a node loss or OOM kill) the runner and its task once a checkpoint is on disk.
    attempt = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(ckpts.glob("step-*.pt")):
        assert attempt.poll() is None, f"the first attempt ended before its first checkpoint:\n{attempt.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(attempt.pid, signal.SIGKILL)
    attempt.wait()
    left = sorted(ckpts.glob("step-*.pt"))
    killed_at = load_checkpoint(left[-1])
    killed_step = int(killed_at["progress"]["global_step"])
    assert 1 <= killed_step < steps, f"the attempt was not killed mid-run (step {killed_step} of {steps})"

    # Attempt 2 (the retry): same command, same work_root and run id.
    retry = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    result = json.loads(retry.stdout.rsplit("RESULT ", 1)[1])
    assert result["succeeded"]
    out = Path(result["run_dir"]) / "finetune-model"
    logged = json.loads((out / "executor_output.json").read_text())["artifacts"]["metrics"]["artifacts"][0]
    assert logged["metadata"]["global_step"] == steps
    history = json.loads((out / "model" / "history.json").read_text())
    # The step count continues from the killed attempt's checkpoint up to the end, once each, not from 1 again ...
    assert [s["step"] for s in history["steps"]] == list(range(1, steps + 1))
    # ... and the retry trained only what was left: the same MLflow run, tagged with where it resumed.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(killed_at["run_id"])
    assert run.data.tags["resumed_from_step"] == str(killed_step)
    assert run.info.status == "FINISHED"
