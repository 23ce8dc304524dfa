"""The image tower: a timm ``VisionTransformer`` configured exactly as CLIP's.

CLIP's ViT is pre-norm (``norm_pre`` after the position embedding, patch conv without bias), uses QuickGELU (exact
GELU for open_clip's own architectures: ``VisionConfig.activation``) and
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
        act_layer=cfg.activation,  # timm's names: "quick_gelu" (x * sigmoid(1.702 x)) or "gelu" (exact)
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


# OpenAI -> timm names, by key prefix; inside a block (after ``transformer.resblocks.N.`` / ``blocks.N.``) by the
# prefix of the rest. Tensors whose shape also differs: OpenAI name -> (timm name, to timm, to OpenAI).
_TOP = {"conv1.": "patch_embed.proj.", "ln_pre.": "norm_pre.", "ln_post.": "norm.", "transformer.resblocks.": "blocks."}
_IN_BLOCK = {"ln_1.": "norm1.", "ln_2.": "norm2.", "attn.in_proj_": "attn.qkv.", "attn.out_proj.": "attn.proj.",
             "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
_RESHAPED = {
    "proj": ("head.weight", lambda v: v.t().contiguous(), lambda v: v.t().contiguous()),
    "class_embedding": ("cls_token", lambda v: v.reshape(1, 1, -1), lambda v: v.reshape(-1)),
    "positional_embedding": ("pos_embed", lambda v: v.unsqueeze(0), lambda v: v.squeeze(0)),
}


def _swap_prefix(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _rename(key: str, top: dict[str, str], in_block: dict[str, str], blocks: str) -> str:
    """``key`` in the other layout; ``blocks`` is the target layout's block-list prefix."""
    key = _swap_prefix(key, top)
    if key.startswith(blocks):
        index, rest = key[len(blocks):].split(".", 1)
        key = f"{blocks}{index}.{_swap_prefix(rest, in_block)}"
    return key


def openai_visual_to_timm(state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Rename OpenAI CLIP ``visual.*`` tensors to timm ``VisionTransformer`` names (keys without the prefix).

    ``proj`` [width, embed] becomes ``head.weight`` [embed, width]; ``class_embedding`` [width] becomes
    ``cls_token`` [1, 1, width]; ``positional_embedding`` [N, width] becomes ``pos_embed`` [1, N, width].
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            k = key[len(prefix):]
            name, to_timm, _ = _RESHAPED.get(k, (_rename(k, _TOP, _IN_BLOCK, "blocks."), lambda v: v, None))
            out[name] = to_timm(value)
    return out


def timm_to_openai_visual(state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Inverse of :func:`openai_visual_to_timm` (used to export OpenAI-layout checkpoints)."""
    top = {new: old for old, new in _TOP.items()}
    in_block = {new: old for old, new in _IN_BLOCK.items()}
    reshaped = {timm: (openai, back) for openai, (timm, _, back) in _RESHAPED.items()}
    out: dict[str, torch.Tensor] = {}
    for k, value in state.items():
        name, to_openai = reshaped.get(k, (_rename(k, top, in_block, "transformer.resblocks."), lambda v: v))
        out[prefix + name] = to_openai(value)
    return out
