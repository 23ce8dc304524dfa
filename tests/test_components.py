"""Each component's function run directly (``.python_func``) in this process, chained on a tiny synthetic dataset
with a real SQLite MLflow store: the same bodies the pipeline runs, without the orchestrator. Plus the pure helpers
the bodies use (config wiring, confusion-matrix selection, the report)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

import components as c
from components import _runtime
from components.report import render_html, render_markdown

CLASSES = ["moving left", "moving right", "growing", "shaking"]
HELDOUT = ["shaking"]
EXPERIMENT = "component-tests"


def _artifact(cls, path: Path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.fixture(scope="module")
def chain(store, tmp_path_factory) -> dict:
    """open_run -> prepare_data -> pretrain_model -> select_prompts -> finetune_model -> evaluate_model -> register."""
    out = tmp_path_factory.mktemp("components")
    common = {"experiment": EXPERIMENT, "device": "cpu", "num_workers": 0, "job_id": "unit-run-id"}
    parent = c.open_run.python_func(experiment=EXPERIMENT, run_name="", job_name="unit-job", job_id="42")

    dataset = _artifact(dsl.Dataset, out / "dataset")
    c.prepare_data.python_func(
        dataset=dataset, data_source="synthetic", synthetic_dir=str(out / "videos"), synthetic_classes=CLASSES,
        heldout_labels=HELDOUT, synthetic_clips_per_class=3, synthetic_pretrain_clips=1, synthetic_frames=8,
        val_fraction=0.34, workers=1,
    )
    pretrained = _artifact(dsl.Model, out / "pretrained")
    pre_metrics = dsl.Metrics(name="metrics")
    c.pretrain_model.python_func(
        dataset=dataset, model=pretrained, metrics=pre_metrics, parent_run_id=parent, preset="tiny-8", epochs=0.0,
        work_root="", **common,
    )
    prompt = _artifact(dsl.Artifact, out / "prompt.json")
    prompt_metrics = dsl.Metrics(name="metrics")
    c.select_prompts.python_func(
        dataset=dataset, model=pretrained, prompt=prompt, metrics=prompt_metrics, parent_run_id=parent,
        templates=["a clip of {} motion"], keep=3, work_root="", **common,
    )
    model = _artifact(dsl.Model, out / "model")
    ft_metrics = dsl.Metrics(name="metrics")
    work_root = out / "work"  # a shared work root keeps the stage's checkpoints (resumable on retry)
    c.finetune_model.python_func(
        dataset=dataset, pretrained=pretrained, prompt=prompt, model=model, metrics=ft_metrics,
        parent_run_id=parent, epochs=1.0, max_steps=2, warmup_epochs=0.0, batch_size=4, lr=1e-4,
        work_root=str(work_root), **common,
    )
    evaluation = _artifact(dsl.Artifact, out / "evaluation")
    ev_metrics = dsl.Metrics(name="metrics")
    confusion = dsl.ClassificationMetrics(name="confusion")
    report = _artifact(dsl.HTML, out / "report.html")
    summary = _artifact(dsl.Markdown, out / "summary.md")
    c.evaluate_model.python_func(
        dataset=dataset, model=model, prompt=prompt, evaluation=evaluation, metrics=ev_metrics, confusion=confusion,
        report=report, summary=summary, parent_run_id=parent, batch_size=8, work_root="", **common,
    )
    registered = _artifact(dsl.Artifact, out / "registered.json")
    uri = c.register_model.python_func(
        model=model, dataset=dataset, prompt=prompt, evaluation=evaluation, pretrained=pretrained,
        registered=registered, parent_run_id=parent, registry_name="unit-model", experiment=EXPERIMENT,
        job_name="unit-job",
    )
    return {"out": out, "parent": parent, "dataset": dataset, "pretrained": pretrained, "pre_metrics": pre_metrics,
            "prompt": prompt, "prompt_metrics": prompt_metrics, "model": model, "ft_metrics": ft_metrics,
            "work_root": work_root, "evaluation": evaluation, "ev_metrics": ev_metrics, "confusion": confusion,
            "report": report, "summary": summary, "registered": registered, "uri": uri}


def test_prepare_data(chain):
    ds = Path(chain["dataset"].path)
    meta = chain["dataset"].metadata
    assert meta["dataset_hash"] == json.loads((ds / "summary.json").read_text())["dataset_hash"]
    assert meta["num_labels"] == 3 and meta["num_heldout_labels"] == 1 and meta["source"] == "synthetic"
    rows = [json.loads(line) for line in (ds / "manifest.jsonl").read_text().splitlines()]
    assert meta["num_videos"] == len(rows) and all(Path(r["path"]).is_file() for r in rows)
    assert not list(ds.rglob("*.mp4"))


def test_prepare_data_frames_dir(chain, tmp_path):
    """frames_dir: the manifest points at JPEG frame folders on "shared storage"; the artifact stays small."""
    dataset = _artifact(dsl.Dataset, tmp_path / "dataset")
    frames = tmp_path / "frames"
    c.prepare_data.python_func(dataset=dataset, data_source=str(chain["out"] / "videos"), data_format="synthetic",
                               val_fraction=0.34, workers=1, frames_dir=str(frames), frame_size=32)
    rows = [json.loads(line) for line in (Path(dataset.path) / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(Path(r["path"]).parent == frames.resolve() for r in rows)
    assert all(len(list(Path(r["path"]).glob("img_*.jpg"))) == r["frames"] == 8 for r in rows)
    assert all((r["width"], r["height"]) == (32, 32) for r in rows)
    assert not list(Path(dataset.path).rglob("*.jpg"))
    assert dataset.metadata["num_videos"] == len(rows)


def test_pretrain_model(chain):
    model_dir = Path(chain["pretrained"].path)
    assert sorted(p.name for p in model_dir.iterdir()) >= ["config.json", "model.safetensors"]
    assert chain["pretrained"].metadata["source"] == "tiny-8"
    assert chain["pretrained"].metadata["dataset_hash"] == chain["dataset"].metadata["dataset_hash"]
    # Scratch of a stage without a work root is removed once the model is copied out.
    assert not list(Path(model_dir).glob("checkpoints"))


def test_select_prompts(chain):
    prompt = json.loads(Path(chain["prompt"].path).read_text())
    assert len(prompt["templates"]) == 3 == chain["prompt"].metadata["templates_kept"]
    assert chain["prompt_metrics"].metadata["templates_kept"] == 3.0
    assert "a clip of {} motion" in prompt["scores"]


def test_finetune_model(chain):
    model_dir = Path(chain["model"].path)
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert chain["model"].metadata["stage"] == "finetune"
    assert all(isinstance(v, float) for v in chain["ft_metrics"].metadata.values())
    # With a work root the stage keeps its resumable checkpoints there, keyed by the run id and stage.
    assert list((chain["work_root"] / "unit-run-id" / "finetune" / "checkpoints").iterdir())


def test_evaluate_model(chain):
    metrics = json.loads((Path(chain["evaluation"].path) / "metrics.json").read_text())
    assert chain["ev_metrics"].metadata["top1"] == pytest.approx(metrics["top1"])
    assert "per_class" not in chain["ev_metrics"].metadata  # only scalars reach the KFP Metrics artifact
    cm = chain["confusion"].metadata["confusionMatrix"]
    assert [a["displayName"] for a in cm["annotationSpecs"]] == ["moving left", "moving right", "growing"]
    html = Path(chain["report"].path).read_text()
    assert "data:image/png;base64," in html
    assert "| mean_class_acc |" in Path(chain["summary"].path).read_text()


def test_register_model_and_run_tree(chain, store):
    from actionclip import tracking

    record = json.loads(Path(chain["registered"].path).read_text())
    assert chain["uri"] == record["model_uri"] == "models:/unit-model/1"
    assert record["promoted"] is True and "champion" in record["aliases"]
    client = tracking.client()
    version = client.get_model_version("unit-model", "1")
    assert version.tags["kfp.pipeline_job_name"] == "unit-job"
    assert version.tags["actionclip.dataset_hash"] == chain["dataset"].metadata["dataset_hash"]
    children = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{chain['parent']}'",
    )
    assert len(children) == 5  # pretrain, prompt, finetune, evaluate, registration


def test_open_and_close_run(chain, store):
    from actionclip import tracking

    client = tracking.client()
    assert client.get_run(chain["parent"]).data.tags[_runtime.JOB_TAG] == "unit-job"
    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="unit-job",
                                         pipeline_task_name="exit-handler-1", error_code=1,
                                         error_message="Task prepare-data failed.")
    c.close_run.python_func(status=status, experiment=EXPERIMENT, job_name="unit-job")
    parent = client.get_run(chain["parent"])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["kfp.pipeline_error"] == "Task prepare-data failed."
    # No experiment yet: nothing to close, no error.
    c.close_run.python_func(status=status, experiment="no-such-experiment", job_name="unit-job")


def test_prepare_data_error_is_marked(tmp_path, capsys):
    from actionclip.errors import ActionCLIPError

    (tmp_path / "src" / "waving").mkdir(parents=True)
    (tmp_path / "src" / "waving" / "a.mp4").write_bytes(b"not a video")
    with pytest.raises(ActionCLIPError):
        c.prepare_data.python_func(dataset=_artifact(dsl.Dataset, tmp_path / "ds"), data_source=str(tmp_path / "src"),
                                   workers=1)
    lines = [_runtime.parse_error_line(line) for line in capsys.readouterr().out.splitlines()]
    records = [r for r in lines if r]
    assert len(records) == 1 and records[0]["stage"] == "prepare-data"
    assert records[0]["type"] == "DatasetError" and records[0]["message"]


def test_build_config_wiring_and_errors():
    from actionclip.errors import ConfigError
    from actionclip.train import FinetuneConfig

    cfg = _runtime.build_config(FinetuneConfig, {"data": "d", "model": "m"}, {"precision": "bf16", "loss": "infonce"})
    assert (cfg.precision, cfg.loss, cfg.data) == ("bf16", "infonce", "d")
    with pytest.raises(ConfigError, match="did you mean 'precision'"):
        _runtime.build_config(FinetuneConfig, {"data": "d"}, {"precison": "bf16"})
    with pytest.raises(ConfigError, match="may not set data, parent_run_id"):
        _runtime.build_config(FinetuneConfig, {"data": "d"}, {"data": "x", "parent_run_id": "y"})


def test_top_confused_classes():
    # 4 classes; class 2 and 3 are confused with each other, class 0 is the most frequent.
    cm = [[9, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 3], [0, 1, 4, 0]]
    assert _runtime.top_confused_classes(cm, 2) == [2, 3]
    assert _runtime.top_confused_classes(cm, 3) == [1, 2, 3]
    assert _runtime.top_confused_classes(cm, 10) == [0, 1, 2, 3]


def test_report_rendering(tmp_path):
    png = tmp_path / "c.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    metrics = {"top1": 0.5, "top5": 1.0, "per_class": {"a <b>": 0.25}, "confusion": [[1]]}
    html = render_html(metrics, {"confusion": png, "missing": tmp_path / "nope.png"})
    assert html.count("data:image/png;base64,") == 1 and "a &lt;b&gt;" in html and "0.5000" in html
    md = render_markdown(metrics)
    assert "| top1 | 0.5000 |" in md and "| a <b> | 0.2500 |" in md


def test_work_dir_is_keyed_by_the_run_id(tmp_path):
    with _runtime.work_dir(str(tmp_path), "3f2a-run-uuid", "finetune") as path:
        assert path == tmp_path / "3f2a-run-uuid" / "finetune" and path.is_dir()
    assert path.is_dir()  # kept for a retry
    # Without a resolved run id two runs would share (and resume) each other's checkpoints: refused.
    for job_id in ("", "{{$.pipeline_job_uuid}}"):
        with pytest.raises(ValueError, match="needs the KFP run id"):
            with _runtime.work_dir(str(tmp_path), job_id, "finetune"):
                pass
    with _runtime.work_dir("", "", "finetune") as scratch:
        assert scratch.is_dir()
    assert not scratch.exists()  # no work root: a temporary folder, removed
