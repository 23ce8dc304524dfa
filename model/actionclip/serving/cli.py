"""``actionclip predict`` and ``actionclip registry register|promote|resolve|show``.

Heavy imports (torch, mlflow) happen inside the command functions so that ``actionclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "models:/actionclip@champion"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify videos with a registered model or a checkpoint (zero-shot with your own labels)",
        description="Classify videos. Labels default to the model's own label list; give --labels or --label-file "
        "for zero-shot questions. Example: actionclip predict clip.mp4 --labels 'riding a bike' 'swimming'",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--labels", nargs="+", metavar="LABEL", help="candidate labels")
    lab.add_argument("--label-file", metavar="FILE", help="candidate labels, one per line")
    p.add_argument("--template", action="append", metavar="T", dest="templates",
                   help='prompt template with one "{}" (repeatable; default: the model\'s templates)')
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="URI", help=f"registered model URI (default {DEFAULT_MODEL})")
    src.add_argument("--checkpoint", metavar="PATH", help="model directory/file (save_pretrained or imported)")
    p.add_argument("--top-k", type=int, default=5, help="labels to show per video (default 5)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantisation (CPU)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.set_defaults(func=cmd_predict)

    reg = subparsers.add_parser("registry", help="MLflow model registry: register, promote, resolve, show")
    rsub = reg.add_subparsers(dest="registry_command", metavar="ACTION")
    rsub.required = True

    r = rsub.add_parser("register", help="log a model directory as a pyfunc, register a version, set aliases")
    r.add_argument("model_dir", help="save_pretrained directory (model.safetensors + config.json)")
    r.add_argument("--metrics", required=True, help="metrics.json of the evaluation stage")
    r.add_argument("--name", default="actionclip", help="registered model name (default actionclip)")
    r.add_argument("--labels", help="labels.txt (default MODEL_DIR/labels.txt)")
    r.add_argument("--prompt", help="prompt.json of the prompt stage (default: all 16 templates)")
    r.add_argument("--metric", default="top1", help="metric compared with the champion's (default top1)")
    r.add_argument("--margin", type=float, default=0.0, help="required improvement over the champion")
    r.add_argument("--pipeline-run-id", help="lineage and idempotency key")
    r.add_argument("--dataset-hash", help="lineage: dataset manifest sha256")
    r.add_argument("--parent-checkpoint", help="lineage: checkpoint the model was fine-tuned from")
    r.add_argument("--experiment", default="actionclip")
    r.add_argument("--int8", action="store_true", help="serve this version with int8 dynamic quantisation")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_register)

    r = rsub.add_parser("promote", help="point an alias (default champion) at a version; also for rollback")
    r.add_argument("name")
    r.add_argument("version")
    r.add_argument("--alias", default="champion")
    r.set_defaults(func=cmd_promote)

    r = rsub.add_parser("resolve", help="print the storage location of a version's artifacts")
    r.add_argument("uri", help="e.g. actionclip@champion, models:/actionclip@champion, models:/actionclip/3")
    r.set_defaults(func=cmd_resolve)

    r = rsub.add_parser("show", help="list the versions of a registered model with aliases and metrics")
    r.add_argument("name", nargs="?", default="actionclip")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_show)

    for action in rsub.choices.values():
        action.add_argument("--tracking-uri", help="MLflow tracking/registry URI")


# -- predict ----------------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from actionclip.serving.errors import ServingInputError
    from actionclip.serving.requests import read_label_file

    if args.top_k < 1:
        raise ServingInputError("--top-k must be at least 1")
    labels = read_label_file(args.label_file) if args.label_file else args.labels
    videos = [str(Path(v)) for v in args.videos]
    missing = [v for v in videos if not Path(v).is_file()]
    if missing:
        raise ServingInputError(f"video file not found: {missing[0]}")
    rows: list[dict[str, Any]] = []
    for v in videos:
        row: dict[str, Any] = {"video": str(Path(v).resolve()), "top_k": args.top_k}
        if labels:
            row["labels"] = list(labels)
        if args.templates:
            row["templates"] = list(args.templates)
        rows.append(row)

    if args.checkpoint:
        results = _predict_checkpoint(args.checkpoint, rows, args.int8)
    else:
        results = _predict_registered(args.model or DEFAULT_MODEL, rows, args.int8, args.tracking_uri)

    if args.json:
        print(json.dumps([{"video": v, **r} for v, r in zip(videos, results)], indent=2))
    else:
        print(format_table(videos, results))
    return 0


def _batches(rows: list[dict[str, Any]], size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _predict_checkpoint(path: str, rows: list[dict[str, Any]], int8: bool) -> list[dict[str, Any]]:
    import dataclasses

    from actionclip.serving.limits import ServingLimits
    from actionclip.serving.predictor import VideoPredictor
    from actionclip.serving.requests import parse_requests

    base = Path(path) if Path(path).is_dir() else Path(path).parent
    labels = base / "labels.txt"
    prompt = base / "prompt.json"
    predictor = VideoPredictor.from_files(path, labels=labels if labels.is_file() else None,
                                          prompt=prompt if prompt.is_file() else None, int8=int8)
    out = []
    for chunk in _batches(rows, predictor.limits.max_videos):
        out += [p.to_dict() for p in predictor.predict(parse_requests(chunk, predictor.limits))]
    return out


def _predict_registered(uri: str, rows: list[dict[str, Any]], int8: bool, tracking_uri: str | None):
    from mlflow.exceptions import MlflowException

    import mlflow
    from actionclip.serving.errors import RegistryError, ServingInputError
    from actionclip.serving.limits import ServingLimits
    from actionclip.serving.registry import get_version, using_tracking_uri

    if uri.startswith("models:/") and not uri.startswith("models:/m-"):
        get_version(uri, tracking_uri)  # one-line error for a missing name/alias before MLflow's long one
    with using_tracking_uri(tracking_uri):
        try:
            # a local command reading the caller's own files: paths are the point here
            model = mlflow.pyfunc.load_model(uri, model_config={"allow_paths": True, **({"int8": True} if int8 else {})})
        except MlflowException as exc:
            raise RegistryError(f"cannot load {uri}: {exc.message.splitlines()[0]}") from None
    out: list[dict[str, Any]] = []
    for chunk in _batches(rows, ServingLimits().with_env().max_videos):
        try:
            out += list(model.predict(chunk))
        except MlflowException as exc:
            raise ServingInputError(exc.message.splitlines()[0]) from None
    return out


def format_table(videos: list[str], results: list[dict[str, Any]]) -> str:
    """One block per video: rank, probability, label."""
    lines = []
    for video, res in zip(videos, results):
        lines.append(video)
        for rank, (label, prob) in enumerate(zip(res["labels"], res["probs"]), 1):
            lines.append(f"  {rank:>2}. {prob:7.2%}  {label}")
    return "\n".join(lines)


# -- registry ---------------------------------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    from actionclip.serving.registry import register_model

    result = register_model(
        args.model_dir, args.metrics, args.name, labels=args.labels, prompt=args.prompt, metric=args.metric,
        margin=args.margin, pipeline_run_id=args.pipeline_run_id, dataset_hash=args.dataset_hash,
        parent_checkpoint=args.parent_checkpoint, tracking_uri=args.tracking_uri, experiment=args.experiment,
        int8=args.int8,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        state = "reused" if result.reused else "registered"
        print(f"{state} {result.model_uri} aliases={','.join(result.aliases) or '-'} ({result.reason})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from actionclip.serving.registry import promote

    promote(args.name, args.version, alias=args.alias, tracking_uri=args.tracking_uri)
    print(f"{args.name}@{args.alias} -> version {args.version}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from actionclip.serving.registry import resolve

    print(resolve(args.uri, tracking_uri=args.tracking_uri))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from actionclip.serving.registry import list_versions

    rows = list_versions(args.name, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'version':>7}  {'status':<8} {'aliases':<20} {'metric':<16} pipeline_run_id")
    for r in rows:
        metric = f"{r['metric']}={float(r['value']):.4f}" if r["metric"] and r["value"] else "-"
        print(f"{r['version']:>7}  {r['status']:<8} {','.join(r['aliases']) or '-':<20} {metric:<16} "
              f"{r['pipeline_run_id'] or '-'}")
    return 0

