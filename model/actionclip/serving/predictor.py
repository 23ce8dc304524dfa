"""The inference engine shared by ``actionclip predict`` and the MLflow pyfunc model.

One call scores a batch of requests: every video is decoded to a uint8 clip [T, 3, S, S], the clips are stacked and
encoded in one forward pass ([B, T, 3, S, S] -> [B, D]), and each distinct (labels, templates) group is scored
against its cached prompt features [K, C, D] with ActionCLIP's test-time rule (softmax per template, mean over
templates).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from actionclip.serving.errors import ServingInputError
from actionclip.serving.limits import ServingLimits
from actionclip.serving.requests import PredictRequest, check_template, group_by_text, read_label_file
from actionclip.serving.video_input import load_clip


@dataclass
class Prediction:
    """Top-k labels (best first) with their probabilities; ``all_probs`` maps every label when asked for."""

    labels: list[str]
    probs: list[float]
    all_probs: dict[str, float] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.labels, "probs": self.probs}
        if self.all_probs is not None:
            out["all_probs"] = self.all_probs
        return out


def load_prompt_templates(prompt: str | os.PathLike[str] | None) -> list[str] | None:
    """Templates kept by the prompt stage (prompt.json ``templates``); None when no file is given."""
    if prompt is None:
        return None
    from actionclip.zeroshot import PromptError, read_prompt_file

    try:
        templates = read_prompt_file(prompt)
    except PromptError as exc:
        raise ServingInputError(str(exc)) from None
    for t in templates:  # serving is stricter: exactly one "{}" and no other braces
        check_template(t, f"prompt file {prompt}")
    return templates


class VideoPredictor:
    """Zero-shot / closed-set video classifier around an ``ActionCLIP`` model.

    ``labels``: default label set (None: every request must send its own); ``templates``: default prompt
    templates (None: ``actionclip.TEMPLATES``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        labels: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        limits: ServingLimits | None = None,
        cache_size: int = 32,
    ) -> None:
        import actionclip

        self.model = model.eval()
        self.labels = tuple(labels) if labels else None
        self.templates = tuple(templates) if templates else tuple(actionclip.TEMPLATES)
        # in-process use reads the caller's own files; the served pyfunc passes its (closed by default) limits
        self.limits = limits or ServingLimits(allow_paths=True)
        from actionclip.zeroshot import prompt_cache

        self.text_cache = prompt_cache(self.model)  # the model's own cache, which encode_prompts fills
        self.text_cache.maxsize = max(self.text_cache.maxsize, cache_size)

    @classmethod
    def from_files(
        cls,
        model_path: str | os.PathLike[str],
        labels: str | os.PathLike[str] | Sequence[str] | None = None,
        prompt: str | os.PathLike[str] | None = None,
        *,
        int8: bool = False,
        limits: ServingLimits | None = None,
    ) -> "VideoPredictor":
        """Load a ``save_pretrained`` directory (or weights file); ``labels`` is a labels.txt path or a list."""
        import actionclip

        model = actionclip.load(model_path)
        if int8:
            from actionclip.serving.quantize import quantize_int8

            model = quantize_int8(model, inplace=True)
        if isinstance(labels, (str, os.PathLike)):
            labels = read_label_file(labels)
        return cls(model, labels, load_prompt_templates(prompt), limits)

    # -- pieces, public so that the benchmark can time them separately ---------------------------------------

    def load_videos(self, requests: Sequence[PredictRequest]) -> torch.Tensor:
        """Decode every request's video -> uint8 [B, T, 3, S, S]."""
        size, frames = self.model.image_size, self.model.num_frames
        clips = [load_clip(r.video, frames, size, where=f"row {i}") for i, r in enumerate(requests)]
        return torch.stack(clips)

    def video_features(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, S, S] -> video embeddings [B, D] (not normalised)."""
        from actionclip.data import normalize_video

        with torch.inference_mode():
            return self.model.encode_video(normalize_video(videos))

    def text_features(self, labels: Sequence[str] | None, templates: Sequence[str] | None) -> torch.Tensor:
        """Cached prompt features [K, C, D] for a (labels, templates) pair; None means the model's defaults."""
        import actionclip

        labels = self.resolve_labels(labels)
        templates = tuple(templates) if templates else self.templates
        with torch.inference_mode():
            return actionclip.encode_prompts(self.model, labels, templates)

    def resolve_labels(self, labels: Sequence[str] | None) -> tuple[str, ...]:
        if labels:
            return tuple(labels)
        if self.labels is None:
            raise ServingInputError("this model has no default label list: send 'labels' with the request")
        return self.labels

    # -- the whole path ---------------------------------------------------------------------------------------

    def predict(self, requests: Sequence[PredictRequest]) -> list[Prediction]:
        """Score a batch of requests; output order follows input order."""
        import actionclip

        if not requests:
            return []
        # Resolve label sets first so a request with no labels fails before any decoding work.
        groups = group_by_text(requests)
        text = {key: self.text_features(*key) for key in groups}
        video = self.video_features(self.load_videos(requests))
        out: list[Prediction | None] = [None] * len(requests)
        for key, rows in groups.items():
            labels = self.resolve_labels(key[0])
            with torch.inference_mode():
                probs = actionclip.actionclip_scores(video[rows], text[key])  # [len(rows), C]
            for j, row in enumerate(rows):
                out[row] = _prediction(probs[j], labels, requests[row])
        return [p for p in out if p is not None]


def _prediction(probs: torch.Tensor, labels: Sequence[str], request: PredictRequest) -> Prediction:
    """probs [C] -> top-k labels/probabilities (plus all of them when asked)."""
    probs = probs.float()
    k = min(request.top_k, probs.numel())
    top = torch.topk(probs, k)
    values = [float(v) for v in top.values]
    names = [labels[int(i)] for i in top.indices]
    all_probs = {lab: float(p) for lab, p in zip(labels, probs.tolist())} if request.return_all else None
    return Prediction(names, values, all_probs)
