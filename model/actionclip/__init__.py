"""ActionCLIP: video-text action recognition on CLIP (arXiv 2109.08472), as a library.

>>> import actionclip
>>> model = actionclip.load("ViT-B-32.pt", fusion="Transf")        # or a preset name / save_pretrained directory
>>> probs = actionclip.zero_shot_probs(model, video, ["air drumming", "abseiling"])   # video: [B, T, 3, H, W]

Names are imported on first use (PEP 562), so ``import actionclip`` and the ``actionclip --help`` command stay fast
and torch/timm load only when a model is actually needed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# CLIP's image normalisation (RGB in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_EXPORTS: dict[str, str] = {
    "create_model": "actionclip.checkpoint",
    "load": "actionclip.checkpoint",
    "to_openai_state_dict": "actionclip.checkpoint",
    "ACTIVATIONS": "actionclip.config",
    "FUSIONS": "actionclip.config",
    "ActionCLIPConfig": "actionclip.config",
    "FusionConfig": "actionclip.config",
    "TextConfig": "actionclip.config",
    "VisionConfig": "actionclip.config",
    "list_presets": "actionclip.config",
    "preset_config": "actionclip.config",
    "ActionCLIPError": "actionclip.errors",
    "CheckpointError": "actionclip.errors",
    "ConfigError": "actionclip.errors",
    "ActionCLIP": "actionclip.model",
    "tokenize": "actionclip.tokenizer",
    "trim_padding": "actionclip.tokenizer",
    "TEMPLATES": "actionclip.zeroshot",
    "PromptError": "actionclip.zeroshot",
    "actionclip_scores": "actionclip.zeroshot",
    "build_prompts": "actionclip.zeroshot",
    "encode_prompts": "actionclip.zeroshot",
    "kinetics400_labels": "actionclip.zeroshot",
    "zero_shot_probs": "actionclip.zeroshot",
}

__all__ = sorted([*_EXPORTS, "CLIP_MEAN", "CLIP_STD"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'actionclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from actionclip.checkpoint import create_model, load, to_openai_state_dict
    from actionclip.config import ACTIVATIONS, FUSIONS, ActionCLIPConfig, FusionConfig, TextConfig, VisionConfig, list_presets, preset_config
    from actionclip.errors import ActionCLIPError, CheckpointError, ConfigError
    from actionclip.model import ActionCLIP
    from actionclip.tokenizer import tokenize
    from actionclip.zeroshot import (TEMPLATES, PromptError, actionclip_scores, build_prompts, encode_prompts,
                                     kinetics400_labels, zero_shot_probs)
