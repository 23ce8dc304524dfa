"""CLIP's text tower with OpenAI parameter names (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.*``, ``ln_final``, ``text_projection``)."""
from __future__ import annotations

import torch
from torch import nn

from actionclip.config import TextConfig
from actionclip.layers import LayerNorm, Transformer


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)
        self.transformer.init_clip_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] (SOT ... EOT, zero padded) -> embeddings [N, embed_dim] (not normalised).

        The EOT token carries the sentence embedding. Under the causal mask its output depends only on the tokens
        before it, so padding after the longest prompt is dropped before the transformer: same result, and the cost
        follows the real prompt length instead of the context length.
        """
        if ids.shape[1] > self.context_length:
            raise ValueError(f"token ids have {ids.shape[1]} positions, the context length is {self.context_length}")
        eot = ids.argmax(dim=-1)  # EOT has the largest id
        length = int(eot.max()) + 1
        ids = ids[:, :length]
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.transformer(x, causal=True)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection
