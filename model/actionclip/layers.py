"""Transformer building blocks with OpenAI CLIP's parameter names.

The text tower and the temporal ``Transf`` fusion share these blocks, so checkpoints from OpenAI CLIP, the original
ActionCLIP and MMAction2 map onto them by renaming prefixes only (``ln_1``, ``attn.in_proj_weight``,
``attn.out_proj``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_2``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation CLIP was trained with (not ``nn.GELU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as CLIP does, so bf16/fp16 activations stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout (fused ``in_proj``, rows
    [Wq; Wk; Wv]) computed with ``scaled_dot_product_attention`` (fused kernels; ``is_causal`` instead of a mask)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


def activation_layer(name: str) -> nn.Module:
    """``"quick_gelu"`` (OpenAI CLIP) or ``"gelu"`` (exact GELU, open_clip's own architectures)."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}")


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = activation_layer(activation)  # OpenAI's attribute name, whichever the activation
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, ln_eps: float = 1e-5,
                 activation: str = "quick_gelu") -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width, eps=ln_eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width, eps=ln_eps)
        self.mlp = MLP(width, int(width * mlp_ratio), activation)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


def init_clip_blocks_(blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], width: int) -> None:
    """CLIP's block initialisation on (attention input, attention output, MLP input, MLP output) weights per block.

    Matters when training from scratch: with it, a random tower's features differ from input to input (mean pairwise
    cosine ~0.9 instead of ~0.998 with timm's std-0.02 rule on the tiny presets), which is what lets contrastive
    training start instead of collapsing every feature to one point (docs/training.md).
    """
    attn_std = width**-0.5
    out_std = attn_std * (2 * max(len(blocks), 1)) ** -0.5
    with torch.no_grad():
        for attn_in, attn_out, mlp_in, mlp_out in blocks:
            nn.init.normal_(attn_in, std=attn_std)
            nn.init.normal_(attn_out, std=out_std)
            nn.init.normal_(mlp_in, std=(2 * width) ** -0.5)
            nn.init.normal_(mlp_out, std=out_std)


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock`` on batch-first sequences [B, L, D]."""

    def __init__(self, width: int, layers: int, heads: int, ln_eps: float = 1e-5, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, ln_eps=ln_eps, activation=activation)
                                        for _ in range(layers)])
        self.grad_checkpointing = False

    def init_clip_(self) -> None:
        """OpenAI CLIP's initialisation of its transformer blocks (normal, std width^-0.5 for attention inputs,
        scaled down by (2 * layers)^-0.5 on the residual outputs; (2 * width)^-0.5 for the MLP input)."""
        weights = [(b.attn.in_proj_weight, b.attn.out_proj.weight, b.mlp.c_fc.weight, b.mlp.c_proj.weight)
                   for b in self.resblocks]
        init_clip_blocks_(weights, self.width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal=causal)
        return x
