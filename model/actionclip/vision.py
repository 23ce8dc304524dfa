"""The image tower: a timm ``VisionTransformer`` configured exactly as CLIP's.

CLIP's ViT is pre-norm (``norm_pre`` after the position embedding, patch conv without bias), uses QuickGELU and
LayerNorm eps 1e-5, takes the class token after the final norm and projects it to the joint embedding without bias.
timm's ``head`` plays the role of CLIP's ``proj`` (stored transposed).
"""
from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from actionclip.config import VisionConfig
from actionclip.layers import init_clip_blocks_


def build_vision_tower(cfg: VisionConfig, embed_dim: int) -> VisionTransformer:
    """Images [N, 3, H, W] (CLIP-normalised) -> embeddings [N, embed_dim] (not normalised)."""
    model = VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.layers,
        num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        pre_norm=True,
        class_token=True,
        global_pool="token",
        num_classes=embed_dim,
        act_layer="quick_gelu",
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
    )
    # CLIP's projection has no bias; keep the parameter set identical to CLIP's.
    model.head = nn.Linear(cfg.width, embed_dim, bias=False)
    init_clip_vision_(model)
    return model


def init_clip_vision_(model: VisionTransformer) -> None:
    """CLIP's initialisation instead of timm's: class token, position table and projection ~ N(0, width^-0.5)
    (timm draws the class token with std 1e-6 and positions with 0.02, which leaves a random tower's class-token
    output nearly the same for every image), and CLIP's block rule (``init_clip_blocks_``); biases zero."""
    width = model.embed_dim
    with torch.no_grad():
        for p in (model.cls_token, model.pos_embed, model.head.weight):
            nn.init.normal_(p, std=width**-0.5)
        for b in model.blocks:
            nn.init.zeros_(b.attn.qkv.bias)
            nn.init.zeros_(b.attn.proj.bias)
            nn.init.zeros_(b.mlp.fc1.bias)
            nn.init.zeros_(b.mlp.fc2.bias)
    weights = [(b.attn.qkv.weight, b.attn.proj.weight, b.mlp.fc1.weight, b.mlp.fc2.weight) for b in model.blocks]
    init_clip_blocks_(weights, width)


def openai_visual_to_timm(state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Rename OpenAI CLIP ``visual.*`` tensors to timm ``VisionTransformer`` names (keys without the prefix).

    ``proj`` [width, embed] becomes ``head.weight`` [embed, width]; ``class_embedding`` [width] becomes
    ``cls_token`` [1, 1, width]; ``positional_embedding`` [N, width] becomes ``pos_embed`` [1, N, width].
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if k == "proj":
            out["head.weight"] = value.t().contiguous()
            continue
        if k == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
            continue
        if k == "positional_embedding":
            out["pos_embed"] = value.unsqueeze(0)
            continue
        for old, new in (
            ("conv1", "patch_embed.proj"),
            ("transformer.resblocks.", "blocks."),
            ("ln_pre", "norm_pre"),
            ("ln_post", "norm"),
            ("ln_", "norm"),
            ("in_proj_", "qkv."),
            ("out_proj", "proj"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            k = k.replace(old, new)
        out[k] = value
    return out


def timm_to_openai_visual(state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Inverse of :func:`openai_visual_to_timm` (used to export OpenAI-layout checkpoints)."""
    out: dict[str, torch.Tensor] = {}
    for k, value in state.items():
        if k == "head.weight":
            out[prefix + "proj"] = value.t().contiguous()
            continue
        if k == "cls_token":
            out[prefix + "class_embedding"] = value.reshape(-1)
            continue
        if k == "pos_embed":
            out[prefix + "positional_embedding"] = value.squeeze(0)
            continue
        for old, new in (
            ("patch_embed.proj", "conv1"),
            ("blocks.", "transformer.resblocks."),
            ("norm_pre", "ln_pre"),
            ("norm1", "ln_1"),
            ("norm2", "ln_2"),
            ("qkv.", "in_proj_"),
            ("attn.proj", "attn.out_proj"),
            ("mlp.fc1", "mlp.c_fc"),
            ("mlp.fc2", "mlp.c_proj"),
        ):
            k = k.replace(old, new)
        if k.startswith("norm."):
            k = "ln_post." + k[len("norm."):]
        out[prefix + k] = value
    return out
