"""Pipeline benchmark: wall time per stage of the local demo (`actionclip pipeline run`) and the share of the
pipeline machinery (task process start, imports, artifact I/O) in it.

For every task kfp.local runs, the orchestrator's wall time (process start to exit) is split into the seconds spent
inside the library call (printed by the component body) and the rest, the machinery overhead. A bare task process
(interpreter + kfp + actionclip + mlflow imports, no work) is timed too, to show where the overhead comes from.
Targets (issue 5): whole default run < 300 s on a 2-core machine; machinery overhead < 10 % of it.

    python benchmarks/bench_pipeline.py                    # the default demo (the embedded defaults)
    python benchmarks/bench_pipeline.py --tiny             # the test suite's tiny configuration
    python benchmarks/bench_pipeline.py --param finetune_epochs=5 --workdir /tmp/bench

Numbers on a shared machine are noisy: the CPU seconds of the whole run (user + sys, children included) are
printed beside the wall time so that a loaded machine can be recognised.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = {
    "synthetic_classes": ["moving left", "moving right", "growing", "shaking"], "heldout_labels": ["shaking"],
    "synthetic_clips_per_class": 3, "synthetic_pretrain_clips": 1, "synthetic_frames": 8, "val_fraction": 0.34,
    "pretrain_epochs": 1.0, "pretrain_max_steps": 1, "pretrain_batch_size": 4, "prompt_keep": 4,
    "finetune_epochs": 1.0, "finetune_max_steps": 2, "finetune_warmup_epochs": 0.0, "finetune_batch_size": 4,
    "eval_batch_size": 8, "num_workers": 0, "device": "cpu",
}


def bare_task_seconds(repeats: int = 3) -> float:
    """Median wall time of a process doing a task's imports and nothing else."""
    code = "import kfp.dsl, actionclip, actionclip.tracking, mlflow"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="working directory (default: a fresh temporary one)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny configuration instead of the defaults")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="override a pipeline parameter")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    from pipelines.local import run_local
    from pipelines.params import parse_value

    params = dict(TINY) if args.tiny else {}
    for item in args.param:
        name, _, value = item.partition("=")
        params[name] = parse_value(name, value)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

    bare = bare_task_seconds()
    cpu0 = cpu_seconds()
    run = run_local(workdir, params, quiet=True)
    cpu = cpu_seconds() - cpu0

    rows = []
    print(f"\nlocal pipeline ({'tiny' if args.tiny else 'default'} configuration), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'task':<16}{'wall s':>9}{'stage s':>9}{'machinery s':>13}{'machinery %':>13}")
    for t in run.timings:
        stage = t.stage_seconds or 0.0
        over = t.overhead_seconds or t.seconds
        rows.append({"task": t.task, "wall_s": t.seconds, "stage_s": stage, "overhead_s": over})
        print(f"{t.task:<16}{t.seconds:>9.1f}{stage:>9.1f}{over:>13.1f}{100 * over / t.seconds:>12.0f}%")
    wall = sum(r["wall_s"] for r in rows)
    over = sum(r["overhead_s"] for r in rows)
    print(f"{'all tasks':<16}{wall:>9.1f}{wall - over:>9.1f}{over:>13.1f}{100 * over / wall:>12.0f}%")
    orchestration = run.seconds - wall
    print(f"\nwhole run (kfp.local call)  {run.seconds:7.1f} s   (target < 300 s)   CPU {cpu:.0f} s")
    print(f"orchestrator outside tasks  {orchestration:7.1f} s")
    print(f"machinery total             {over + orchestration:7.1f} s = "
          f"{100 * (over + orchestration) / run.seconds:.1f} % of the run   (target < 10 %)")
    print(f"bare task process (python + kfp + actionclip + mlflow imports): {bare:.1f} s x {len(rows)} tasks "
          f"= {bare * len(rows):.1f} s")
    if run.registered:
        m = run.registered.get("metrics", {})
        print(f"registered {run.registered['model_uri']}: top1 {m.get('top1', float('nan')):.3f}, "
              f"zero-shot top1 {m.get('zero_shot_top1', float('nan')):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "params": params, "tasks": rows, "run_s": run.seconds, "cpu_s": cpu, "bare_task_s": bare,
            "overhead_s": over + orchestration, "registered": run.registered,
        }, indent=2))


if __name__ == "__main__":
    main()
