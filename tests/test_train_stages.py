"""The training stages end to end on a tiny preset and a tiny synthetic dataset (real H.264 files, real decord
decoding, a real SQLite MLflow store in tmp_path): each stage through its CLI and its function, the MLflow contents,
a 2-process torchrun (gloo) run against one process on the same global batch, and a fine-tune killed with SIGKILL
that resumes to the same weights as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from actionclip.cli import main as cli_main
from actionclip.train import EvaluateConfig, FinetuneConfig, PretrainConfig, PromptConfig
from actionclip.train import evaluate, finetune, pretrain, prompt
from actionclip import tracking

SEEN = ["moving left", "moving right", "growing", "blinking"]
HELDOUT = ["shaking"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine several times faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """4 seen classes x 4 clips (3 train / 1 val each), 1 held-out class, 1 captioned pre-train clip per class."""
    from actionclip.data import generate_synthetic, prepare_dataset

    root = tmp_path_factory.mktemp("train-data")
    src = generate_synthetic(root / "videos", classes=SEEN + HELDOUT, heldout=HELDOUT, clips_per_class=4,
                             pretrain_clips_per_class=1, frames=16, size=64, seed=0)
    prepare_dataset(src, root / "prepared", val_fraction=0.25, workers=2, progress=False)
    return root / "prepared"


def _run_cli(argv: list[str], capsys) -> dict:
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def pipeline(prepared, store, tmp_path_factory):
    """pretrain (CLI, 2 caption steps) -> prompt (function) -> finetune (function) -> evaluate (CLI), all nested
    under one parent run."""
    out = tmp_path_factory.mktemp("runs")
    parent = tracking.start_parent_run("train-tests", "pipeline")
    common = ["--data", str(prepared), "--experiment", "train-tests", "--parent-run-id", parent, "--num-workers", "0",
              "--quiet"]
    argv = ["pretrain", *common, "--out-dir", str(out / "pre"), "--epochs", "1", "--batch-size", "4",
            "--lr", "1e-4", "--log-every", "1"]
    assert cli_main(argv) == 0
    pre = json.loads((out / "pre" / "metrics.json").read_text())
    pre_model = out / "pre" / "model"
    pr = prompt(PromptConfig(data=str(prepared), model=str(pre_model), out_dir=str(out / "prompt"), keep=4,
                             templates=["a clip of {} motion"], experiment="train-tests", parent_run_id=parent,
                             num_workers=0, batch_size=8))
    ft = finetune(FinetuneConfig(data=str(prepared), model=str(pre_model), prompt=pr.paths["prompt"],
                                 out_dir=str(out / "ft"), epochs=2, warmup_epochs=0.5, batch_size=4, lr=1e-4,
                                 log_every=1, experiment="train-tests", parent_run_id=parent, num_workers=1,
                                 quiet=True))
    argv = ["evaluate", "--data", str(prepared), "--model", ft.paths["model"], "--out-dir", str(out / "eval"),
            "--num-clips", "2", "--num-crops", "3", "--prompt", pr.paths["prompt"], "--experiment", "train-tests",
            "--parent-run-id", parent, "--num-workers", "0"]
    assert cli_main(argv) == 0
    return {"out": out, "parent": parent, "pre_metrics": pre, "prompt": pr, "finetune": ft,
            "client": tracking.client()}


def _runs_by_stage(client, parent: str) -> dict:
    exp = client.get_experiment_by_name("train-tests")
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.tags["actionclip.stage"]: r for r in runs}


def test_pretrain_cli_trains_and_tracks(pipeline, prepared):
    out, client = pipeline["out"], pipeline["client"]
    model_dir = out / "pre" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    # 5 clips in "pretrain" + 12 in "train" -> 17 // 4 = 4 steps in the one epoch
    assert pipeline["pre_metrics"]["global_step"] == 4
    hist = json.loads((model_dir / "history.json").read_text())
    assert [s["step"] for s in hist["steps"]] == [1, 2, 3, 4]
    assert list((out / "pre" / "checkpoints").glob("step-*.pt"))
    run = _runs_by_stage(client, pipeline["parent"])["pretrain"]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.0001" and run.data.params["loss"] == "clip"
    assert run.data.params["dataset_hash"] == json.loads((prepared / "summary.json").read_text())["dataset_hash"]
    assert run.data.tags["dataset_hash"] and "sys.torch" in run.data.tags
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    assert {"val_top1", "heldout_top1", "epoch_train_loss"} <= set(run.data.metrics)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.json", "model", "training_curves.png"} <= arts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {
        "model/model.safetensors", "model/config.json"}


def test_prompt_stage_scores_every_candidate(pipeline):
    pr = pipeline["prompt"]
    data = json.loads(Path(pr.paths["prompt"]).read_text())
    assert len(data["scores"]) == 17 and "a clip of {} motion" in data["scores"]
    assert len(data["templates"]) == 4 and data["rule"].startswith("top_k")
    kept_scores = sorted((data["scores"][t] for t in data["templates"]), reverse=True)
    dropped = [s for t, s in data["scores"].items() if t not in data["templates"]]
    assert min(kept_scores) >= max(dropped)
    assert 0 <= data["zero_shot"]["top1"] <= data["zero_shot"]["top5"] <= 1
    assert data["labels"] == SEEN and data["num_clips"] == 4
    run = _runs_by_stage(pipeline["client"], pipeline["parent"])["prompt"]
    assert run.info.run_id == pr.run_id
    assert len(pipeline["client"].get_metric_history(pr.run_id, "template_top1")) == 17
    assert Path(pr.paths["template_scores_png"]).read_bytes().startswith(PNG_MAGIC)


def test_finetune_function_trains_validates_and_logs(pipeline):
    ft, client = pipeline["finetune"], pipeline["client"]
    assert ft.metrics["global_step"] == 6  # 12 train clips / batch 4 = 3 steps x 2 epochs
    assert 0 <= ft.metrics["val_top1"] <= 1
    before = load_file(str(pipeline["out"] / "pre" / "model" / "model.safetensors"))
    after = load_file(str(Path(ft.paths["model"]) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert any(k.startswith("fusion.") for k in changed) and any(k.startswith("visual.") for k in changed)
    hist = json.loads((Path(ft.paths["model"]) / "history.json").read_text())
    lrs = [s["lr"] for s in hist["steps"]]
    assert lrs[0] < max(lrs) and lrs[-1] == pytest.approx(0, abs=1e-12)  # warm-up, then cosine to 0
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2] and all("val_top1" in e for e in hist["epochs"])
    run = client.get_run(ft.run_id)
    assert run.data.tags["mlflow.parentRunId"] == pipeline["parent"]
    assert run.data.params["templates"] == json.dumps(json.loads(Path(pipeline["prompt"].paths["prompt"])
                                                                 .read_text())["templates"])
    assert {"lr_image", "lr_text", "lr_fusion", "grad_norm", "logit_scale", "clips_per_s"} <= set(run.data.metrics)
    assert run.data.metrics["lr_fusion"] == pytest.approx(10 * run.data.metrics["lr_text"])
    assert len(client.get_metric_history(ft.run_id, "val_top1")) == 2


def test_evaluate_cli_multiview_zero_shot_and_plots(pipeline):
    ev = pipeline["out"] / "eval"
    m = json.loads((ev / "metrics.json").read_text())
    assert m["views"] == 6 and m["n"] == 4 and m["labels"] == SEEN
    assert sum(map(sum, m["confusion"])) == 4 and len(m["confusion"]) == 4
    assert set(m["per_class"]) == set(SEEN) and 0 <= m["mean_class_acc"] <= 1
    assert m["heldout_labels"] == HELDOUT and m["zero_shot_n"] == 4 and m["clips_per_s"] > 0
    for name in ("confusion.png", "per_class.png", "zero_shot_confusion.png", "training_curves.png"):
        assert (ev / name).read_bytes().startswith(PNG_MAGIC), name
    run = _runs_by_stage(pipeline["client"], pipeline["parent"])["evaluate"]
    assert run.data.metrics["top1"] == pytest.approx(m["top1"])
    assert "class_acc/moving left" in run.data.metrics
    assert {"metrics.json", "confusion.png"} <= {a.path for a in pipeline["client"].list_artifacts(run.info.run_id)}


def test_stage_functions_and_clis_round_out(pipeline, prepared, tmp_path, capsys):
    """The stages not yet driven one way: pretrain (import only) and evaluate as functions, prompt and finetune via
    the CLI, with tracking off and a frozen tower."""
    imp = pretrain(PretrainConfig(model="tiny-8", fusion="meanP", out_dir=str(tmp_path / "imp"), tracking=False))
    cfg = json.loads((Path(imp.paths["model"]) / "config.json").read_text())
    assert cfg["fusion"]["kind"] == "meanP" and imp.run_id is None and imp.metrics["global_step"] == 0
    res = _run_cli(["prompt", "--data", str(prepared), "--model", imp.paths["model"], "--out-dir",
                    str(tmp_path / "pr"), "--rule", "all", "--no-tracking", "--num-workers", "0"], capsys)
    assert len(json.loads(Path(res["paths"]["prompt"]).read_text())["templates"]) == 16
    res = _run_cli(["finetune", "--data", str(prepared), "--model", imp.paths["model"], "--out-dir",
                    str(tmp_path / "ft"), "--max-steps", "1", "--batch-size", "4", "--freeze", "image", "--warmup-epochs", "0",
                    "--no-tracking", "--num-workers", "0", "--val-every", "0", "--quiet"], capsys)
    before, after = load_file(str(Path(imp.paths["model"]) / "model.safetensors")), load_file(
        str(Path(res["paths"]["model"]) / "model.safetensors"))
    frozen = [k for k in before if k.startswith("visual.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["text.token_embedding.weight"], after["text.token_embedding.weight"])
    ev = evaluate(EvaluateConfig(data=str(prepared), model=res["paths"]["model"], out_dir=str(tmp_path / "ev"),
                                 heldout=False, plots=False, tracking=False, num_workers=0))
    assert "zero_shot_top1" not in ev.metrics and 0 <= ev.metrics["top1"] <= 1 and "confusion_png" not in ev.paths


def test_clip_cache_gives_the_same_training(prepared, tmp_path):
    """--cache-clips only saves decoding: augmented clips, hence losses, are the same as without it."""
    losses = []
    for cache in (False, True):
        res = finetune(FinetuneConfig(data=str(prepared), model="tiny-8", out_dir=str(tmp_path / str(cache)),
                                      cache_clips=cache, max_steps=3, epochs=2, batch_size=4, warmup_epochs=0,
                                      lr=1e-4, flip=True, num_workers=0, val_every=0, tracking=False, quiet=True))
        hist = json.loads((Path(res.paths["model"]) / "history.json").read_text())
        losses.append([s["loss"] for s in hist["steps"]])
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_user_errors_are_one_line(prepared, tmp_path, capsys):
    assert cli_main(["evaluate", "--data", str(tmp_path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a prepared dataset" in err and len(err.splitlines()) == 1
    assert cli_main(["finetune", "--data", str(prepared), "--batch-size", "64", "--no-tracking",
                     "--out-dir", str(tmp_path / "x"), "--num-workers", "0"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err


def test_non_finite_loss_stops_after_saving_last_good_state(prepared, tmp_path):
    from actionclip.train.checkpointing import list_checkpoints
    from actionclip.train.trainer import TrainingDivergedError

    cfg = FinetuneConfig(data=str(prepared), model="tiny-8", out_dir=str(tmp_path / "nan"), lr=1e30, max_steps=3,
                         batch_size=4, warmup_epochs=0, grad_clip=0, tracking=False, num_workers=0, quiet=True)
    with pytest.raises(TrainingDivergedError, match="non-finite .* step 2"):
        finetune(cfg)
    ckpts = list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000001.pt"]


# ------------------------------------------------------------------------------------- processes: torchrun, SIGKILL
def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


def _finetune_argv(prepared: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--data", str(prepared), "--model", "tiny-8", "--out-dir", str(out), "--batch-size", "4",
            "--lr", "1e-4", "--warmup-epochs", "0", "--no-augment", "--val-every", "0", "--quiet",
            "--experiment", "proc-tests", *extra]


def test_torchrun_two_processes_equal_one_process_on_the_global_batch(prepared, tmp_path):
    """Rank r gets its slice of the same global batch and features are gathered, so the losses match a single
    process on that batch: the first step's, and the second step's (which also checks that the update matched)."""
    env = _env(tmp_path)
    two = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "actionclip.cli",
                          *_finetune_argv(prepared, tmp_path / "two", "--max-steps", "2", "--num-workers", "0")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = finetune(FinetuneConfig.from_dict(dict(
        data=str(prepared), model="tiny-8", out_dir=str(tmp_path / "one"), batch_size=4, lr=1e-4, warmup_epochs=0,
        augment=False, val_every=0, quiet=True, max_steps=2, num_workers=0, tracking=False)))
    h1 = json.loads((Path(one.paths["model"]) / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "model" / "history.json").read_text())
    assert len(h1["steps"]) == len(h2["steps"]) == 2
    for s1, s2 in zip(h1["steps"], h2["steps"]):
        assert s1["loss"] == pytest.approx(s2["loss"], rel=1e-5, abs=1e-6)
    # only rank 0 talked to MLflow: one run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("proc-tests").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_sigkill_then_resume_equals_uninterrupted(prepared, tmp_path):
    """A fine-tune killed (SIGKILL) after its first checkpoint resumes automatically from out_dir and ends with the
    same weights as an uninterrupted run; the MLflow run is re-opened, not duplicated."""
    env = _env(tmp_path)
    # 12 train clips / batch 4 = 3 steps per epoch; 2 epochs; checkpoints every 2 steps and at epoch ends
    extra = ("--epochs", "2", "--checkpoint-every", "2", "--num-workers", "1", "--seed", "3")
    # the reference runs in this process with the subprocesses' thread count (OMP_NUM_THREADS=1): same arithmetic
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from actionclip.train.cli import register  # the same parser the subprocesses use
        import argparse

        parser = argparse.ArgumentParser()
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(_finetune_argv(prepared, tmp_path / "ref", *extra) + ["--no-tracking", "--augment"])
        from actionclip.train.cli import config_from_args

        finetune(config_from_args(args))
    finally:
        torch.set_num_threads(threads)

    argv = [sys.executable, "-m", "actionclip.cli", *_finetune_argv(prepared, tmp_path / "run", *extra), "--augment"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "run" / "checkpoints" / "step-00000002.pt"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "model").exists()  # it really died before finishing

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stderr
    result = json.loads(again.stdout)
    assert result["metrics"]["global_step"] == 6
    w_ref = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    w_run = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.equal(w_ref[k], w_run[k]) for k in w_ref), "resumed run diverged from the uninterrupted one"
    h_ref = json.loads((tmp_path / "ref" / "model" / "history.json").read_text())
    h_run = json.loads((tmp_path / "run" / "model" / "history.json").read_text())
    assert [s["loss"] for s in h_ref["steps"]] == [s["loss"] for s in h_run["steps"]]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("proc-tests").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == result["run_id"]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["resumed_from_step"] in ("2", "3")


def test_compiled_finetune_never_recompiles(prepared, tmp_path):
    """Under torch.compile every batch's token ids have one width (the longest prompt of the run), so the prompts a
    batch happens to draw never change a shape: dynamo compiles the training step once. (Per-batch trimming compiled
    it twice here, the second time when a batch's longest prompt first changed, which in a long run can be any step;
    that dynamic-shape compile took 80 s of this test's 90.)"""
    import torch._dynamo
    from torch._dynamo.utils import counters

    templates = ["{}", "a video of a person doing the action of {}, filmed from far away"]
    (tmp_path / "prompt.json").write_text(json.dumps({"templates": templates}))
    torch._dynamo.reset()
    counters.clear()
    res = finetune(FinetuneConfig(data=str(prepared), model="tiny-8", out_dir=str(tmp_path / "ft"), compile=True,
                                  prompt=str(tmp_path / "prompt.json"), batch_size=1, epochs=1, max_steps=6,
                                  val_every=0, num_workers=0, tracking=False, quiet=True, resume="never"))
    compiled = counters["frames"]["total"]
    torch._dynamo.reset()
    assert res.metrics["global_step"] == 6 and res.metrics["clips_per_s"] > 0
    assert compiled == 1
