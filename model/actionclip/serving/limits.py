"""Request limits of the serving path, as one dataclass.

Defaults can be set when the model is logged (``model_config`` of the pyfunc) and overridden per deployment with
environment variables, so an operator can tighten them without re-registering the model.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from actionclip.serving.errors import ServingInputError

_ENV_PREFIX = "ACTIONCLIP_SERVING_"


@dataclass(frozen=True)
class ServingLimits:
    max_video_bytes: int = 64 * 1024 * 1024   # per video, after base64 decoding
    max_labels: int = 1000                     # labels per request row
    max_templates: int = 32                    # templates per request row
    max_videos: int = 16                       # rows per request (all are decoded and batched in memory)
    max_top_k: int = 1000
    # Closed by default: a request may name a server path only when the deployment names the directories it may
    # read (video_roots, ACTIONCLIP_SERVING_VIDEO_ROOTS), or, for trusted local use (`actionclip predict`),
    # allow_paths is switched on; otherwise only base64 bytes are accepted.
    allow_paths: bool = False                  # accept any local path / file:// URI (never on a shared endpoint)
    video_roots: tuple[str, ...] = ()          # accept local paths under these directories only

    @property
    def accepts_paths(self) -> bool:
        return self.allow_paths or bool(self.video_roots)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "ServingLimits":
        """Build from a mapping (e.g. the pyfunc ``model_config``); unknown keys are ignored so that a model logged
        by a newer version still loads."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in (values or {}).items():
            if key in fields:
                kwargs[key] = _coerce(key, value)
        return cls(**kwargs)

    def with_env(self, environ: Mapping[str, str] | None = None) -> "ServingLimits":
        """Override fields from ``ACTIONCLIP_SERVING_<FIELD>`` environment variables (``video_roots`` is
        ``os.pathsep``-separated)."""
        environ = os.environ if environ is None else environ
        overrides: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            raw = environ.get(_ENV_PREFIX + f.name.upper())
            if raw is not None:
                overrides[f.name] = _coerce(f.name, raw)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["video_roots"] = list(self.video_roots)
        return d


def _coerce(name: str, value: Any) -> Any:
    """Turn strings from the environment (or JSON values) into the field's type, with a one-line error."""
    try:
        if name == "video_roots":
            if isinstance(value, str):
                return tuple(p for p in value.split(os.pathsep) if p)
            return tuple(str(p) for p in value)
        if name == "allow_paths":
            from actionclip.coercion import parse_bool

            return parse_bool(value) if isinstance(value, str) else bool(value)
        number = int(value)
        if number < 1:
            raise ValueError(value)
        return number
    except (TypeError, ValueError):
        raise ServingInputError(f"invalid serving limit {name}={value!r}") from None
