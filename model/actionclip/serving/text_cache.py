"""A small LRU cache of prompt embeddings keyed by (labels, templates): a repeated label set costs no text
encoding. Hit/miss counters make that checkable by tests and the benchmark."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

Key = tuple[tuple[str, ...], tuple[str, ...]]


class TextFeatureLRU:
    """``get(labels, templates)`` -> normalised prompt features [K, C, D], computed by ``encode`` on a miss."""

    def __init__(self, encode: Callable[[list[str], list[str]], torch.Tensor], maxsize: int = 32) -> None:
        self._encode = encode
        self._store: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        key = (tuple(labels), tuple(templates))
        feats = self._store.get(key)
        if feats is not None:
            self.hits += 1
            self._store.move_to_end(key)
            return feats
        self.misses += 1
        feats = self._encode(list(labels), list(templates))
        self._store[key] = feats
        if len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return feats

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)
