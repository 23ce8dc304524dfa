"""What ``actionclip pipeline run`` shows a person: one line per stage as it starts and ends (time, headline
metric), a progress bar with ETA inside the training stages, and a closing summary. Everything the runner prints
(task logs, kfp.local's output dumps, its warnings) goes to a log file instead, whose path is printed first.

The console reads only what the tasks leave behind (their ``executor_output.json`` and artifacts) and the lines the
runner prints, so it works the same for any pipeline parameters.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# the per-epoch line a training stage prints in quiet mode (actionclip.train.progress.Progress.epoch_done)
_EPOCH = re.compile(r"epoch (\d+) step (\d+)/(\d+) .*eta=(\S+)s")
_STAGE_NAMES = {"open-run": "open MLflow run", "prepare-data": "prepare data", "pretrain-model": "pre-train",
                "select-prompts": "prompt", "finetune-model": "fine-tune", "evaluate-model": "evaluate",
                "register-model": "register", "close-run": "close MLflow run"}


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _task_outputs(run_dir: Path | None, task: str) -> tuple[dict[str, dict], dict[str, Any]]:
    """(artifact name -> metadata, output parameters) of a finished task, empty when it left none."""
    out = _read_json(run_dir / task / "executor_output.json") if run_dir else None
    if not isinstance(out, dict):
        return {}, {}
    meta = {name: (a.get("artifacts") or [{}])[0].get("metadata", {}) for name, a in out.get("artifacts", {}).items()}
    return meta, out.get("parameterValues") or {}


def headline(run_dir: Path | None, task: str) -> str:
    """The one metric (or fact) that says what a finished task did."""
    meta, values = _task_outputs(run_dir, task)
    m = meta.get("metrics", {})
    if task == "open-run" and values.get("Output"):
        return f"parent run {values['Output']}"
    if task == "prepare-data" and "dataset" in meta:
        d = meta["dataset"]
        return (f"{int(d.get('num_videos', 0))} videos, {int(d.get('num_labels', 0))} actions to fine-tune + "
                f"{int(d.get('num_heldout_labels', 0))} held out")
    if task == "pretrain-model" and "model" in meta:
        steps = int(m.get("global_step", 0))
        source = str(meta["model"].get("source", "?"))
        text = f"from {source if source.startswith('shipped:') else Path(source).name}"
        text += f", {steps} caption steps" if steps else " (weights imported, no caption steps)"
        zs = m.get("heldout_zero_shot_top1", m.get("zero_shot_heldout_top1"))
        return text + (f", held-out zero-shot {_fmt(zs)}" if zs is not None else "")
    if task == "select-prompts" and m:
        return (f"kept {int(m.get('templates_kept', 0))} of {int(m.get('templates_scored', 0))} templates, "
                f"zero-shot val top-1 {_fmt(m.get('zero_shot_top1'))}")
    if task == "finetune-model" and m:
        score = (f"val top-1 {_fmt(m['val_top1'])}" if "val_top1" in m
                 else f"train loss {_fmt(m.get('train_loss'))} (scored by evaluate)")
        return f"{int(m.get('global_step', 0))} steps, {score}"
    if task == "evaluate-model" and m:
        return (f"val top-1 {_fmt(m.get('top1'))}, held-out zero-shot {_fmt(m.get('zero_shot_top1'))} "
                f"(chance {_fmt(m.get('zero_shot_chance'))})")
    if task == "register-model" and "registered" in meta:
        r = meta["registered"]
        return f"{r.get('model_uri', '?')}" + (" (new champion)" if r.get("promoted") else " (challenger)")
    return ""


@dataclass
class StageLine:
    task: str
    seconds: float
    status: str
    metric: str


@dataclass
class Console:
    """Receives every line the runner prints; writes stage lines, a progress bar and the summary to ``out`` and
    the full text to ``log_path``.

    Args:
        out: where the person reads (stdout).
        log_path: the full runner output (task logs, kfp.local output dumps, runner warnings).
        verbose: also echo the full runner output to ``out`` (the stage lines and summary still come).
        progress: show a tqdm bar inside training stages (default: when ``out`` is a terminal).
    """

    out: TextIO
    log_path: Path
    verbose: bool = False
    progress: bool | None = None
    stages: list[StageLine] = field(default_factory=list)
    run_dir: Path | None = None
    _log: Any = None
    _bar: Any = None

    def __post_init__(self) -> None:
        self.log_path = Path(self.log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)  # line-buffered: tail -f works
        if self.progress is None:
            self.progress = bool(getattr(self.out, "isatty", lambda: False)())

    # ------------------------------------------------------------------------------------------- runner side
    def raw(self, text: str) -> None:
        """Runner text as printed (newlines included)."""
        self._log.write(text)
        if self.verbose:
            self.out.write(text)

    def warning(self, text: str) -> None:
        """A warning the runner raised (kept in the log; shown with ``verbose``)."""
        self.raw(text if text.endswith("\n") else text + "\n")

    def line(self, line: str) -> None:
        """One complete runner line (ANSI codes removed): drives the progress bar."""
        m = _EPOCH.search(line)
        if m and self.progress:
            step, total = int(m.group(2)), int(m.group(3))
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="step", desc="  training", file=self.out, dynamic_ncols=True,
                                 leave=False)
            self._bar.total = total
            self._bar.update(step - self._bar.n)

    def say(self, text: str = "") -> None:
        self._close_bar()
        self.out.write(text + "\n")
        self.out.flush()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -------------------------------------------------------------------------------------------- stage side
    def started(self, task: str) -> None:
        self.say(f"> {_STAGE_NAMES.get(task, task):<17} {task} ...")

    def finished(self, task: str, seconds: float, status: str) -> None:
        metric = headline(self.run_dir, task) if status == "SUCCESS" else "FAILED"
        self.stages.append(StageLine(task, seconds, status, metric))
        mark = "ok" if status == "SUCCESS" else status
        self.say(f"  {_STAGE_NAMES.get(task, task):<17} {mark} in {seconds:6.1f} s   {metric}")

    def close(self) -> None:
        self._close_bar()
        self._log.close()

    # ---------------------------------------------------------------------------------------------- summary
    def summary(self, run: Any) -> str:
        """The closing table: stage, time, metric; prompts; zero-shot and fine-tuned accuracy against chance;
        where the MLflow store and the registered model are; what to try next."""
        rows = [(_STAGE_NAMES.get(s.task, s.task), f"{s.seconds:.1f} s", s.metric) for s in self.stages]
        rows.append(("total", f"{run.seconds:.1f} s", "succeeded" if run.succeeded else "FAILED"))
        w0 = max(len(r[0]) for r in rows + [("stage", "", "")])
        w1 = max(len(r[1]) for r in rows + [("", "time", "")])
        lines = ["", "summary", f"  {'stage':<{w0}}  {'time':>{w1}}  metric", f"  {'-' * w0}  {'-' * w1}  {'-' * 6}"]
        lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
        lines.append("")
        lines += self._results(run)
        return "\n".join(lines)

    def _results(self, run: Any) -> list[str]:
        out: list[str] = []
        rd = run.run_dir
        prompt = _read_json(rd / "select-prompts" / "prompt") if rd else None
        scores = (prompt or {}).get("scores") or {}
        if scores:
            best = max(scores, key=lambda t: scores[t])
            worst = min(scores, key=lambda t: scores[t])
            split = (prompt or {}).get("split", "val")
            out.append(f"  prompts      best  {scores[best]:.3f}  {best!r}   ({len(scores)} templates scored "
                       f"zero-shot on {split})")
            out.append(f"               worst {scores[worst]:.3f}  {worst!r}")
        ev = _read_json(rd / "evaluate-model" / "evaluation" / "metrics.json") if rd else None
        ds = rd / "prepare-data" / "dataset" if rd else None
        if isinstance(ev, dict):
            held = ev.get("heldout_labels") or _labels(ds, "heldout_labels.txt")
            if ev.get("zero_shot_top1") is not None:
                chance = ev.get("zero_shot_chance") or (1 / len(held) if held else float("nan"))
                out.append(f"  zero-shot    held-out top-1 {ev['zero_shot_top1']:.3f} vs chance {chance:.3f} "
                           f"({ev['zero_shot_top1'] / chance:.1f}x) on {len(held)} actions never fine-tuned on"
                           + (f": {', '.join(held)}" if held else ""))
            labels = ev.get("labels") or _labels(ds, "labels.txt")
            per = ev.get("per_class") or {}
            chance = 1 / len(labels) if labels else float("nan")
            text = f"  fine-tuned   val top-1 {ev.get('top1', float('nan')):.3f} vs chance {chance:.3f}"
            if per:
                low = min(per, key=lambda k: per[k])
                text += f"; lowest class {low!r} {per[low]:.3f}"
            out.append(text)
        out.append(f"  MLflow       {run.tracking_uri}")
        reg = run.registered or {}
        if reg:
            aliases = ", ".join(reg.get("aliases") or []) or "none"
            out.append(f"  registered   {reg.get('model_uri')}  (aliases: {aliases})")
        out.append(f"  outputs      {rd}")
        out.append(f"  full log     {self.log_path}")
        out.append("")
        out.append("next")
        out.append(f"  mlflow ui --backend-store-uri {run.tracking_uri}")
        name = reg.get("name", "actionclip")
        video = _one_video(ds)
        if video:
            out.append(f"  actionclip predict {video} --model models:/{name}@champion")
            out.append(f"  actionclip predict {video} --model models:/{name}@champion --labels "
                       f"\"moving left\" \"moving right\" \"standing still\"   # zero-shot: any labels")
        out.append(f"  mlflow models serve -m models:/{name}@champion --env-manager local -h 127.0.0.1 -p 5001")
        return out


def _labels(dataset: Path | None, name: str) -> list[str]:
    try:
        return [ln for ln in (dataset / name).read_text(encoding="utf-8").splitlines() if ln.strip()] if dataset else []
    except OSError:
        return []


def _one_video(dataset: Path | None) -> str:
    """A validation video of the run's dataset, for the example commands."""
    try:
        with open(dataset / "manifest.jsonl", encoding="utf-8") as fh:  # type: ignore[operator]
            for line in fh:
                row = json.loads(line)
                if row.get("split") == "val":
                    return str(row["path"])
    except (OSError, TypeError, ValueError, KeyError):
        pass
    return ""
