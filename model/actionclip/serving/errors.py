"""Errors raised by the serving and registry code. Both are user errors (``ActionCLIPError``): the CLI prints them
as one line and the pyfunc model turns ``ServingInputError`` into an HTTP 400."""
from __future__ import annotations

from actionclip.errors import ActionCLIPError


class ServingInputError(ActionCLIPError, ValueError):
    """A prediction request is invalid: unknown field, limit exceeded, unreadable video, bad labels or templates."""


class RegistryError(ActionCLIPError, RuntimeError):
    """A registry operation cannot be done as asked (unknown model or alias, bad URI, version not READY)."""
