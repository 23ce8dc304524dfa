"""Run the pipeline on this machine with ``kfp.local`` (SubprocessRunner, current interpreter, no containers).

Everything lands under one working directory:

    <workdir>/pipeline-runs/actionclip-<timestamp>/<task>/<output>   KFP artifacts of each run
    <workdir>/mlflow.db (+ the tracking module's artifact folder)    MLflow tracking store and model registry
    <workdir>/data/synthetic/                                        generated clips (the "shared storage")
    <work_root>/<KFP run id>/<stage>/                                stage scratch when work_root is given
    <workdir>/.kfp-cache/                                            kfp.local's task cache
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from actionclip.errors import ActionCLIPError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


class PipelineRunError(ActionCLIPError):
    """A local pipeline run failed; the message names the failing stage and its own error."""


@dataclass
class TaskTiming:
    """One task's wall time as the orchestrator saw it (process start to exit) and the part of it spent in the
    library call (``stage_seconds``; the rest is machinery: process start, imports, artifact I/O)."""

    task: str
    seconds: float
    status: str
    stage_seconds: float | None = None

    @property
    def overhead_seconds(self) -> float | None:
        return None if self.stage_seconds is None else max(self.seconds - self.stage_seconds, 0.0)


@dataclass
class LocalRun:
    """What a local run produced."""

    workdir: Path
    run_dir: Path | None  # <workdir>/pipeline-runs/<job name>
    job_name: str
    tracking_uri: str
    succeeded: bool
    seconds: float
    timings: list[TaskTiming] = field(default_factory=list)
    registered: dict[str, Any] = field(default_factory=dict)  # register step's JSON (name, version, aliases, ...)
    error: dict[str, str] | None = None  # {"stage", "type", "message"} of the failing stage

    def output(self, task: str, name: str) -> Path:
        """Path of a task's output artifact, e.g. ``run.output("finetune-model", "model")``."""
        if self.run_dir is None:
            raise FileNotFoundError("the run produced no output directory")
        return self.run_dir / task / name


class _LineTee(io.TextIOBase):
    """A stdout stand-in that forwards text (unless quiet) and hands each complete line to a callback."""

    def __init__(self, target: TextIO, on_line: Callable[[str], None], quiet: bool) -> None:
        self._target, self._on_line, self._quiet, self._buf = target, on_line, quiet, ""

    def write(self, text: str) -> int:
        if not self._quiet:
            self._target.write(text)
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._on_line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False


class _ConsoleSink(io.TextIOBase):
    """The raw runner output, handed to a console (which keeps it in its log file)."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def write(self, text: str) -> int:
        self._console.raw(text)
        return len(text)

    def flush(self) -> None:
        pass


def _newest_run_dir(root: Path, before: set[Path]) -> Path | None:
    """The run folder kfp.local created under ``root`` since ``before`` was listed."""
    new_dirs = sorted((p for p in set(root.iterdir()) - before if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return new_dirs[-1] if new_dirs else None


def local_paths(workdir: str | Path) -> dict[str, Path]:
    """The folders a local run uses under ``workdir`` (absolute)."""
    root = Path(workdir).resolve()
    return {
        "workdir": root,
        "pipeline_root": root / "pipeline-runs",
        "mlflow_db": root / "mlflow.db",
        "synthetic_dir": root / "data" / "synthetic",
        "cache_root": root / ".kfp-cache",
    }


def local_arguments(workdir: str | Path, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline arguments for a local run: synthetic clips under the workdir, then the caller's ``params`` on top.

    Stage scratch (checkpoints) goes to temporary folders removed after each stage unless ``work_root`` is given
    (e.g. ``<workdir>/work`` to inspect or resume checkpoints).
    """
    paths = local_paths(workdir)
    # the cluster default (/data/work) names the data volume, which a local run does not have
    return {"synthetic_dir": str(paths["synthetic_dir"]), "work_root": "", **(params or {})}


def run_local(
    workdir: str | Path = ".",
    params: Mapping[str, Any] | None = None,
    *,
    tracking_uri: str | None = None,
    cache: bool = True,
    quiet: bool = False,
    pipeline: Any = None,
    console: Any = None,
) -> LocalRun:
    """Run the whole pipeline locally and describe the outcome.

    Args:
        workdir: folder for every output (created).
        params: pipeline parameters overriding the defaults (see ``pipelines.pipeline``).
        tracking_uri: MLflow tracking URI; default ``sqlite:///<workdir>/mlflow.db``.
        cache: use kfp.local's task cache (as a cluster would); the pipeline design keeps it from reusing
            anything that depends on the run (see docs/pipeline.md).
        quiet: do not echo the task logs.
        console: a ``pipelines.console.Console``: it gets every runner line and warning (for its log file) and
            shows stage lines and progress instead of the raw runner output.
        pipeline: the pipeline function (default ``pipelines.pipeline.actionclip_pipeline``).

    Raises:
        PipelineRunError: a stage failed; the message is that stage's own error. Outputs written before the
            failure stay where they are.
    """
    from kfp import local

    from components._runtime import TIME_MARKER, parse_error_line, parse_marker

    if pipeline is None:
        from pipelines.pipeline import actionclip_pipeline as pipeline

    from pipelines.params import check_names

    check_names(params or {})
    paths = local_paths(workdir)
    for key in ("pipeline_root", "cache_root"):
        paths[key].mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{paths['mlflow_db']}"
    arguments = local_arguments(paths["workdir"], params)

    errors: list[dict[str, str]] = []
    timings: list[TaskTiming] = []
    started: dict[str, float] = {}
    stage_seconds: dict[str, float] = {}

    def on_line(line: str) -> None:
        record = parse_error_line(line)
        if record:
            errors.append(record)
            return
        timing = parse_marker(line, TIME_MARKER)
        if timing and started:  # kfp.local runs one task at a time: the marker belongs to the running task
            task = next(reversed(started))
            stage_seconds[task] = stage_seconds.get(task, 0.0) + float(timing.get("seconds", 0.0))
        elif m := _START.search(line):
            started[m.group(1)] = time.perf_counter()
            if console is not None:
                console.started(m.group(1))
        elif (m := _END.search(line)) and m.group(1) in started:
            task = m.group(1)
            timings.append(TaskTiming(task, time.perf_counter() - started.pop(task), m.group(2),
                                      stage_seconds.pop(task, None)))
            if console is not None:
                console.run_dir = _newest_run_dir(paths["pipeline_root"], before)
                console.finished(task, timings[-1].seconds, timings[-1].status)
        if console is not None:
            console.line(line)

    before = set(paths["pipeline_root"].iterdir())
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GIT_PYTHON_REFRESH")}
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the task subprocesses inherit it
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(paths["pipeline_root"]),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=str(paths["cache_root"]),
    )
    stdout = sys.stdout
    sys.stdout = _LineTee(_ConsoleSink(console) if console is not None else stdout, on_line,
                          quiet and console is None)
    t0 = time.perf_counter()
    failure: BaseException | None = None
    with warnings.catch_warnings():
        if console is not None:  # kfp.local's warnings about settings it ignores go to the console's log
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: console.warning(
                warnings.formatwarning(message, category, filename, lineno, line))
        try:
            pipeline(**arguments)
        except RuntimeError as exc:  # kfp.local reports any failed task this way
            failure = exc
        finally:
            sys.stdout = stdout
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - t0

    run_dir = _newest_run_dir(paths["pipeline_root"], before)
    run = LocalRun(
        workdir=paths["workdir"], run_dir=run_dir, job_name=run_dir.name if run_dir else "", tracking_uri=uri,
        succeeded=failure is None, seconds=seconds, timings=timings, error=errors[0] if errors else None,
    )
    registered = run.output("register-model", "registered") if run_dir else None
    if registered is not None and registered.is_file():
        run.registered = json.loads(registered.read_text(encoding="utf-8"))
    if failure is not None:
        if run.error:
            raise PipelineRunError(
                f"stage {run.error['stage']!r} failed: {run.error['type']}: {run.error['message']}"
                f" (outputs so far: {run_dir})"
            ) from failure
        raise PipelineRunError(f"pipeline failed: {_ANSI.sub('', str(failure))} (outputs so far: {run_dir})") from failure
    return run


def describe(run: LocalRun) -> str:
    """A short human summary: where outputs, the MLflow store and the registered model are, and stage times."""
    lines = [
        f"pipeline run   {run.job_name}  ({'succeeded' if run.succeeded else 'FAILED'} in {run.seconds:.0f} s)",
        f"outputs        {run.run_dir}",
        f"MLflow store   {run.tracking_uri}   (browse: mlflow ui --backend-store-uri {run.tracking_uri})",
    ]
    if run.registered:
        r = run.registered
        aliases = ", ".join(r.get("aliases") or []) or "none"
        lines.append(f"registered     {r.get('model_uri')}  (aliases: {aliases}; promoted: {r.get('promoted')})")
    if run.timings:
        lines.append("stage times    " + ", ".join(f"{t.task} {t.seconds:.1f}s" for t in run.timings))
    return "\n".join(lines)
