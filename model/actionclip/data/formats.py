"""Dataset annotation formats -> a flat list of ``Entry`` (path, label, caption, split).

Formats (``format=`` names):
- ``folder``: ``root/<label>/<video file or JPEG frame folder>``
- ``mmaction``: MMAction2 video list, ``relative/path.mp4 <label index>`` per line, plus a label map
- ``kinetics``: Kinetics CSV ``label,youtube_id,time_start,time_end,split`` with clips named
  ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` anywhere under the video root
- ``frames``: original ActionCLIP list ``<frame dir> <num_frames> <label index>`` (frames ``img_00001.jpg`` ...)
- ``captions``: JSON lines or CSV of video path + caption (WebVid-style ``videoid``/``page_dir``/``name`` accepted)
- ``synthetic``: the directory written by ``generate_synthetic`` (``synthetic.json`` + ``annotations.jsonl``)

Nothing here opens a video: missing or broken files are found and reported by the probe in ``prepare``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from actionclip.errors import ActionCLIPError
from actionclip.labels import read_labels

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
FORMATS = ("synthetic", "folder", "mmaction", "kinetics", "frames", "captions")
SYNTHETIC_MARKER = "synthetic.json"


class DatasetFormatError(ActionCLIPError, ValueError):
    """An annotation file or dataset layout that cannot be understood."""


@dataclass
class Entry:
    """One video named by an annotation source (not yet probed)."""

    path: str
    label: str | None = None
    caption: str | None = None
    split: str | None = None  # None: prepare assigns train/val


@dataclass
class Parsed:
    """What a format parser found: entries, the label order it implies, and held-out labels it declares."""

    entries: list[Entry]
    labels: list[str]
    heldout: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files skipped as not videos (reported in the summary)


# --------------------------------------------------------------------------------------------------- label maps
def read_label_map(path: str | os.PathLike) -> list[str]:
    """Label names in index order from one name per line, or an ``id,name`` CSV (header optional)."""
    p = Path(path)
    lines = read_labels(p, DatasetFormatError, "label map")
    has_header = lines[0].replace(" ", "").lower() == "id,name"
    body = lines[1:] if has_header else lines
    numbered = all("," in ln and ln.split(",", 1)[0].strip().isdigit() for ln in body)
    if not (has_header or numbered):
        return body
    pairs = []
    for ln in body:
        idx, _, name = ln.partition(",")
        pairs.append((int(idx), name.strip().strip('"')))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DatasetFormatError(f"label map {p}: ids must be 0..{len(pairs) - 1} without gaps")
    return [name for _, name in pairs]


def _split_from_name(path: Path) -> str | None:
    name = path.name.lower()
    if "train" in name:
        return "train"
    if "val" in name or "test" in name:
        return "val"
    return None


def _resolve(root: Path, rel: str) -> str:
    p = Path(rel)
    return str(p if p.is_absolute() else (root / p))


def _index_label(idx: str, labels: list[str] | None, where: str) -> str:
    try:
        i = int(idx)
    except ValueError:
        raise DatasetFormatError(f"{where}: label index {idx!r} is not an integer") from None
    if labels is None:
        return str(i)
    if not 0 <= i < len(labels):
        raise DatasetFormatError(f"{where}: label index {i} outside the label map (0..{len(labels) - 1})")
    return labels[i]


# ------------------------------------------------------------------------------------------------------ parsers
def parse_folder(root: Path) -> Parsed:
    """``root/<label>/<video>``; a sub-directory holding img_*.jpg frames counts as one video."""
    labels = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not labels:
        raise DatasetFormatError(f"{root}: no class sub-directories (expected root/<label>/<video>)")
    entries, ignored = [], []
    for label in labels:
        for item in sorted((root / label).iterdir()):
            if item.name.startswith("."):
                continue
            if item.is_dir() or item.suffix.lower() in VIDEO_EXTENSIONS:
                entries.append(Entry(str(item), label))
            else:
                ignored.append(str(item))
    return Parsed(entries, labels, ignored=ignored)


def parse_mmaction(path: Path, label_map: list[str] | None, video_root: Path) -> Parsed:
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, _, idx = line.strip().rpartition(" ")
        if not rel:
            raise DatasetFormatError(f"{path}:{n}: expected '<path> <label index>', got {line.strip()!r}")
        label = _index_label(idx, label_map, f"{path}:{n}")
        entries.append(Entry(_resolve(video_root, rel.strip()), label, split=_split_from_name(path)))
    labels = label_map if label_map is not None else sorted({e.label for e in entries}, key=int)
    return Parsed(entries, list(labels))


def parse_frames(path: Path, label_map: list[str] | None, video_root: Path) -> Parsed:
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise DatasetFormatError(f"{path}:{n}: expected '<frame dir> <num_frames> <label index>'")
        rel, idx = " ".join(parts[:-2]), parts[-1]
        label = _index_label(idx, label_map, f"{path}:{n}")
        entries.append(Entry(_resolve(video_root, rel), label, split=_split_from_name(path)))
    labels = label_map if label_map is not None else sorted({e.label for e in entries}, key=int)
    return Parsed(entries, list(labels))


_KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "validate": "val", "validation": "val",
                    "test": "val"}


def parse_kinetics(path: Path, label_map: list[str] | None, video_root: Path) -> Parsed:
    """Kinetics CSV. Clips are found by file stem anywhere under ``video_root`` (layouts vary: flat, per split,
    per label, labels with spaces or underscores); a clip that is not found keeps its expected path so the probe
    reports it as missing."""
    by_stem: dict[str, str] = {}
    for dirpath, _, files in os.walk(video_root):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTENSIONS:
                by_stem.setdefault(stem, os.path.join(dirpath, f))
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise DatasetFormatError(f"{path}: Kinetics CSV needs columns {sorted(need)}, got {reader.fieldnames}")
        entries = []
        for n, row in enumerate(reader, 2):
            label = (row["label"] or "").strip()
            if not label:
                continue  # unlabelled test rows cannot be used for supervised data
            try:
                stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            except ValueError:
                raise DatasetFormatError(f"{path}:{n}: time_start/time_end must be numbers") from None
            split = _KINETICS_SPLITS.get((row.get("split") or "").strip().lower())
            found = by_stem.get(stem, str(video_root / label / f"{stem}.mp4"))
            entries.append(Entry(found, label, split=split))
    labels = label_map if label_map is not None else sorted({e.label for e in entries})
    unknown = sorted({e.label for e in entries} - set(labels))
    if unknown:
        raise DatasetFormatError(f"{path}: labels not in the label map: {unknown[:5]}")
    return Parsed(entries, list(labels))


_PATH_KEYS = ("path", "video", "video_path", "filename", "file")
_CAPTION_KEYS = ("caption", "text", "name", "sentence")


def _caption_row(row: dict, root: Path, where: str, default_split: str | None) -> Entry:
    path = next((row[k] for k in _PATH_KEYS if row.get(k)), None)
    if path is None and row.get("videoid"):  # WebVid: <page_dir>/<videoid>.mp4
        path = os.path.join(str(row.get("page_dir") or ""), f"{row['videoid']}.mp4")
    caption = next((row[k] for k in _CAPTION_KEYS if row.get(k)), None)
    if not path:
        raise DatasetFormatError(f"{where}: no video path (one of {_PATH_KEYS} or videoid)")
    if caption is not None and not isinstance(caption, str):
        raise DatasetFormatError(f"{where}: caption must be a string")
    label = row.get("label") or None
    return Entry(_resolve(root, str(path)), label, caption, row.get("split") or default_split)


def parse_captions(path: Path, video_root: Path, default_split: str | None = "pretrain") -> Parsed:
    """JSON lines or CSV of (path, caption[, label][, split]); rows default to the "pretrain" split."""
    entries = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetFormatError(f"{path}:{n}: expected a JSON object per line")
            entries.append(_caption_row(row, video_root, f"{path}:{n}", default_split))
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                entries.append(_caption_row(row, video_root, f"{path}:{n}", default_split))
    labels = sorted({e.label for e in entries if e.label})
    return Parsed(entries, labels)


def parse_synthetic(root: Path) -> Parsed:
    meta = json.loads((root / SYNTHETIC_MARKER).read_text(encoding="utf-8"))
    parsed = parse_captions(root / "annotations.jsonl", root, default_split=None)
    return Parsed(parsed.entries, list(meta["classes"]), heldout=list(meta.get("heldout", [])))


# ---------------------------------------------------------------------------------------------------- detection
def detect_format(source: Path) -> str:
    """Guess the format of ``source`` from the layout (directories) or the first lines (files)."""
    if source.is_dir():
        if (source / SYNTHETIC_MARKER).is_file():
            return "synthetic"
        return "folder"
    if not source.is_file():
        raise DatasetFormatError(f"dataset source {source} not found")
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "captions"
    with source.open(encoding="utf-8", errors="replace") as fh:
        head = [ln.strip() for ln in (fh.readline() for _ in range(5)) if ln.strip()]
    if not head:
        raise DatasetFormatError(f"{source}: empty annotation file")
    if suffix == ".csv" or "," in head[0]:
        header = head[0].lower().split(",")
        return "kinetics" if "youtube_id" in header else "captions"
    parts = head[0].split()
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
        return "frames"
    if len(parts) >= 2 and parts[-1].isdigit():
        return "mmaction"
    raise DatasetFormatError(f"{source}: cannot tell the annotation format; pass format= one of {FORMATS}")


def parse_source(
    source: Path,
    format: str = "auto",
    label_map: str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
) -> tuple[str, Parsed]:
    """Parse one dataset source -> (format name, Parsed)."""
    source = Path(source)
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in FORMATS:
        raise DatasetFormatError(f"unknown dataset format {format!r}; choose one of {('auto',) + FORMATS}")
    if not source.exists():
        raise DatasetFormatError(f"dataset source {source} not found")
    root = Path(video_root) if video_root else (source if source.is_dir() else source.parent)
    labels = read_label_map(label_map) if label_map else None
    if fmt == "synthetic":
        return fmt, parse_synthetic(source)
    if fmt == "folder":
        if not source.is_dir():
            raise DatasetFormatError(f"format 'folder' needs a directory, got {source}")
        return fmt, parse_folder(source)
    if source.is_dir():
        raise DatasetFormatError(f"format {fmt!r} needs an annotation file, got directory {source}")
    if fmt == "mmaction":
        return fmt, parse_mmaction(source, labels, root)
    if fmt == "frames":
        return fmt, parse_frames(source, labels, root)
    if fmt == "kinetics":
        return fmt, parse_kinetics(source, labels, root)
    return fmt, parse_captions(source, root)


def merge_labels(orders: Iterable[list[str]]) -> list[str]:
    """Union of label lists keeping first-seen order (the label map order wins when one was given)."""
    seen: dict[str, None] = {}
    for order in orders:
        for name in order:
            seen.setdefault(name, None)
    return list(seen)
