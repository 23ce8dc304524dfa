"""Parse and validate prediction request rows.

A row is a mapping with the fields below; everything else is rejected with a one-line ``ServingInputError``::

    video       str     local path, file:// URI, data: URI or plain base64 of the file's bytes (required)
    labels      [str]   class names to choose from (default: the model's own label list)
    templates   [str]   prompt templates, each with exactly one "{}" (default: the model's prompt.json templates)
    top_k       int     how many labels to return (default 5, capped at the number of labels)
    return_all  bool    also return every label's probability

Rows arrive from MLflow as a pandas DataFrame (missing optional values become None/NaN) or, in-process, as a list
of dicts; both are handled here so that the predictor sees clean, typed requests.
"""
from __future__ import annotations

import base64
import binascii
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlparse

from actionclip.serving.errors import ServingInputError
from actionclip.serving.limits import ServingLimits

FIELDS = ("video", "labels", "templates", "top_k", "return_all")
DEFAULT_TOP_K = 5

_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")


@dataclass(frozen=True)
class VideoSource:
    """Where a request's video comes from: exactly one of ``path`` and ``data`` is set."""

    path: str | None = None
    data: bytes | None = None

    def describe(self) -> str:
        return self.path if self.path is not None else f"<{len(self.data or b'')} bytes>"


@dataclass(frozen=True)
class PredictRequest:
    video: VideoSource
    labels: tuple[str, ...] | None = None       # None: the model's default labels
    templates: tuple[str, ...] | None = None    # None: the model's default templates
    top_k: int = DEFAULT_TOP_K
    return_all: bool = False


def parse_requests(rows: Any, limits: ServingLimits) -> list[PredictRequest]:
    """Turn a DataFrame / list of dicts / single dict into validated requests (one per row)."""
    records = _records(rows)
    if not records:
        raise ServingInputError("the request has no rows (send at least one video)")
    if len(records) > limits.max_videos:
        raise ServingInputError(f"too many videos in one request: {len(records)} > {limits.max_videos}")
    return [_parse_row(i, row, limits) for i, row in enumerate(records)]


def _records(rows: Any) -> list[Mapping[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas DataFrame, without importing pandas here
        return rows.to_dict(orient="records")
    if isinstance(rows, Mapping):
        return [rows]
    if isinstance(rows, (list, tuple)):
        if not all(isinstance(r, Mapping) for r in rows):
            raise ServingInputError("each request row must be an object with a 'video' field")
        return list(rows)
    raise ServingInputError(f"unsupported request type {type(rows).__name__} (send rows with a 'video' field)")


def _missing(value: Any) -> bool:
    # pandas fills optional columns with None or NaN for rows that leave them out
    return value is None or (isinstance(value, float) and math.isnan(value))


def _parse_row(index: int, row: Mapping[str, Any], limits: ServingLimits) -> PredictRequest:
    where = f"row {index}"
    unknown = sorted(str(k) for k in row if k not in FIELDS)
    if unknown:
        # a field name is echoed only when it looks like one (errors never copy request data back)
        name = f" {unknown[0]!r}" if re.fullmatch(r"\w{1,32}", unknown[0]) else ""
        raise ServingInputError(f"{where}: unknown field{name} (expected one of {', '.join(FIELDS)})")
    video = row.get("video")
    if _missing(video) or (isinstance(video, str) and not video.strip()):
        raise ServingInputError(f"{where}: missing 'video' (a path, file:// URI or base64-encoded bytes)")
    source = parse_video_field(video, limits, where)

    labels = _string_list(row.get("labels"), "labels", where, limits.max_labels)
    if labels is not None:
        blank = [lab for lab in labels if not lab.strip()]
        if blank:
            raise ServingInputError(f"{where}: labels must be non-empty strings")
        dupes = [i for i, lab in enumerate(labels) if lab in labels[:i]]
        if dupes:
            raise ServingInputError(f"{where}: duplicate label at position {dupes[0]}")

    templates = _string_list(row.get("templates"), "templates", where, limits.max_templates)
    if templates is not None:
        for t in templates:
            check_template(t, where)

    top_k = row.get("top_k")
    if _missing(top_k):
        top_k = DEFAULT_TOP_K
    else:
        if isinstance(top_k, bool) or not float(top_k).is_integer():
            raise ServingInputError(f"{where}: 'top_k' must be a positive integer, got {type(top_k).__name__}")
        top_k = int(top_k)
        if not 1 <= top_k <= limits.max_top_k:
            raise ServingInputError(f"{where}: 'top_k' must be between 1 and {limits.max_top_k}, got {top_k}")

    return_all = row.get("return_all")
    return_all = False if _missing(return_all) else bool(return_all)
    return PredictRequest(source, labels, templates, top_k, return_all)


def check_template(template: str, where: str = "request") -> None:
    """A template must hold exactly one ``{}`` (where the label goes) and no other braces."""
    if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise ServingInputError(
            f"{where}: each template must contain exactly one '{{}}' where the label goes, and no other braces"
        )


def _string_list(value: Any, name: str, where: str, max_items: int) -> tuple[str, ...] | None:
    """A list-of-strings field: None when absent, else 1 to ``max_items`` strings."""
    if _missing(value):
        return None
    if isinstance(value, str):
        raise ServingInputError(f"{where}: '{name}' must be a list of strings, not one string")
    if hasattr(value, "tolist"):  # numpy arrays from the MLflow schema enforcement
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ServingInputError(f"{where}: '{name}' must be a list of strings")
    if not value:
        raise ServingInputError(f"{where}: '{name}' is empty (give at least one, or leave it out)")
    if len(value) > max_items:
        raise ServingInputError(f"{where}: too many {name}: {len(value)} > {max_items}")
    return tuple(value)


def parse_video_field(value: Any, limits: ServingLimits, where: str = "request") -> VideoSource:
    """Decide whether ``value`` is a path/URI or base64 bytes and check the size limit, without reading the video.

    Order: bytes as is; ``data:`` URI; ``file://`` URI; an existing local path; otherwise base64. Other URI schemes
    are refused: the server does not fetch remote URLs on a client's behalf.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_source(bytes(value), limits, where)
    if not isinstance(value, str):
        raise ServingInputError(f"{where}: 'video' must be a string (path, URI or base64), got {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:"):
        header, _, payload = text.partition(",")
        if ";base64" not in header:
            raise ServingInputError(f"{where}: data: URIs must be base64-encoded")
        return _bytes_source(_b64decode(payload, limits, where), limits, where)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme == "file":
        return _path_source(unquote(urlparse(text).path), limits, where)
    if scheme:
        raise ServingInputError(
            f"{where}: unsupported video URI scheme '{scheme[:16]}://' (send a local path, file:// URI or base64 "
            "bytes)"
        )
    if _looks_like_path(text):
        return _path_source(text, limits, where)
    if _BASE64_RE.match(text):
        return _bytes_source(_b64decode(text, limits, where), limits, where)
    raise ServingInputError(f"{where}: video is neither an existing file nor base64-encoded bytes")


def _looks_like_path(text: str) -> bool:
    if len(text) > 4096 or "\n" in text:
        return False
    if os.path.exists(text):
        return True
    # A missing path still looks like one (separator or extension dot, which base64 never contains).
    return "." in text or text.startswith(("/", "~"))


def _path_source(path: str, limits: ServingLimits, where: str) -> VideoSource:
    if not limits.accepts_paths:
        raise ServingInputError(f"{where}: this endpoint accepts base64-encoded videos only, not paths")
    p = Path(path).expanduser()
    if limits.video_roots:
        real = p.resolve()
        if not any(real.is_relative_to(Path(root).resolve()) for root in limits.video_roots):
            raise ServingInputError(f"{where}: video path is outside the allowed directories")
    if not p.is_file():
        raise ServingInputError(f"{where}: video file not found")
    size = p.stat().st_size
    if size > limits.max_video_bytes:
        raise ServingInputError(f"{where}: video is too large: {size} bytes > {limits.max_video_bytes}")
    return VideoSource(path=str(p))


def _b64decode(payload: str, limits: ServingLimits, where: str) -> bytes:
    compact = "".join(payload.split())
    # Refuse before decoding so an oversized body costs no memory for the decoded copy.
    if len(compact) * 3 // 4 > limits.max_video_bytes + 2:
        raise ServingInputError(
            f"{where}: video is too large: about {len(compact) * 3 // 4} bytes > {limits.max_video_bytes}"
        )
    try:
        padded = compact + "=" * (-len(compact) % 4)  # clients often strip the padding
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ServingInputError(f"{where}: 'video' is not valid base64") from None


def _bytes_source(data: bytes, limits: ServingLimits, where: str) -> VideoSource:
    if not data:
        raise ServingInputError(f"{where}: video bytes are empty")
    if len(data) > limits.max_video_bytes:
        raise ServingInputError(f"{where}: video is too large: {len(data)} bytes > {limits.max_video_bytes}")
    return VideoSource(data=data)


def group_by_text(requests: Sequence[PredictRequest]) -> dict[tuple[Any, Any], list[int]]:
    """Row indices grouped by (labels, templates), so that each distinct label set is scored once per batch."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.labels, r.templates), []).append(i)
    return groups


def encode_base64(data: bytes) -> str:
    """Helper for clients: base64 text for the ``video`` field."""
    return base64.b64encode(data).decode("ascii")


def read_label_file(path: str | os.PathLike[str]) -> list[str]:
    """One label per line; blank lines and ``#`` comments are skipped (``actionclip.labels``)."""
    from actionclip.labels import read_labels

    return read_labels(path, ServingInputError)

