"""``actionclip model info|convert|presets``: inspect and import checkpoints."""
from __future__ import annotations

import argparse
import json

from actionclip.config import ACTIVATIONS  # plain data: keeps ``--help`` free of torch


def _add_activation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activation", choices=ACTIVATIONS, default=None,
                        help="the towers' MLP activation, overriding what the format assumes (weights cannot tell): "
                             "quick_gelu for OpenAI / ActionCLIP / MMAction2, gelu for open_clip's own models")
    parser.add_argument("--open-clip-model", default=None, metavar="NAME",
                        help="open_clip model name the weights come from (ViT-B-32 = gelu, ViT-B-32-quickgelu = "
                             "quick_gelu); sets its activation")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect or convert model checkpoints")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True

    info = sub.add_parser("info", help="print the detected format, the activation it assumes, the configuration and "
                                       "parameter counts")
    info.add_argument("source", help="checkpoint file, save_pretrained directory or preset name")
    _add_activation_options(info)
    info.set_defaults(func=_info)

    convert = sub.add_parser("convert", help="import any supported checkpoint into this project's format, or export "
                                             "one for OpenAI's clip / open_clip (--to openai)")
    convert.add_argument("source", help="OpenAI CLIP (.pt, TorchScript or state dict), ActionCLIP, MMAction2, "
                                        "open_clip or ours")
    convert.add_argument("out", help="--to native: output directory (model.safetensors + config.json); "
                                     "--to openai: output file, OUT.pt (or OUT.safetensors, open_clip only)")
    convert.add_argument("--to", choices=("native", "openai"), default="native",
                         help="native (default): this project's format; openai: the towers in OpenAI CLIP's key "
                              "layout, which OpenAI's clip.load and open_clip load as they are (the fusion is left "
                              "out; the activation is not stored: QuickGELU in OpenAI's clip, the model name's in "
                              "open_clip)")
    convert.add_argument("--num-frames", type=int, default=None)
    convert.add_argument("--fusion", default=None, help="meanP | Transf | Conv1D | LSTM | Transf_cls")
    _add_activation_options(convert)
    convert.set_defaults(func=_convert)

    presets = sub.add_parser("presets", help="list the built-in presets")
    presets.set_defaults(func=_presets)


def _load(args: argparse.Namespace, **kwargs):
    import actionclip

    return actionclip.load(args.source, activation=args.activation, open_clip_model=args.open_clip_model, **kwargs)


def _info(args: argparse.Namespace) -> int:
    import os

    from actionclip.checkpoint import FORMATS, find_format, read_checkpoint

    fmt, assumes = "preset", "as in the preset (quick_gelu unless it says otherwise)"
    if os.path.exists(args.source):
        source_format = find_format(*read_checkpoint(args.source))
        fmt, assumes = source_format.name, source_format.activation
    model = _load(args)
    counts = {name: sum(p.numel() for p in params) for name, params in model.param_groups().items()}
    chosen = "--activation" if args.activation else "--open-clip-model" if args.open_clip_model else "the format"
    print(json.dumps({
        "source": args.source,
        "format": fmt,
        "activation": {"vision": model.config.vision.activation, "text": model.config.text.activation,
                       "set_by": chosen, "format_assumes": assumes},
        "activation_by_format": {f.name: f.activation for f in FORMATS},
        "config": model.config.to_dict(),
        "parameters": counts,
    }, indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    model = _load(args, num_frames=args.num_frames, fusion=args.fusion)
    activation = model.config.vision.activation
    if args.to == "native":
        out = model.save_pretrained(args.out)
        print(f"wrote {out} ({model.config.fusion.kind} fusion, {model.num_frames} frames, {activation} activation)")
        return 0
    from actionclip.checkpoint import open_clip_name, save_openai

    out = save_openai(model, args.out)
    name = open_clip_name(model.config)
    where = (f"open_clip.create_model({name!r}, pretrained={str(out)!r})" if name
             else f"an open_clip model config with these shapes and quick_gelu={activation == 'quick_gelu'}")
    peers = ("; OpenAI's clip.load computes QuickGELU, so use open_clip for this GELU model" if activation == "gelu"
             else f", or clip.load({str(out)!r}) with OpenAI's clip")
    print(f"wrote {out} (OpenAI CLIP layout, {activation} towers; load it with {where}{peers})")
    if model.config.fusion.kind != "meanP":
        print(f"note: the {model.config.fusion.kind} fusion has no place in the OpenAI layout and is not in the file")
    return 0


def _presets(args: argparse.Namespace) -> int:
    import actionclip

    for name in actionclip.list_presets():
        print(name)
    return 0
