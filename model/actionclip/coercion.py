"""The one rule for on/off settings given as text (CLI flags, config files, pipeline parameters, environment
variables): true/yes/1/on and false/no/0/off, in any case, surrounding spaces ignored. Standard library only."""
from __future__ import annotations

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")


def parse_bool(text: str) -> bool:
    """``text`` as a boolean; ``ValueError`` for any other word."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {text!r}")
