"""ActionCLIP: video-text action recognition on CLIP (arXiv 2109.08472), as a library.

>>> import actionclip
>>> model = actionclip.load("ViT-B-32.pt", fusion="Transf")        # or a preset name / save_pretrained directory
>>> probs = actionclip.zero_shot_probs(model, video, ["air drumming", "abseiling"])   # video: [B, T, 3, H, W]
"""
from actionclip.checkpoint import create_model, load, to_openai_state_dict
from actionclip.config import FUSIONS, ActionCLIPConfig, FusionConfig, TextConfig, VisionConfig, list_presets, preset_config
from actionclip.errors import ActionCLIPError, CheckpointError, ConfigError
from actionclip.model import ActionCLIP
from actionclip.tokenizer import tokenize
from actionclip.zeroshot import (
    TEMPLATES,
    PromptError,
    actionclip_scores,
    build_prompts,
    encode_prompts,
    kinetics400_labels,
    zero_shot_probs,
)

# CLIP's image normalisation (RGB in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

__version__ = "0.1.0"

__all__ = [
    "ActionCLIP", "ActionCLIPConfig", "ActionCLIPError", "CheckpointError", "ConfigError", "CLIP_MEAN", "CLIP_STD",
    "FUSIONS", "FusionConfig", "PromptError", "TEMPLATES", "TextConfig", "VisionConfig", "actionclip_scores",
    "build_prompts", "create_model", "encode_prompts", "kinetics400_labels", "list_presets", "load",
    "preset_config", "to_openai_state_dict", "tokenize", "zero_shot_probs",
]
