"""``actionclip pretrain | prompt | finetune | evaluate``.

Every stage config field is a flag (``--out-dir``, ``--lr``, ``--no-augment``, ``--freeze image text``); ``--config
FILE`` (YAML/JSON) sets defaults that flags then override. The stage's ``StageResult`` is printed as JSON on stdout.
Heavy imports happen inside the command function, so building the parser imports no torch.
"""
from __future__ import annotations

import argparse
import typing
from typing import Any

from actionclip.train.config import STAGE_CONFIGS, StageConfig, field_help

HELP = {
    "pretrain": "initialise a model from a checkpoint/preset; optionally contrastive video-caption pre-training",
    "prompt": "score prompt templates by zero-shot accuracy on a split; write prompt.json",
    "finetune": "fine-tune end to end with ActionCLIP's objective (resumable, distributed with torchrun)",
    "evaluate": "multi-view evaluation, zero-shot on held-out labels, metrics.json and plots",
}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[StageConfig]) -> None:
    """One flag per dataclass field; unset flags stay absent from the namespace (default SUPPRESS)."""
    comments = field_help(cls)
    defaults = cls()
    for name, tp in cls.field_types().items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_ = f"{comments.get(name, '')} (default: {default!r})".replace("%", "%%").strip()
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            parser.add_argument(flag, nargs="*", type=item, metavar=item.__name__.upper(), **kw)
        else:
            parser.add_argument(flag, type=str, metavar=getattr(tp, "__name__", "VALUE").upper(), **kw)


def register(subparsers: argparse._SubParsersAction) -> None:
    for stage, cls in STAGE_CONFIGS.items():
        p = subparsers.add_parser(stage, help=HELP[stage], description=HELP[stage] + ".")
        p.add_argument("--config", metavar="FILE", help="YAML or JSON file of config fields (flags override it)")
        p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
        add_config_arguments(p, cls)
        p.set_defaults(func=_run, stage=stage)


def config_from_args(args: argparse.Namespace) -> StageConfig:
    cls = STAGE_CONFIGS[args.stage]
    overrides = {k: v for k, v in vars(args).items() if k in cls.field_types()}
    if args.config:
        return cls.from_file(args.config, overrides)
    return cls.from_dict(overrides)


def _run(args: argparse.Namespace) -> int:
    import json

    cfg = config_from_args(args)
    import actionclip.train as train

    result = getattr(train, args.stage)(cfg)
    print(json.dumps(result.to_dict(), indent=2))
    return 0
