"""The ActionCLIP model: CLIP image tower per frame -> temporal fusion -> video embedding; CLIP text tower for
label prompts; classification by cosine similarity between the two."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from actionclip.config import ActionCLIPConfig
from actionclip.fusion import build_fusion
from actionclip.text import TextTransformer
from actionclip.vision import build_vision_tower

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ActionCLIP(nn.Module):
    """Video-text matching model.

    Submodules: ``visual`` (timm ViT, CLIP layout), ``text`` (CLIP text tower), ``fusion`` (temporal module) and the
    learned ``logit_scale`` used in training (evaluation uses a fixed scale of 100, as the original).
    """

    def __init__(self, config: ActionCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = build_vision_tower(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.fusion = build_fusion(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # Read-only views of the config that callers use most (serving, data pipelines, benchmarks).
    num_frames = property(lambda self: self.config.num_frames, doc="clip length T the model expects")
    image_size = property(lambda self: self.config.vision.image_size, doc="input image side in pixels")
    embed_dim = property(lambda self: self.config.embed_dim, doc="width of the joint video/text embedding")
    context_length = property(lambda self: self.config.text.context_length, doc="token positions of the text tower")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised images [N, 3, H, W] -> [N, D], not normalised."""
        return self.visual(images)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised clips [B, T, 3, H, W] -> [B, D], not normalised. All B*T frames go through the image
        tower as one batch."""
        if video.dim() != 5:
            raise ValueError(f"expected a video batch [B, T, 3, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        frames = self.encode_image(video.flatten(0, 1)).view(b, t, -1)
        return self.fusion(frames)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] -> [N, D], not normalised."""
        return self.text(ids)

    def forward(self, video: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the (not normalised) video [B, D] and text [N, D] embeddings."""
        return self.encode_video(video), self.encode_text(ids)

    def train(self, mode: bool = True) -> "ActionCLIP":
        from actionclip.zeroshot import clear_prompt_cache

        clear_prompt_cache(self)  # weights may change while training; cached prompt features would go stale
        return super().train(mode)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split as ActionCLIP's optimiser does: image tower, text side (incl. ``logit_scale``), fusion."""
        return {
            "image": list(self.visual.parameters()),
            "text": list(self.text.parameters()) + [self.logit_scale],
            "fusion": list(self.fusion.parameters()),
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.transformer.grad_checkpointing = enable
        if hasattr(self.fusion, "transformer") and hasattr(self.fusion.transformer, "grad_checkpointing"):
            self.fusion.transformer.grad_checkpointing = enable

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path/model.safetensors`` (float32 tensors, no pickled objects) and ``path/config.json``.
        Files are written to temporaries and renamed so an interrupted save never leaves a half file."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        tmp = out / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "actionclip", "config": json.dumps(self.config.to_dict())})
        os.replace(tmp, out / WEIGHTS_NAME)
        tmp = out / (CONFIG_NAME + ".tmp")
        tmp.write_text(self.config.to_json() + "\n")
        os.replace(tmp, out / CONFIG_NAME)
        return out
