"""The ``actionclip`` command line.

Each area of the library owns its sub-commands in its own module (listed in ``COMMAND_MODULES``); packages built on
the library (the Kubeflow pipeline) add theirs through the ``actionclip.commands`` entry-point group of their
distribution (pyproject.toml), so the library never imports them. Either way a command module exposes
``register(subparsers)`` and keeps heavy imports (torch, mlflow, kfp) inside its command functions so that
``actionclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from typing import Callable, Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "actionclip.model_cli",
    "actionclip.data.cli",
    "actionclip.train.cli",
    "actionclip.serving.cli",
)
COMMAND_GROUP = "actionclip.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionclip",
        description="ActionCLIP video-text action recognition: data, training, pipeline, registry and serving.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for register in command_registrars():
        register(subparsers)
    return parser


def command_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The ``register`` function of every command area: the library's own, then the installed plugins'."""
    own = [importlib.import_module(name).register for name in COMMAND_MODULES]
    return own + [ep.load() for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)]


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
