"""Model configuration as plain data: dataclasses, and presets stored as JSON files in ``configs/``."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from actionclip.errors import ConfigError

FUSIONS = ("meanP", "Transf", "Conv1D", "LSTM", "Transf_cls")
# The MLP activation of the CLIP towers: QuickGELU, x * sigmoid(1.702 x), in OpenAI's CLIP and everything fine-tuned
# from it (ActionCLIP, MMAction2); exact GELU in open_clip's own architectures (ViT-B-32, ViT-B-16, ...: the LAION and
# DataComp weights). Weights cannot tell the two apart, so the checkpoint's source decides (docs/ARCHITECTURE.md).
ACTIVATIONS = ("quick_gelu", "gelu")
_FUSION_ALIASES = {"seqTransf": "Transf", "Conv_1D": "Conv1D", "conv_1D": "Conv1D", "seqLSTM": "LSTM",
                   "seqTransf_cls": "Transf_cls", "meanp": "meanP", "mean": "meanP", "transf": "Transf"}


@dataclass
class TowerConfig:
    """What the image and the text tower share: a transformer's width, depth, head count and MLP activation."""

    width: int = 512
    layers: int = 12
    heads: int = 8  # width // 64 in every released CLIP
    activation: str = "quick_gelu"  # one of ACTIVATIONS

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")


@dataclass
class VisionConfig(TowerConfig):
    """A ViT image tower (ViT-B/32 by default); ``width``, ``layers``, ``heads``, ``activation`` as in ``TowerConfig``."""

    width: int = 768
    heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    mlp_ratio: float = 4.0


@dataclass
class TextConfig(TowerConfig):
    context_length: int = 77
    vocab_size: int = 49408


@dataclass
class FusionConfig:
    kind: str = "Transf"
    layers: int = 6
    heads: int | None = None  # None: the original's rule (``ActionCLIPConfig.fusion_heads``)
    # Rows of the frame position table: 77 in original ActionCLIP checkpoints, T in MMAction2 ones.
    position_rows: int = 77
    # Original ActionCLIP uses a TF-style LayerNorm with eps 1e-12 in the temporal transformer; MMAction2 uses 1e-5.
    ln_eps: float = 1e-12


@dataclass
class ActionCLIPConfig:
    """Everything needed to build an ``ActionCLIP`` model. ``num_frames`` is the clip length T the model expects."""

    embed_dim: int = 512
    num_frames: int = 8
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    name: str = ""

    def __post_init__(self) -> None:
        self.fusion.kind = canonical_fusion(self.fusion.kind)
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fusion.kind == "Transf" and self.num_frames > self.fusion.position_rows:
            raise ConfigError(
                f"num_frames={self.num_frames} exceeds the {self.fusion.position_rows}-row frame position table of the "
                "Transf fusion"
            )
        if self.fusion.kind in ("Transf", "Transf_cls") and self.embed_dim % self.fusion_heads:
            raise ConfigError(f"the {self.fusion.kind} fusion's {self.fusion_heads} heads do not divide embed_dim "
                              f"{self.embed_dim} (set fusion.heads)")

    @property
    def fusion_heads(self) -> int:
        """Attention heads of the temporal transformer. No state dict stores them, so they follow the original code:
        ``Transf`` takes the *text* tower's width // 64 (ActionCLIP's ``visual_prompt`` and MMAction2's adapter read
        ``ln_final``'s width), ``Transf_cls`` a fixed 8 (ActionCLIP's ``TAggregate``)."""
        if self.fusion.heads:
            return self.fusion.heads
        return 8 if self.fusion.kind == "Transf_cls" else max(1, self.text.width // 64)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActionCLIPConfig":
        data = dict(data)
        sub = {"vision": VisionConfig, "text": TextConfig, "fusion": FusionConfig}
        for key, klass in sub.items():
            if key in data and isinstance(data[key], dict):
                data[key] = _build(klass, data[key], key)
        return _build(cls, data, "model config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _build(klass: type, data: dict[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown field(s) in {what}: {', '.join(unknown)} (expected some of: {', '.join(sorted(names))})")
    return klass(**data)


def canonical_fusion(kind: str) -> str:
    kind = _FUSION_ALIASES.get(kind, kind)
    if kind not in FUSIONS:
        raise ConfigError(f"unknown fusion {kind!r}; choose one of {', '.join(FUSIONS)}")
    return kind


def _preset_files() -> dict[str, Any]:
    folder = resources.files("actionclip").joinpath("configs")
    return {p.name[: -len(".json")]: p for p in folder.iterdir() if p.name.endswith(".json")}


def list_presets() -> list[str]:
    """Preset names, e.g. ``ViT-B/32-8`` (file ``configs/ViT-B-32-8.json``)."""
    names = []
    for stem, path in _preset_files().items():
        names.append(json.loads(path.read_text()).get("name") or stem)
    return sorted(names)


def preset_config(name: str) -> ActionCLIPConfig:
    """The config of a preset. Accepts ``ViT-B/32-8`` or its file stem ``ViT-B-32-8``."""
    files = _preset_files()
    stem = name.replace("/", "-")
    if stem not in files:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    data = json.loads(files[stem].read_text())
    data.setdefault("name", name)
    return ActionCLIPConfig.from_dict(data)
