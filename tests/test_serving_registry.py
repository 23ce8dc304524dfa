"""Registry against a real SQLite-backed MLflow: promotion rule, idempotency, lineage, resolve, loading
``models:/...@champion`` without unpickling anything."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
mlflow = pytest.importorskip("mlflow")

import actionclip  # noqa: E402
from actionclip.serving import registry  # noqa: E402
from actionclip.serving.errors import RegistryError  # noqa: E402
from actionclip.serving.packaging import example_clip_bytes  # noqa: E402

LABELS = ["waving", "clapping", "jumping"]


def _tiny_model_dir(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    actionclip.create_model("tiny-8").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite registry and two different tiny models."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    prompt = root / "prompt.json"
    prompt.write_text(json.dumps({"templates": ["a video of {}", "a person {}"], "scores": {}, "rule": "test"}))
    clip = root / "clip.mp4"
    clip.write_bytes(example_clip_bytes(frames=16, size=64))
    return {
        "uri": uri, "root": root, "prompt": prompt, "clip": clip,
        "a": _tiny_model_dir(root / "model_a", 0), "b": _tiny_model_dir(root / "model_b", 1),
    }


def _register(store, which, top1, run_id, **kw):
    return registry.register_model(
        store[which], {"top1": top1, "top5": 1.0, "per_class": {"waving": 1.0}}, "actionclip",
        labels=LABELS, prompt=store["prompt"], pipeline_run_id=run_id, dataset_hash="sha-data",
        parent_checkpoint="runs/pretrain/model", tracking_uri=store["uri"], **kw,
    )


@pytest.fixture(scope="module")
def versions(store):
    """v1 (first: champion), v2 (better: champion), v3 (better by less than the margin: challenger only)."""
    v1 = _register(store, "a", 0.50, "run-1")
    v2 = _register(store, "b", 0.70, "run-2")
    v3 = _register(store, "a", 0.705, "run-3", margin=0.01)
    return v1, v2, v3


def test_promotion_rule(versions, store):
    v1, v2, v3 = versions
    assert (v1.version, v2.version, v3.version) == ("1", "2", "3")
    assert v1.promoted and v1.reason == "no champion yet" and v1.previous_champion is None
    assert v2.promoted and v2.previous_champion == "1" and v2.aliases == ["challenger", "champion"]
    assert not v3.promoted and v3.aliases == ["challenger"] and "kept champion" in v3.reason
    client = mlflow.MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert client.get_model_version_by_alias("actionclip", "champion").version in (2, "2")
    assert client.get_model_version_by_alias("actionclip", "challenger").version in (3, "3")
    assert client.get_model_version("actionclip", "1").aliases == []
    assert v2.model_uri == "models:/actionclip/2"


def test_idempotent_for_the_same_run(versions, store):
    again = _register(store, "b", 0.70, "run-2")
    assert again.reused and again.version == "2" and again.promoted
    client = mlflow.MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert len(client.search_model_versions("name = 'actionclip'")) == 3


def test_lineage_recorded(versions, store):
    client = mlflow.MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    mv = client.get_model_version("actionclip", "2")
    assert mv.tags["actionclip.pipeline_run_id"] == "run-2"
    assert mv.tags["actionclip.dataset_hash"] == "sha-data"
    assert mv.tags["actionclip.parent_checkpoint"] == "runs/pretrain/model"
    assert float(mv.tags["actionclip.metric_value"]) == 0.70
    run = client.get_run(versions[1].run_id)
    assert run.data.params["dataset_hash"] == "sha-data"
    assert run.data.metrics["top1"] == 0.70 and "per_class" not in run.data.metrics
    rows = registry.list_versions("actionclip", tracking_uri=store["uri"])
    assert [r["version"] for r in rows] == [3, 2, 1] or [r["version"] for r in rows] == ["3", "2", "1"]


def test_resolve_gives_the_artifact_directory(versions, store):
    location = registry.resolve("actionclip@champion", tracking_uri=store["uri"])
    assert location == registry.resolve("models:/actionclip/2", tracking_uri=store["uri"])
    assert location.startswith("file://")
    local = Path(location[len("file://"):])
    assert (local / "MLmodel").is_file() and (local / "artifacts" / "model.safetensors").is_file()
    assert location != registry.resolve("models:/actionclip/1", tracking_uri=store["uri"])


def test_artifacts_hold_no_pickles_and_load_by_code(versions, store):
    local = Path(registry.resolve("actionclip@champion", tracking_uri=store["uri"])[len("file://"):])
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle", ".pt", ".pth", ".bin"))], files
    assert {"artifacts/model.safetensors", "artifacts/config.json", "artifacts/labels.txt",
            "artifacts/prompt.json"} <= set(files)
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    assert "python_model.pkl" not in mlmodel
    assert (local / "artifacts" / "labels.txt").read_text().split() == LABELS


def test_load_champion_without_unpickling(versions, store, monkeypatch):
    import cloudpickle

    def refuse(*a, **k):
        raise AssertionError("something tried to unpickle while loading the model")

    for mod in (pickle, cloudpickle):
        monkeypatch.setattr(mod, "load", refuse)
        monkeypatch.setattr(mod, "loads", refuse)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with registry.using_tracking_uri(store["uri"]):
        model = mlflow.pyfunc.load_model("models:/actionclip@champion", model_config={"allow_paths": True})
    out = model.predict([{"video": str(store["clip"]), "return_all": True},
                         {"video": str(store["clip"]), "labels": ["a", "b"], "top_k": 1}])
    assert out[0]["labels"][0] in LABELS and set(out[0]["all_probs"]) == set(LABELS)
    assert sum(out[0]["all_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(out[1]["labels"]) == 1 and out[1]["labels"][0] in ("a", "b")
    # the champion is v2 (model_b): same numbers as scoring that directory directly with the logged templates
    from actionclip.serving.predictor import VideoPredictor
    from actionclip.serving.requests import parse_requests

    direct = VideoPredictor.from_files(store["b"], labels=LABELS, prompt=store["prompt"])
    ref = direct.predict(parse_requests([{"video": str(store["clip"]), "return_all": True}], direct.limits))[0]
    assert out[0]["all_probs"] == pytest.approx(ref.all_probs, abs=1e-5)


def test_manual_promote_and_rollback(versions, store):
    registry.promote("actionclip", "1", tracking_uri=store["uri"])
    assert registry.get_version("models:/actionclip@champion", store["uri"]).version in (1, "1")
    registry.promote("actionclip", "2", tracking_uri=store["uri"])
    assert registry.get_version("actionclip@champion", store["uri"]).version in (2, "2")
    with pytest.raises(RegistryError, match="has no version 99"):
        registry.promote("actionclip", "99", tracking_uri=store["uri"])
    with pytest.raises(RegistryError, match="has no alias @staging"):
        registry.resolve("actionclip@staging", tracking_uri=store["uri"])
    with pytest.raises(RegistryError, match="cannot parse model URI"):
        registry.resolve("models:/a/b/c", tracking_uri=store["uri"])


def test_bad_register_inputs(store, tmp_path):
    with pytest.raises(RegistryError, match="metric 'top1' is not in the metrics"):
        registry.register_model(store["a"], {"acc": 1.0}, tracking_uri=store["uri"], labels=LABELS)
    with pytest.raises(RegistryError, match="model directory not found"):
        registry.register_model(tmp_path / "nope", {"top1": 1.0}, tracking_uri=store["uri"], labels=LABELS)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read metrics file"):
        registry.register_model(store["a"], tmp_path / "metrics.json", tracking_uri=store["uri"])


def test_registry_cli(versions, store, capsys):
    from actionclip.cli import main

    assert main(["registry", "resolve", "actionclip@champion", "--tracking-uri", store["uri"]]) == 0
    assert capsys.readouterr().out.strip() == registry.resolve("actionclip@champion", tracking_uri=store["uri"])
    assert main(["registry", "show", "actionclip", "--tracking-uri", store["uri"]]) == 0
    table = capsys.readouterr().out
    assert "challenger" in table and "top1=0.7000" in table
    assert main(["registry", "resolve", "actionclip@nothing", "--tracking-uri", store["uri"]]) == 2
    assert "has no alias @nothing" in capsys.readouterr().err


def test_predict_cli_with_a_registered_model(versions, store, capsys):
    from actionclip.cli import main

    clip = str(store["clip"])
    assert main(["predict", clip, "--model", "models:/actionclip@champion", "--tracking-uri", store["uri"],
                 "--labels", "x", "y", "--top-k", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["video"] == clip and len(row["labels"]) == 1 and row["labels"][0] in ("x", "y")
    # default labels come from the registered labels.txt; the table names them
    assert main(["predict", clip, "--model", "models:/actionclip/1", "--tracking-uri", store["uri"]]) == 0
    table = capsys.readouterr().out
    assert all(lab in table for lab in LABELS)
    assert main(["predict", clip, "--model", "models:/actionclip@nope", "--tracking-uri", store["uri"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no alias @nope" in err and len(err.splitlines()) == 1


def test_int8_through_model_config(versions, store):
    from actionclip.serving.quantize import is_quantized

    with registry.using_tracking_uri(store["uri"]):
        fp32 = mlflow.pyfunc.load_model("models:/actionclip@champion", model_config={"allow_paths": True})
        int8 = mlflow.pyfunc.load_model("models:/actionclip@champion", model_config={"int8": True, "allow_paths": True})
    assert is_quantized(int8.unwrap_python_model().predictor.model)
    assert not is_quantized(fp32.unwrap_python_model().predictor.model)
    row = [{"video": str(store["clip"]), "return_all": True}]
    a, b = fp32.predict(row)[0]["all_probs"], int8.predict(row)[0]["all_probs"]
    assert set(a) == set(b) == set(LABELS) and max(abs(a[k] - b[k]) for k in LABELS) < 0.1
