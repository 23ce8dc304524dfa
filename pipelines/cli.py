"""``actionclip pipeline run|compile|submit``.

Every pipeline parameter is a flag (``--finetune-epochs 2``, ``--templates "a video of {}" "{} in a clip"``,
``--finetune-overrides '{"precision": "bf16"}'``); ``--data`` is short for ``--data-source``. kfp, torch and mlflow
are imported inside the command functions so that ``actionclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.params import param_fields, parse_value

# The MLflow experiment parameter gets a distinct flag: `submit --experiment` names the KFP experiment.
_FLAG_NAMES = {"data_source": ["--data-source", "--data"], "experiment": ["--mlflow-experiment"]}


def _add_param_flags(parser: argparse.ArgumentParser) -> None:
    from pipelines.params import defaults, help_text

    group = parser.add_argument_group("pipeline parameters (defaults: the tiny synthetic demo)")
    default_values = defaults()
    for f in param_fields():
        flags = _FLAG_NAMES.get(f.name, ["--" + f.name.replace("_", "-")])
        text = help_text(f.name)
        text = f"{text + ' ' if text else ''}(default: {json.dumps(default_values[f.name])})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": "param_" + f.name, "default": None, "help": text}
        if str(f.type).startswith("list"):
            kwargs.update(nargs="*", metavar="VALUE")
        else:
            kwargs.update(metavar=str(f.type).upper())
        group.add_argument(*flags, **kwargs)


def _given_params(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline parameters given on the command line, converted to their types."""
    out: dict[str, Any] = {}
    for f in param_fields():
        value = getattr(args, "param_" + f.name, None)
        if value is None:
            continue
        out[f.name] = list(value) if isinstance(value, list) else parse_value(f.name, value)
    return out


def _add_platform_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster settings baked into the compiled pipeline")
    group.add_argument("--image", help="project image for every task (default: components.image.IMAGE, "
                                       "or $ACTIONCLIP_IMAGE)")
    group.add_argument("--gpu-type", help="accelerator resource of GPU stages (default nvidia.com/gpu)")
    group.add_argument("--gpus", type=int, help="GPUs per GPU stage (default 1)")
    group.add_argument("--pvc", help="PVC with the videos, mounted on every task (default actionclip-data)")
    group.add_argument("--data-mount", help="where the PVC is mounted (default /data)")
    group.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE",
                       help="node label required by GPU stages (repeatable)")
    group.add_argument("--no-gpu-toleration", action="store_true",
                       help="do not tolerate the nvidia.com/gpu NoSchedule taint")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="run the Kubeflow pipeline locally, compile it, or submit it to a cluster",
        description="prepare data -> pre-train -> prompt -> fine-tune -> evaluate -> register, as a KFP v2 pipeline.",
    )
    sub = parser.add_subparsers(dest="pipeline_command", metavar="{run,compile,submit}")
    sub.required = True

    run = sub.add_parser("run", help="run the whole pipeline on this machine with kfp.local (tiny synthetic demo "
                                     "by default)")
    run.add_argument("--workdir", default=".", help="folder for the pipeline outputs, the MLflow store and the "
                                                   "synthetic data (default: current directory)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<workdir>/mlflow.db)")
    run.add_argument("--no-cache", action="store_true", help="disable kfp.local's task cache")
    run.add_argument("--quiet", action="store_true", help="print only the closing summary")
    run.add_argument("--verbose", action="store_true", help="also print the full runner output (task logs, "
                                                           "kfp.local's output dumps and warnings)")
    run.add_argument("--log-file", help="where the full runner output goes (default "
                                        "<workdir>/pipeline-logs/run-<UTC time>.log)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON (nothing else on stdout)")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_param_flags(run)
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="compile the pipeline to a KFP v2 YAML package")
    comp.add_argument("-o", "--output", default="pipeline.yaml", help="output file (default pipeline.yaml)")
    comp.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_platform_flags(comp)
    comp.set_defaults(func=cmd_compile)

    sm = sub.add_parser("submit", help="create a run on a Kubeflow Pipelines server (kfp.Client)")
    sm.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    sm.add_argument("--experiment", help="KFP experiment name (created if missing)")
    sm.add_argument("--run-name", help="KFP run name")
    sm.add_argument("--namespace", help="Kubeflow namespace (multi-user installs)")
    sm.add_argument("--package", help="submit this compiled YAML instead of compiling now")
    sm.add_argument("--pipeline-root", help="where the run's artifacts go (e.g. s3://bucket/pipelines; default: "
                                            "the server's)")
    sm.add_argument("--service-account", help="Kubernetes service account of the run's pods")
    sm.add_argument("--wait", action="store_true", help="wait for the run to finish and fail if it did")
    sm.add_argument("--timeout", type=int, default=24 * 3600, help="seconds to --wait (default 24 h)")
    sm.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_platform_flags(sm)
    _add_param_flags(sm)
    sm.set_defaults(func=cmd_submit)


def _settings(args: argparse.Namespace) -> Any:
    """PlatformSettings from the cluster flags; sets the image before the components are imported."""
    from actionclip.errors import ConfigError

    if args.image:
        if "components" in sys.modules and sys.modules["components"].IMAGE != args.image:
            raise ConfigError("--image must be set before the components are imported (set ACTIONCLIP_IMAGE)")
        os.environ["ACTIONCLIP_IMAGE"] = args.image
    from pipelines.platform import PlatformSettings

    changes: dict[str, Any] = {}
    if args.gpu_type:
        changes["gpu_type"] = args.gpu_type
    if args.gpus is not None:
        if args.gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {args.gpus}")
        changes["gpus"] = args.gpus
    if args.pvc:
        changes["pvc_name"] = args.pvc
    if args.data_mount:
        changes["data_mount"] = args.data_mount
    if args.no_gpu_toleration:
        changes["gpu_toleration"] = False
    if args.node_selector:
        selector = {}
        for item in args.node_selector:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--node-selector expects KEY=VALUE, got {item!r}")
            selector[key] = value
        changes["gpu_node_selector"] = selector
    return PlatformSettings().with_overrides(**changes)


def compile_pipeline(output: str | Path, settings: Any = None) -> Path:
    """Compile the pipeline (with ``settings``) to ``output``; returns the path."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), str(output))
    return output


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from pipelines.console import Console
    from pipelines.local import describe, local_arguments, run_local

    params = _given_params(args)
    log = Path(args.log_file or Path(args.workdir) / "pipeline-logs" / time.strftime("run-%Y%m%d-%H%M%S.log",
                                                                                     time.gmtime()))
    # the person's view goes to stdout; with --json only the JSON does, so the console moves to stderr
    console = Console(sys.stderr if args.json else sys.stdout, log.resolve(), verbose=args.verbose)
    if not args.quiet:
        from pipelines.params import defaults

        given = {**defaults(), **local_arguments(args.workdir, params)}
        start = given["weights"] or f"random initialisation (preset {given['preset']})"
        console.say(f"actionclip pipeline run: full runner output in {console.log_path}")
        if start.startswith("shipped:"):
            from actionclip.pretrained import card, shipped_dir

            name = start.split(":", 1)[1]
            zs = card(name).get("zero_shot", {})
            start = (f"the shipped checkpoint {name!r}: synthetic-caption-pre-trained by this project (held-out "
                     f"zero-shot {zs.get('heldout_zero_shot_top1', float('nan')):.3f} on its own data; "
                     f"{shipped_dir(name) / 'MODEL_CARD.md'})")
        console.say(f"starting from {start}")
    try:
        run = run_local(args.workdir, params, tracking_uri=args.tracking_uri, cache=not args.no_cache,
                        quiet=args.quiet, console=None if args.quiet and not args.verbose else console)
    finally:
        console.close()
    if args.json:
        print(json.dumps({
            "job_name": run.job_name, "outputs": str(run.run_dir), "tracking_uri": run.tracking_uri,
            "registered": run.registered, "seconds": round(run.seconds, 2),
            "stage_seconds": {t.task: round(t.seconds, 2) for t in run.timings},
        }, indent=2))
    elif args.quiet:
        print(describe(run))
    else:
        print(console.summary(run))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, _settings(args))
    from components.image import IMAGE

    print(f"compiled pipeline -> {path} (image {IMAGE})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import tempfile

    import kfp

    from actionclip.errors import ActionCLIPError

    params = _given_params(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or str(compile_pipeline(Path(tmp) / "pipeline.yaml", _settings(args)))
        try:
            client = kfp.Client(host=args.host, namespace=args.namespace)
            result = client.create_run_from_pipeline_package(
                package, arguments=params, run_name=args.run_name, experiment_name=args.experiment,
                namespace=args.namespace, pipeline_root=args.pipeline_root, service_account=args.service_account,
            )
        except Exception as exc:  # connection refused, auth, API errors: one line naming the server
            raise ActionCLIPError(f"could not submit to {args.host}: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    print(f"submitted run {result.run_id} to {args.host}")
    if args.wait:
        detail = client.wait_for_run_completion(result.run_id, timeout=args.timeout)
        state = str(getattr(detail, "state", "") or "")
        print(f"run {result.run_id} finished: {state}")
        if state.upper() not in ("SUCCEEDED", "SUCCESS"):
            raise ActionCLIPError(f"run {result.run_id} finished with state {state}")
    return 0
