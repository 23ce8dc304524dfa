"""CLIP's text tower with OpenAI parameter names (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.*``, ``ln_final``, ``text_projection``)."""
from __future__ import annotations

import torch
from torch import nn

from actionclip.config import TextConfig
from actionclip.layers import LayerNorm, Transformer
from actionclip.tokenizer import trim_padding


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, activation=cfg.activation)
        self.ln_final = LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)
        self.transformer.init_clip_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] (SOT ... EOT, zero padded) -> embeddings [N, embed_dim] (not normalised).

        The EOT token carries the sentence embedding. Ids on the CPU are trimmed to the longest prompt here
        (:func:`actionclip.tokenizer.trim_padding`: same result, cost follows the real prompt length); ids on an
        accelerator are used as given, because finding their length would sync the device and break
        ``torch.compile``'s graph, so callers trim them before moving them.
        """
        if ids.shape[1] > self.context_length:
            raise ValueError(f"token ids have {ids.shape[1]} positions, the context length is {self.context_length}")
        if ids.device.type == "cpu" and not torch.compiler.is_compiling():
            ids = trim_padding(ids)
        eot = ids.argmax(dim=-1)  # EOT has the largest id
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.transformer(x, causal=True)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection
