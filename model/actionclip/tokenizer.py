"""CLIP's byte-level BPE tokenizer (identical ids to OpenAI CLIP).

Text is cleaned (ftfy, double HTML unescape, whitespace collapse, lower-case), split with CLIP's pre-tokenisation
pattern, mapped byte-by-byte to printable unicode and merged with the 48,894 BPE merges shipped in
``assets/bpe_simple_vocab_16e6.txt.gz``. Sequences are ``[SOT] + tokens + [EOT]``, zero-padded. A literal
``<|startoftext|>`` or ``<|endoftext|>`` that the pattern finds as a piece of its own is that special id, as in
OpenAI's tokenizer (open_clip differs here: its special strings are ``<start_of_text>`` / ``<end_of_text>``).
"""
from __future__ import annotations

import functools
import gzip
import html
from importlib import resources
from typing import Iterable, Sequence

import ftfy
import regex
import torch

from actionclip.errors import ActionCLIPError

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2  # the merge file holds more lines than CLIP uses

_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


class TextTooLongError(ActionCLIPError, ValueError):
    """A prompt does not fit in the context length and ``truncate`` was not requested."""


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode table (printable latin-1 bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def clean_text(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class SimpleTokenizer:
    """Encodes text to CLIP token ids. ``encode`` gives the inner ids (no SOT/EOT, no padding)."""

    def __init__(self, bpe_path: str | None = None) -> None:
        if bpe_path is None:
            data = resources.files("actionclip").joinpath("assets/bpe_simple_vocab_16e6.txt.gz").read_bytes()
            lines = gzip.decompress(data).decode("utf-8").split("\n")
        else:
            with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        self.byte_encoder = _byte_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.byte_decoder = {u: b for b, u in self.byte_encoder.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self.special_ids = {SOT_TOKEN: self.sot_token_id, EOT_TOKEN: self.eot_token_id}
        self.vocab_size = len(vocab)

    @functools.lru_cache(maxsize=65536)
    def bpe(self, word: str) -> tuple[str, ...]:
        """Merge one pre-token (already byte-mapped) into BPE symbols; the last symbol carries ``</w>``."""
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            if piece in self.special_ids:  # never split by BPE: OpenAI's tokenizer caches them as themselves
                ids.append(self.special_ids[piece])
                continue
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in (0, self.sot_token_id, self.eot_token_id))
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False) -> torch.Tensor:
    """Tokenise one or more prompts for the text tower.

    Args:
        texts: a string or a sequence of strings.
        context_length: output width (77 for every released CLIP).
        truncate: cut over-long prompts to ``context_length`` (the last id is then EOT) instead of raising.

    Returns:
        LongTensor [N, context_length]: ``SOT, tokens..., EOT`` then zeros.
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = get_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id]
        if len(ids) > context_length:
            if not truncate:
                raise TextTooLongError(
                    f"prompt is {len(ids)} tokens, longer than the context length {context_length}: {text[:60]!r}... "
                    "(shorten it or pass truncate=True)"
                )
            ids = ids[:context_length]
            ids[-1] = tok.eot_token_id
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop the zero padding after the longest prompt: [N, L] -> [N, L'], L' = 1 + the last EOT position.

    Under CLIP's causal mask the EOT output never sees later positions, so trimming changes no embedding; it only makes
    the text tower's cost follow the real prompt length. Trim on the host, before moving ids to an accelerator:
    reading L' from a GPU tensor would stall the device queue.
    """
    if ids.numel() == 0:
        return ids
    return ids[:, : int(ids.argmax(dim=-1).max()) + 1]  # EOT has the largest id
