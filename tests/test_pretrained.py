"""The shipped start checkpoint: small, documented, integrity-checked and loadable (its accuracy is not asserted
here: that is what benchmarks/pretrain_checkpoint.py measures)."""
from __future__ import annotations

import gzip

import pytest

from actionclip.errors import ConfigError
from actionclip.pretrained import PACKED_NAME, card, shipped_dir, shipped_path


def test_shipped_checkpoint_is_small_documented_and_loads(tmp_path):
    import actionclip

    src = shipped_dir("synthetic-captions")
    assert (src / PACKED_NAME).stat().st_size <= 10 * 2**20
    c = card()
    for key in ("recipe", "seed", "commit", "data", "zero_shot", "sha256"):
        assert key in c, key
    assert "Reproduce" in (src / "MODEL_CARD.md").read_text()
    path = shipped_path(cache_dir=tmp_path)
    model = actionclip.load(path)
    assert model.num_frames == 8 and path == shipped_path(cache_dir=tmp_path)  # decompressed once


def test_corrupt_or_unknown_checkpoint_is_refused(tmp_path, monkeypatch):
    import actionclip.pretrained as pretrained

    with pytest.raises(ConfigError, match="unknown shipped checkpoint"):
        shipped_path("nope")
    fake = tmp_path / "pkg" / pretrained.SHIPPED["synthetic-captions"]
    fake.mkdir(parents=True)
    for f in ("card.json", "config.json"):
        (fake / f).write_bytes((shipped_dir("synthetic-captions") / f).read_bytes())
    with gzip.open(fake / PACKED_NAME, "wb") as fh:
        fh.write(b"not the shipped weights")
    monkeypatch.setattr(pretrained, "_ROOT", tmp_path / "pkg")
    with pytest.raises(ConfigError, match="does not match the sha256"):
        shipped_path(cache_dir=tmp_path / "cache")
