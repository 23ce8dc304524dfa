"""The ``actionclip`` command line.

Each area of the project owns its sub-commands in its own module (listed in ``COMMAND_MODULES``); a module exposes
``register(subparsers)`` and keeps heavy imports (torch, mlflow, kfp) inside its command functions so that
``actionclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "actionclip.model_cli",
    "actionclip.data.cli",
    "actionclip.train.cli",
    "actionclip.serving.cli",
    "pipelines.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionclip",
        description="ActionCLIP video-text action recognition: data, training, pipeline, registry and serving.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one readable line for user errors; tracebacks only when asked
        from actionclip.errors import ActionCLIPError

        if isinstance(exc, ActionCLIPError) and not getattr(args, "debug", False):
            print(f"actionclip {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
