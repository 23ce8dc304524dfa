"""Prompts and ActionCLIP's test-time scoring.

Scoring (original ``test.py`` and MMAction2 ``predict``): L2-normalise video and prompt features, scale by a fixed
100, softmax over classes separately for each template, then average the per-template probabilities.
CLIP-style prompt ensembling (mean of normalised text embeddings, one softmax) is available as ``ensemble="clip"``.
"""
from __future__ import annotations

import json
import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from actionclip.errors import ActionCLIPError
from actionclip.tokenizer import tokenize, trim_padding

TEMPLATES: tuple[str, ...] = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)
TEST_SCALE = 100.0
ENSEMBLES = ("actionclip", "clip")


class PromptError(ActionCLIPError, ValueError):
    """Bad labels or templates (empty label list, a template without ``{}``)."""


def check_prompts(labels: Sequence[str], templates: Sequence[str]) -> None:
    if len(labels) == 0:
        raise PromptError("the label list is empty")
    if any(not isinstance(label, str) or not label.strip() for label in labels):
        raise PromptError("labels must be non-empty strings")
    if len(templates) == 0:
        raise PromptError("the template list is empty")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise PromptError(f"template(s) without a '{{}}' placeholder for the label: {bad}")


def build_prompts(labels: Sequence[str], templates: Sequence[str] | None = None) -> list[str]:
    """Template-major prompt list: entry ``k * C + c`` is template k applied to label c."""
    templates = TEMPLATES if templates is None else tuple(templates)
    check_prompts(labels, templates)
    return [t.replace("{}", label) for t in templates for label in labels]


class PromptFeatureCache:
    """One model's prompt features by (labels, templates, device, weights version), least recently used dropped
    first beyond ``maxsize`` (a serving process sees few label sets; memory stays bounded anyway). ``hits`` and
    ``misses`` make "a repeated label set costs no text encoding" checkable.

    Two guards keep entries fresh: the key includes the text parameters' in-place version counters (bumped by
    ordinary optimiser steps and load_state_dict), and ``ActionCLIP.train()`` empties the cache, because fused
    optimiser kernels update weights without bumping those counters.
    """

    def __init__(self, maxsize: int = 32) -> None:
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get(self, model: torch.nn.Module, labels: Sequence[str], templates: Sequence[str],
            batch_size: int = 1024) -> torch.Tensor:
        key = (tuple(labels), tuple(templates), next(model.parameters()).device.type, _weights_version(model))
        feats = self._store.get(key)
        if feats is not None:
            self.hits += 1
            self._store.move_to_end(key)
            return feats
        self.misses += 1
        feats = prompt_features(model, labels, templates, batch_size)
        self._store[key] = feats
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return feats

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


_CACHES: "weakref.WeakKeyDictionary[torch.nn.Module, PromptFeatureCache]" = weakref.WeakKeyDictionary()


def prompt_cache(model: torch.nn.Module) -> PromptFeatureCache:
    """The prompt-feature cache of ``model`` (created on first use; it lives as long as the model)."""
    cache = _CACHES.get(model)
    if cache is None:
        cache = _CACHES[model] = PromptFeatureCache()
    return cache


def clear_prompt_cache(model: torch.nn.Module) -> None:
    cache = _CACHES.get(model)
    if cache is not None:
        cache.clear()


def _weights_version(model: torch.nn.Module) -> int:
    return sum(p._version for p in model.text.parameters())


@torch.no_grad()
def prompt_features(model: torch.nn.Module, labels: Sequence[str], templates: Sequence[str] | None = None,
                    batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised prompt features [K, C, D] (K templates, C labels) on the model's device, uncached.

    Prompts are encoded in batches, each trimmed on the host to its longest prompt (``trim_padding``).
    """
    templates = TEMPLATES if templates is None else tuple(templates)
    device = next(model.parameters()).device
    ids = tokenize(build_prompts(labels, templates), context_length=model.context_length, truncate=True)
    feats = torch.cat([model.encode_text(trim_padding(ids[i : i + batch_size]).to(device))
                       for i in range(0, len(ids), batch_size)])
    return F.normalize(feats.float(), dim=-1).view(len(templates), len(labels), -1)


def encode_prompts(model: torch.nn.Module, labels: Sequence[str], templates: Sequence[str] | None = None,
                   batch_size: int = 1024) -> torch.Tensor:
    """:func:`prompt_features`, cached per (labels, templates, weights)."""
    templates = TEMPLATES if templates is None else tuple(templates)
    return prompt_cache(model).get(model, labels, templates, batch_size)


def actionclip_scores(video_features: torch.Tensor, text_features: torch.Tensor, scale: float = TEST_SCALE,
                      ensemble: str = "actionclip") -> torch.Tensor:
    """Class probabilities [B, C] from video features [B, D] (any norm) and prompt features [K, C, D].

    ``actionclip``: softmax over classes per template, mean over templates. ``clip``: mean of the normalised
    prompt features per class, then one softmax.
    """
    v = F.normalize(video_features.float(), dim=-1)
    t = F.normalize(text_features.float(), dim=-1)
    if ensemble == "actionclip":
        logits = scale * torch.einsum("bd,kcd->bkc", v, t)
        return logits.softmax(dim=-1).mean(dim=1)
    if ensemble == "clip":
        class_emb = F.normalize(t.mean(dim=0), dim=-1)
        return (scale * v @ class_emb.t()).softmax(dim=-1)
    raise PromptError(f"unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}")


@torch.no_grad()
def zero_shot_probs(model: torch.nn.Module, video: torch.Tensor, labels: Sequence[str],
                    templates: Sequence[str] | None = None, ensemble: str = "actionclip") -> torch.Tensor:
    """Classify CLIP-normalised clips [B, T, 3, H, W] among ``labels`` -> probabilities [B, C]."""
    text = encode_prompts(model, labels, templates)
    device = next(model.parameters()).device
    return actionclip_scores(model.encode_video(video.to(device)), text, ensemble=ensemble)


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """The templates the prompt stage kept: the ``templates`` list of a prompt.json (a directory means its
    prompt.json). ``PromptError`` when the file cannot be read or holds no list of strings with a ``{}``."""
    p = Path(path)
    if p.is_dir():
        p = p / "prompt.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptError(f"cannot read prompt file {p}: {exc}") from None
    templates = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and "{}" in t
                                                                   for t in templates):
        raise PromptError(f"prompt file {p} has no usable 'templates' list (strings with '{{}}')")
    return templates


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics-400 class names in the original / MMAction2 label-map order."""
    from importlib import resources

    from actionclip.labels import parse_labels

    return parse_labels(resources.files("actionclip").joinpath("assets/kinetics400_labels.txt").read_text())
