"""``actionclip model info|convert|presets``: inspect and import checkpoints."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect or convert model checkpoints")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True

    info = sub.add_parser("info", help="print the detected format, configuration and parameter counts")
    info.add_argument("source", help="checkpoint file, save_pretrained directory or preset name")
    info.set_defaults(func=_info)

    convert = sub.add_parser("convert", help="import any supported checkpoint into this project's format")
    convert.add_argument("source", help="OpenAI CLIP (.pt, TorchScript or state dict), ActionCLIP, MMAction2 or ours")
    convert.add_argument("out_dir", help="output directory (model.safetensors + config.json)")
    convert.add_argument("--num-frames", type=int, default=None)
    convert.add_argument("--fusion", default=None, help="meanP | Transf | Conv1D | LSTM | Transf_cls")
    convert.set_defaults(func=_convert)

    presets = sub.add_parser("presets", help="list the built-in presets")
    presets.set_defaults(func=_presets)


def _info(args: argparse.Namespace) -> int:
    import actionclip
    from actionclip.checkpoint import detect_format, read_checkpoint
    import os

    fmt = "preset"
    if os.path.exists(args.source):
        fmt = detect_format(*read_checkpoint(args.source))
    model = actionclip.load(args.source)
    counts = {name: sum(p.numel() for p in params) for name, params in model.param_groups().items()}
    print(json.dumps({"source": args.source, "format": fmt, "config": model.config.to_dict(), "parameters": counts},
                     indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    import actionclip

    model = actionclip.load(args.source, num_frames=args.num_frames, fusion=args.fusion)
    out = model.save_pretrained(args.out_dir)
    print(f"wrote {out} ({model.config.fusion.kind} fusion, {model.num_frames} frames)")
    return 0


def _presets(args: argparse.Namespace) -> int:
    import actionclip

    for name in actionclip.list_presets():
        print(name)
    return 0
