"""Temporal fusion ("visual prompts" in the ActionCLIP paper): frame embeddings [B, T, D] -> video embedding [B, D].

Inputs are the raw per-frame ``encode_image`` outputs (not normalised). ``Transf`` is the module behind every
published ActionCLIP checkpoint. Its blocks use QuickGELU whatever the towers' activation: both ActionCLIP and
MMAction2 build them that way.
"""
from __future__ import annotations

import torch
from torch import nn

from actionclip.config import ActionCLIPConfig
from actionclip.layers import Transformer


def _init_linear_embedding(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MeanPooling(nn.Module):
    """``meanP``: the temporal mean. No parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TemporalTransformer(nn.Module):
    """``Transf``: add frame position embeddings, run a transformer over the T frame tokens, add back the raw frame
    features (the residual skips the position embeddings) and average over time."""

    def __init__(self, width: int, layers: int, heads: int, position_rows: int, ln_eps: float) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(position_rows, width)
        self.transformer = Transformer(width, layers, heads, ln_eps=ln_eps)
        self.apply(_init_linear_embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        rows = self.frame_position_embeddings.num_embeddings
        if t > rows:
            raise ValueError(f"clip has {t} frames but the frame position table has only {rows} rows")
        positions = self.frame_position_embeddings.weight[:t].to(x.dtype)
        y = self.transformer(x + positions)  # (B, T, D)
        return (y.to(x.dtype) + x).mean(dim=1)


class TemporalConv(nn.Module):
    """``Conv1D``: a depthwise temporal convolution initialised as a temporal shift (a quarter of the channels look
    at t-1, a quarter at t+1, the rest at t), plus a residual, then the mean over time. Unlike the original code,
    the convolution runs along the time axis (the original reinterprets memory with ``view``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.shift = nn.Conv1d(width, width, kernel_size=3, padding=1, groups=width, bias=False)
        weight = torch.zeros(width, 1, 3)
        quarter = width // 4
        weight[:quarter, 0, 0] = 1.0
        weight[quarter : width - quarter, 0, 1] = 1.0
        weight[width - quarter :, 0, 2] = 1.0
        with torch.no_grad():
            self.shift.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shift(x.transpose(1, 2)).transpose(1, 2)  # convolve over T
        return (y + x).mean(dim=1)


class TemporalLSTM(nn.Module):
    """``LSTM``: a one-layer LSTM over time (in float32), plus a residual, then the mean over time."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lstm_visual = nn.LSTM(width, width, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm_visual(x.float())
        return (y.to(x.dtype) + x).mean(dim=1)


class _ClsAggregator(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, num_frames: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, width))
        layer = nn.TransformerEncoderLayer(d_model=width, nhead=heads, batch_first=True)
        self.transformer_enc = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        for p in (self.cls_token, self.pos_embed):
            with torch.no_grad():  # ActionCLIP's pseudo truncated normal
                p.copy_(torch.randn_like(p).fmod(2) * 0.02)
        for m in self.transformer_enc.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embed[:, : x.shape[1] + 1].to(x.dtype)
        return self.transformer_enc(x)[:, 0]


class TemporalClsTransformer(nn.Module):
    """``Transf_cls``: a post-norm ``nn.TransformerEncoder`` over [CLS] + frames; the output is the CLS token."""

    def __init__(self, width: int, layers: int, heads: int, num_frames: int) -> None:
        super().__init__()
        self.transformer = _ClsAggregator(width, layers, heads, num_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.transformer.pos_embed.shape[1] - 1
        if x.shape[1] > rows:
            raise ValueError(f"clip has {x.shape[1]} frames but Transf_cls was built for {rows}")
        return self.transformer(x)


def build_fusion(cfg: ActionCLIPConfig) -> nn.Module:
    kind, d = cfg.fusion.kind, cfg.embed_dim
    if kind == "meanP":
        return MeanPooling()
    if kind == "Transf":
        return TemporalTransformer(d, cfg.fusion.layers, cfg.fusion_heads, cfg.fusion.position_rows, cfg.fusion.ln_eps)
    if kind == "Conv1D":
        return TemporalConv(d)
    if kind == "LSTM":
        return TemporalLSTM(d)
    if kind == "Transf_cls":
        return TemporalClsTransformer(d, cfg.fusion.layers, cfg.fusion_heads, cfg.num_frames)
    raise AssertionError(kind)  # config validation rejects unknown kinds
