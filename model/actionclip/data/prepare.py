"""Dataset preparation: parse annotations, probe every video in parallel, write the prepared dataset directory.

Output (see docs/ARCHITECTURE.md "Data"): manifest.jsonl, labels.txt, heldout_labels.txt, summary.json,
rejected.jsonl, probe_cache.json. Videos are never copied; the manifest holds absolute paths. With ``frames_dir``
every video is also extracted once into a JPEG frame folder there (``frames.extract_frames``) and the manifest
points at the folders instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from actionclip.errors import ActionCLIPError
from actionclip.labels import parse_labels

from .formats import DatasetFormatError, Entry, merge_labels, parse_captions, parse_source
from .frames import DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, extract_frames, frame_folder_name
from .reader import VideoReadError, probe_video

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "heldout", "pretrain")
MANIFEST_KEYS = ("path", "label", "split", "caption", "frames", "fps", "width", "height", "duration")
CACHE_FILE = "probe_cache.json"


class DatasetError(ActionCLIPError):
    """The dataset as a whole is unusable (too many bad videos, nothing left, not a prepared directory)."""


# ------------------------------------------------------------------------------------------------ loaded dataset
@dataclass
class PreparedDataset:
    """A prepared dataset directory. ``rows()`` are manifest dicts (keys ``MANIFEST_KEYS``)."""

    root: Path
    labels: list[str]
    heldout_labels: list[str]
    dataset_hash: str
    summary: dict
    _rows: list[dict] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, root: str | os.PathLike) -> "PreparedDataset":
        root = Path(root)
        missing = [f for f in ("manifest.jsonl", "labels.txt", "summary.json") if not (root / f).is_file()]
        if missing:
            raise DatasetError(f"{root} is not a prepared dataset (missing {', '.join(missing)})")
        summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
        heldout_file = root / "heldout_labels.txt"
        return cls(
            root=root,
            labels=parse_labels((root / "labels.txt").read_text(encoding="utf-8")),  # may be empty (captions only)
            heldout_labels=parse_labels(heldout_file.read_text(encoding="utf-8")) if heldout_file.is_file() else [],
            dataset_hash=summary.get("dataset_hash", ""),
            summary=summary,
        )

    def rows(self, split: str | Iterable[str] | None = None) -> list[dict]:
        """Manifest rows, all or those of ``split`` (a name or several), in manifest order."""
        if self._rows is None:
            text = (self.root / "manifest.jsonl").read_text(encoding="utf-8")
            self._rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if split is None:
            return list(self._rows)
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {SPLITS}")
        return [r for r in self._rows if r["split"] in wanted]


# --------------------------------------------------------------------------------------------------- probe cache
def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _per_file(path: str, work: Callable[[], dict]) -> dict:
    """{"info": work()} or {"error": reason}: one bad file (or a full disk, reported per file) never aborts the
    run or loses the other files' work."""
    try:
        return {"info": work()}
    except VideoReadError as exc:
        return {"error": _strip_path(str(exc), path)}
    except Exception as exc:
        return {"error": f"unexpected {type(exc).__name__}: {exc}"[:300]}


def _map_files(work: Callable[[Any], dict], items: Sequence[Any], *, workers: int, progress: bool,
               desc: str) -> list[dict]:
    """``work`` over ``items`` in a thread pool (decord and torchvision's JPEG codec release the GIL), in order,
    with a tqdm bar."""
    bar = None
    if progress and items:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="video")
    results = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for res in pool.map(work, items):
            results.append(res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def probe_all(paths: Sequence[str], cache: dict, *, workers: int, progress: bool, check_decode: bool) -> dict:
    """Probe ``paths`` in threads -> {path: {"info"| "error"}}.

    ``cache`` maps path -> {"stat": [size, mtime_ns], ...}; unchanged files reuse their earlier result and the cache
    is updated in place.
    """
    results: dict[str, dict] = {}
    todo = []
    for p in paths:
        key = _stat_key(p)
        hit = cache.get(p)
        if key is None:
            results[p] = {"error": "file not found"}
        elif hit is not None and hit.get("stat") == key:
            results[p] = {k: v for k, v in hit.items() if k != "stat"}
        else:
            todo.append((p, key))
    def probe(item: tuple[str, list[int]]) -> dict:
        return _per_file(item[0], lambda: probe_video(item[0], check_decode=check_decode).to_dict())

    for (p, key), res in zip(todo, _map_files(probe, todo, workers=workers, progress=progress,
                                              desc="probing videos")):
        results[p] = res
        cache[p] = {"stat": key, **res}
    log.info("probed %d videos (%d from cache)", len(todo), len(paths) - len(todo))
    return results


# ------------------------------------------------------------------------------------------------- frame folders
def _extract_good(good: list[tuple[Entry, dict]], rejected: list[dict], frames_dir: Path, *, short_side: int | None,
                  quality: int, stride: int, workers: int, progress: bool) -> list[tuple[Entry, dict]]:
    """Extract the good videos into ``frames_dir``; entries point at their folders afterwards (infos updated with
    the folders' frame count and size, fps divided by the stride), failures move to ``rejected``."""
    frames_dir.mkdir(parents=True, exist_ok=True)

    def extract(e: Entry) -> dict:
        if os.path.isdir(e.path):  # a frame folder already
            return {"info": {}}
        folder = frames_dir / frame_folder_name(e.path)
        return _per_file(e.path, lambda: {
            **extract_frames(e.path, folder, short_side=short_side, quality=quality, stride=stride),
            "path": str(folder.resolve()),
        })

    results = _map_files(extract, [e for e, _ in good], workers=workers, progress=progress,
                         desc="extracting frames")
    kept: list[tuple[Entry, dict]] = []
    for (e, info), res in zip(good, results):
        if "error" in res:
            rejected.append({"path": e.path, "reason": res["error"]})
        elif not res["info"]:
            kept.append((e, info))
        else:
            found = dict(res["info"])
            e.path = found.pop("path")
            kept.append((e, {**info, **found, "fps": info["fps"] / stride}))
    log.info("%d videos extracted (or reused) as frame folders under %s", len(good), frames_dir)
    return kept


# ------------------------------------------------------------------------------------------------------ splitting
def assign_splits(entries: list[Entry], heldout: set[str], val_fraction: float, seed: int) -> None:
    """Held-out labels -> "heldout" (except "pretrain" rows); unassigned rows -> stratified train/val per label."""
    pending: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.split == "pretrain":
            continue
        if e.label in heldout:
            e.split = "heldout"
        elif e.split is None:
            pending[e.label or ""].append(e)
    for label, group in pending.items():
        order = sorted(range(len(group)), key=lambda i: group[i].path)
        random.Random(f"{seed}:{label}").shuffle(order)  # seeded per label: adding a class leaves others unchanged
        n_val = int(round(len(group) * val_fraction))
        if val_fraction > 0 and len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)  # every label keeps >= 1 train and >= 1 val video
        for rank, i in enumerate(order):
            group[i].split = "val" if rank < n_val else "train"


# -------------------------------------------------------------------------------------------------------- prepare
def prepare_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    format: str = "auto",
    label_map: str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
    captions: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    heldout: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_bad_fraction: float = 0.1,
    workers: int = 4,
    progress: bool = True,
    check_decode: bool = True,
    frames_dir: str | os.PathLike | None = None,
    frame_short_side: int | None = DEFAULT_SHORT_SIDE,
    jpeg_quality: int = DEFAULT_QUALITY,
    frame_stride: int = 1,
) -> PreparedDataset:
    """Probe the videos named by ``source`` and write a prepared dataset into ``out_dir``.

    ``source``: a directory (class folders or a synthetic dataset) or annotation file(s) (see ``formats``);
    ``captions``: extra caption lists whose rows become "pretrain" rows; ``heldout``: labels kept out of
    labels.txt for zero-shot evaluation (default: the ones the source declares, e.g. synthetic). Individual bad
    files are rejected with a reason; more than ``max_bad_fraction`` bad files raises ``DatasetError`` (after
    writing rejected.jsonl so the reasons are not lost).

    ``frames_dir``: extract every good video into a JPEG frame folder under this directory (scaled down to short
    side ``frame_short_side``, never up, 0 or None keeps the size; ``jpeg_quality``; every ``frame_stride``-th
    frame) and point the manifest at the folders, so training decodes only the frames it samples (docs/data.md,
    "Frame folders"). Folders of unchanged videos are reused, so a rerun after an interruption extracts only what
    is missing; a video that fails to extract is rejected like one that fails to probe.
    """
    _check_settings(val_fraction, frames_dir, frame_short_side, jpeg_quality, frame_stride)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise DatasetFormatError("no dataset source given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    listing = list_entries(sources, format, label_map, video_root, captions)
    held = heldout_labels(listing, heldout)
    unique, rejected, duplicates = deduplicate(listing.entries)
    good = probe_entries(unique, rejected, out, workers=workers, progress=progress, check_decode=check_decode)
    if frames_dir is not None:
        good = _extract_good(good, rejected, Path(frames_dir), short_side=frame_short_side, quality=jpeg_quality,
                             stride=frame_stride, workers=workers, progress=progress)
    _write_lines(out / "rejected.jsonl", [json.dumps(r, ensure_ascii=False) for r in rejected])
    _check_rejected(len(listing.entries) - duplicates, len(good), rejected, max_bad_fraction, sources[0], out)

    assign_splits([e for e, _ in good], set(held), val_fraction, seed)
    rows = [
        {"path": e.path, "label": e.label, "split": e.split, "caption": e.caption,
         "frames": info["frames"], "fps": info["fps"], "width": info["width"], "height": info["height"],
         "duration": info["duration"]}
        for e, info in good
    ]
    closed = [lab for lab in listing.labels if lab not in set(held)]
    digest = write_manifest(out, rows, closed, held)

    summary = summarize(rows, closed, held, rejected, listing, sources, digest, duplicates, val_fraction, seed)
    if frames_dir is not None:
        summary["frames"] = {"dir": str(Path(frames_dir).resolve()), "short_side": int(frame_short_side or 0),
                             "jpeg_quality": jpeg_quality, "stride": frame_stride}
    _write_json(out / "summary.json", summary)
    log.info("prepared %d videos (%s), rejected %d -> %s", len(rows), summary["splits"], len(rejected), out)
    return PreparedDataset.load(out)


# ------------------------------------------------------------------------------------------ the steps of prepare
def _check_settings(val_fraction: float, frames_dir: Any, frame_short_side: int | None, jpeg_quality: int,
                    frame_stride: int) -> None:
    """``ValueError`` for impossible settings, before any video is probed (not found out once per video)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    bad_frames = not (1 <= jpeg_quality <= 100 and frame_stride >= 1 and (frame_short_side or 0) >= 0)
    if frames_dir is not None and bad_frames:
        raise ValueError(f"frame extraction needs jpeg_quality in 1..100, frame_stride >= 1, frame_short_side >= 0; "
                         f"got {jpeg_quality}, {frame_stride}, {frame_short_side}")


@dataclass
class Listing:
    """What the sources list: entries in order, the merged label order, declared held-out labels, formats, and files
    skipped as not videos."""

    entries: list[Entry]
    labels: list[str]
    declared_heldout: list[str]
    formats: list[str]
    ignored: list[str]


def list_entries(sources: Sequence[str | os.PathLike], format: str, label_map: Any, video_root: Any,
                 captions: Any) -> Listing:
    """Parse every source (and caption list, whose rows become "pretrain" rows) into one listing."""
    entries: list[Entry] = []
    label_orders, declared_heldout, formats, ignored = [], [], [], []
    for src in sources:
        fmt, parsed = parse_source(Path(src), format, label_map, video_root)
        formats.append(fmt)
        entries += parsed.entries
        label_orders.append(parsed.labels)
        declared_heldout += parsed.heldout
        ignored += parsed.ignored
    for cap in [] if captions is None else ([captions] if isinstance(captions, (str, os.PathLike)) else captions):
        cap = Path(cap)
        if not cap.is_file():
            raise DatasetFormatError(f"caption list {cap} not found")
        parsed = parse_captions(cap, Path(video_root) if video_root else cap.parent)
        entries += parsed.entries
        label_orders.append(parsed.labels)
    bad_split = sorted({e.split for e in entries if e.split not in (None, *SPLITS)})
    if bad_split:
        raise DatasetFormatError(f"unknown split name(s) {bad_split} in annotations; use {SPLITS}")
    labels = merge_labels(label_orders + [[e.label for e in entries if e.label]])
    return Listing(entries, labels, declared_heldout, formats, ignored)


def heldout_labels(listing: Listing, heldout: Sequence[str] | None) -> list[str]:
    """The held-out labels: those asked for, else those the sources declare; each must be a dataset label."""
    held = list(heldout) if heldout is not None else merge_labels([listing.declared_heldout])
    unknown = [h for h in held if h not in listing.labels]
    if unknown:
        raise DatasetFormatError(f"held-out label(s) {unknown} are not dataset labels")
    return held


def deduplicate(entries: list[Entry]) -> tuple[list[Entry], list[dict], int]:
    """(unique entries, rejected rows, duplicates). The same file listed twice (two lists, or a caption list naming
    a training video) would leak between splits: the first mention is kept and a later caption fills in a missing
    one. Caption-only rows outside "pretrain" are rejected."""
    first: dict[str, Entry] = {}
    unique: list[Entry] = []
    rejected: list[dict] = []
    duplicates = 0
    for e in entries:
        e.path = os.path.abspath(e.path)
        if e.path in first:
            duplicates += 1
            if first[e.path].caption is None and e.caption:
                first[e.path].caption = e.caption
            continue
        first[e.path] = e
        if e.label is None and e.split != "pretrain":
            rejected.append({"path": e.path, "reason": "no label (only 'pretrain' rows may be caption-only)"})
            continue
        unique.append(e)
    return unique, rejected, duplicates


def probe_entries(entries: list[Entry], rejected: list[dict], out: Path, *, workers: int, progress: bool,
                  check_decode: bool) -> list[tuple[Entry, dict]]:
    """(entry, probe info) of every readable video; unreadable ones move to ``rejected``. Probes are cached in
    ``out`` by file size and mtime, so a rerun probes only new or changed files."""
    cache = _load_cache(out / CACHE_FILE)
    probes = probe_all(sorted({e.path for e in entries}), cache, workers=workers, progress=progress,
                       check_decode=check_decode)
    _write_json(out / CACHE_FILE, cache)
    good: list[tuple[Entry, dict]] = []
    for e in entries:
        res = probes[e.path]
        if "error" in res:
            rejected.append({"path": e.path, "reason": res["error"]})
        else:
            good.append((e, res["info"]))
    return good


def _check_rejected(total: int, good: int, rejected: list[dict], max_bad_fraction: float, source: Any,
                    out: Path) -> None:
    """``DatasetError`` when nothing is usable or more than ``max_bad_fraction`` of the videos were rejected."""
    if total == 0:
        raise DatasetError(f"{source}: the dataset lists no videos")
    bad_fraction = len(rejected) / total
    if not good or bad_fraction > max_bad_fraction:
        raise DatasetError(
            f"{len(rejected)} of {total} videos rejected ({bad_fraction:.1%} > limit {max_bad_fraction:.1%}); "
            f"reasons in {out / 'rejected.jsonl'}"
        )


def write_manifest(out: Path, rows: list[dict], labels: list[str], held: list[str]) -> str:
    """Write manifest.jsonl, labels.txt and heldout_labels.txt; returns the dataset hash (sha256 of the manifest)."""
    _write_lines(out / "manifest.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows])
    _write_lines(out / "labels.txt", labels)
    _write_lines(out / "heldout_labels.txt", held)
    return hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest()


def summarize(rows: list[dict], labels: list[str], held: list[str], rejected: list[dict], listing: Listing,
              sources: Sequence[Any], digest: str, duplicates: int, val_fraction: float, seed: int) -> dict:
    """summary.json: counts per split and label, rejection reasons, the hash and the settings that made it."""
    per_split = Counter(r["split"] for r in rows)
    per_label: dict[str, dict[str, int]] = defaultdict(dict)
    for (split, label), n in sorted(Counter((r["split"], r["label"] or "") for r in rows).items()):
        per_label[split][label] = n
    formats = listing.formats
    return {
        "dataset_hash": digest,
        "format": formats[0] if len(set(formats)) == 1 else formats,
        "source": [str(Path(s).resolve()) for s in sources],
        "num_videos": len(rows),
        "splits": {s: per_split.get(s, 0) for s in SPLITS},
        "per_label": per_label,
        "num_labels": len(labels),
        "num_heldout_labels": len(held),
        "captioned": sum(1 for r in rows if r["caption"]),
        "rejected": len(rejected),
        "rejected_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rejected)),
        "ignored_files": len(listing.ignored),
        "duplicates": duplicates,
        "total_duration_s": round(sum(r["duration"] for r in rows), 3),
        "val_fraction": val_fraction,
        "seed": seed,
    }


def _reason_kind(reason: str) -> str:
    return reason.split(" (", 1)[0]


def _load_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        log.warning("ignoring unreadable probe cache %s", path)
        return {}


def _write_lines(path: Path, lines: list[str]) -> None:
    _atomic_write(path, "".join(line + "\n" for line in lines))


def _write_json(path: Path, obj: object) -> None:
    _atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    # readers (a pipeline step, a resumed run) never see a half-written manifest
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
