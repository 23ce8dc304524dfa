"""A straightforward eager re-statement of the ORIGINAL models, used as the oracle for numerical tests.

It follows the published architecture descriptions literally (sequence-first ``nn.MultiheadAttention``, a 77x77
additive causal mask, EOT pooling over the full padded context, ActionCLIP's ``visual_prompt`` "Transf" with its
TF-style LayerNorm eps 1e-12 and 77-row position table, MMAction2's ``TransformerAdapter`` with CLIP LayerNorm and a
T-row table), with OpenAI / ActionCLIP / MMAction2 parameter names, so its ``state_dict()`` *is* a checkpoint in the
source layouts. It shares no code with ``actionclip``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class LayerNormFP32(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class TFLayerNorm(nn.Module):
    """ActionCLIP's "TF style" LayerNorm (epsilon inside the square root), eps 1e-12."""

    def __init__(self, width, eps=1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)) + self.bias


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads, attn_mask=None, ln=LayerNormFP32, act=QuickGELU):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = ln(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", act()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = ln(width)
        self.attn_mask = attn_mask

    def forward(self, x):  # x: (L, N, D)
        mask = self.attn_mask.to(x.dtype) if self.attn_mask is not None else None
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Stack(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None, ln=LayerNormFP32, act=QuickGELU):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, heads, attn_mask, ln, act) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisualTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, out, act=QuickGELU):
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((resolution // patch) ** 2 + 1, width))
        self.ln_pre = LayerNormFP32(width)
        self.transformer = Stack(width, layers, heads, act=act)
        self.ln_post = LayerNormFP32(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    """OpenAI's CLIP; ``act=nn.GELU`` gives open_clip's own architectures (its ``quick_gelu=False`` default)."""

    def __init__(self, embed=128, resolution=32, patch=8, vwidth=128, vlayers=2, ctx=77, vocab=49408,
                 twidth=128, tlayers=2, act=QuickGELU):
        super().__init__()
        self.visual = VisualTransformer(resolution, patch, vwidth, vlayers, vwidth // 64, embed, act=act)
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.transformer = Stack(twidth, tlayers, twidth // 64, attn_mask=mask, act=act)
        self.token_embedding = nn.Embedding(vocab, twidth)
        self.positional_embedding = nn.Parameter(torch.randn(ctx, twidth) * 0.01)
        self.ln_final = LayerNormFP32(twidth)
        self.text_projection = nn.Parameter(torch.randn(twidth, embed) * twidth**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))
        with torch.no_grad():  # non-trivial LayerNorm and bias values so the mapping of every tensor matters
            for name, p in self.named_parameters():
                if name.endswith("bias") or ".ln_" in name or name.startswith("ln_"):
                    p.add_(0.05 * torch.randn_like(p))

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


class VisualPromptTransf(nn.Module):
    """ActionCLIP "Transf": 77-row position table, TF LayerNorm; MMAction2 adapter when ``mmaction=True``.

    ``heads`` defaults to ``embed // 64``, which equals the original's rule only when the text width equals the
    embedding width; :func:`visual_prompt_for` applies the original's rule itself.
    """

    def __init__(self, embed=128, layers=6, rows=77, mmaction=False, heads=None):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(rows, embed)
        ln = LayerNormFP32 if mmaction else TFLayerNorm
        self.transformer = Stack(embed, layers, heads or embed // 64, ln=ln)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "ln_" in name or name.endswith("bias"):
                    p.add_(0.05 * torch.randn_like(p))
                elif p.dim() >= 2:
                    p.normal_(std=0.02) if "in_proj" not in name else None

    def forward(self, x):  # x: (B, T, D)
        b, t, c = x.shape
        x_orig = x
        pos = self.frame_position_embeddings(torch.arange(t).unsqueeze(0).expand(b, -1))
        x = (x + pos).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2).type(x_orig.dtype) + x_orig
        return x.mean(dim=1)


def visual_prompt_for(clip_state, layers=6, rows=77, mmaction=False):
    """The temporal module the original code builds for a CLIP state dict: ActionCLIP's ``visual_prompt`` reads the
    embedding width from ``text_projection`` and the heads from the *text* tower, ``ln_final``'s width // 64
    (MMAction2's configs pass the same ``transformer_heads``)."""
    embed = clip_state["text_projection"].shape[1]
    heads = clip_state["ln_final.weight"].shape[0] // 64
    return VisualPromptTransf(embed=embed, layers=layers, rows=rows, mmaction=mmaction, heads=heads)


def convert_weights_fp16(model: nn.Module) -> None:
    """OpenAI's ``convert_weights``: Conv/Linear/MHA weights and the projections to fp16, the rest stays fp32."""

    def cast(m):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.data = m.weight.data.half()
            if m.bias is not None:
                m.bias.data = m.bias.data.half()
        if isinstance(m, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "in_proj_bias"):
                t = getattr(m, attr)
                if t is not None:
                    t.data = t.data.half()
        for name in ("text_projection", "proj"):
            if hasattr(m, name) and isinstance(getattr(m, name), nn.Parameter):
                getattr(m, name).data = getattr(m, name).data.half()

    model.apply(cast)
