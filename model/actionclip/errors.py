"""Exception types shared across the library. User-facing errors derive from ``ActionCLIPError`` so the CLI can
print them as one line instead of a traceback."""
from __future__ import annotations


class ActionCLIPError(Exception):
    """Base class for errors caused by the user's input (files, configs, requests)."""


class CheckpointError(ActionCLIPError, ValueError):
    """A checkpoint could not be read, recognised or mapped onto the model."""


class ConfigError(ActionCLIPError, ValueError):
    """An invalid model or stage configuration (unknown preset, bad field, impossible value)."""
