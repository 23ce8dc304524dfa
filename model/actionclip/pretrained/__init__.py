"""Checkpoints shipped with the package: models this project pre-trained itself with ``actionclip pretrain``.

Each lives in its own folder with ``config.json``, ``model.safetensors.gz`` (a ``save_pretrained`` safetensors file,
gzip-compressed), ``card.json`` (recipe, seed, commit, data, zero-shot numbers, sha256 of the safetensors file) and
``MODEL_CARD.md``. Rows of the text token embedding that no caption, template or label of the recipe ever used are
stored as zeros, which is what makes the file compress to a few MB (the 49408 x 128 embedding is 25 of its 30 MB).

``synthetic-captions``: tiny-8-32px after caption pre-training on the synthetic action data; the demo pipeline
starts from it the way ActionCLIP starts from CLIP. ``benchmarks/pretrain_checkpoint.py`` reproduces it from
scratch and compares a fresh run with the shipped one.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from actionclip.errors import ConfigError

_ROOT = Path(__file__).resolve().parent
SHIPPED = {"synthetic-captions": "tiny-8-32px-synthetic-captions"}
PACKED_NAME = "model.safetensors.gz"


def shipped_dir(name: str) -> Path:
    """The package folder of a shipped checkpoint (compressed weights, config, card)."""
    if name not in SHIPPED:
        raise ConfigError(f"unknown shipped checkpoint {name!r}; available: {sorted(SHIPPED)}")
    return _ROOT / SHIPPED[name]


def card(name: str = "synthetic-captions") -> dict:
    """The checkpoint's card (recipe, seed, commit, data, zero-shot numbers)."""
    return json.loads((shipped_dir(name) / "card.json").read_text(encoding="utf-8"))


def shipped_path(name: str = "synthetic-captions", cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A ``save_pretrained`` folder of a shipped checkpoint (loadable with ``actionclip.load``).

    The weights are decompressed once into ``cache_dir`` (default: ``$ACTIONCLIP_CACHE`` or the system temporary
    folder), in a folder named by their sha256, which is checked.
    """
    src = shipped_dir(name)
    packed = src / PACKED_NAME
    if not packed.is_file():
        raise ConfigError(f"shipped checkpoint {name!r} is missing from the installation ({packed})")
    sha = card(name)["sha256"]
    root = Path(cache_dir or os.environ.get("ACTIONCLIP_CACHE") or tempfile.gettempdir())
    out = root / f"actionclip-{name}-{sha[:12]}"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"model.safetensors.{os.getpid()}.tmp"  # concurrent first uses each write their own
    digest = hashlib.sha256()
    with gzip.open(packed, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
    if digest.hexdigest() != sha:
        tmp.unlink()
        raise ConfigError(f"shipped checkpoint {name!r}: {packed} does not match the sha256 in its card")
    shutil.copyfile(src / "config.json", tmp.with_suffix(".json"))
    os.replace(tmp.with_suffix(".json"), out / "config.json")
    os.replace(tmp, out / "model.safetensors")
    return out
