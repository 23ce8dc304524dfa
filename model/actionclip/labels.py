"""Label files: one label per line, as ``labels.txt`` of a prepared dataset, a serving label file or a plain label
map. The one rule everything that reads such a file follows: surrounding whitespace is stripped, and blank lines and
lines starting with ``#`` (comments) are skipped. Standard library only."""
from __future__ import annotations

import os
from pathlib import Path


def parse_labels(text: str) -> list[str]:
    """The labels of a label file's text, in file order."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_labels(path: str | os.PathLike[str], error: type[Exception] = FileNotFoundError,
                what: str = "label file") -> list[str]:
    """The labels of the file at ``path``; ``error`` (naming it ``what``) when it is missing or holds no label."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    labels = parse_labels(p.read_text(encoding="utf-8"))
    if not labels:
        raise error(f"{what} {p} has no labels")
    return labels
