"""The pipeline's parameters as plain data (no kfp import), for the CLI flags and the docs.

``pipelines.pipeline.actionclip_pipeline`` declares the same names, types and defaults in its signature (KFP needs a
literal signature); a test holds the two equal.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from actionclip.errors import ConfigError


# training overrides of the demo (see PipelineParams.pretrain_overrides); docs/training.md has the measurements
DEMO_TRAINING = {"flip": False, "color_jitter": False, "multiscale_crop": False, "weight_decay": 0.05}
# fine-tuning on 2 CPU cores: decode each clip once, no loader processes, no validation passes (evaluate does
# that); the text tower stays as pre-trained, which keeps the held-out actions' words where zero-shot needs them
DEMO_FINETUNE = {**DEMO_TRAINING, "cache_clips": True, "num_workers": 0, "val_every": 0, "freeze": ["text"],
                 "threads": 1}


@dataclass
class PipelineParams:
    """Every knob of the pipeline. Defaults: the tiny synthetic CPU demo (`actionclip pipeline run`)."""

    # data
    data_source: str = "synthetic"  # "synthetic" or a path on the data volume (class folders, list, CSV, frames)
    data_format: str = "auto"  # auto | synthetic | folder | mmaction | kinetics | frames | captions
    label_map: str = ""  # label-map file for list sources
    video_root: str = ""  # root for relative paths in list sources
    heldout_labels: list[str] = field(default_factory=list)  # labels kept out of fine-tuning (zero-shot eval)
    val_fraction: float = 0.25  # per-label validation fraction
    synthetic_dir: str = "/data/synthetic"  # where synthetic clips are generated (data volume)
    synthetic_classes: list[str] = field(default_factory=list)  # empty: the 8 seen + 3 held-out default actions
    synthetic_clips_per_class: int = 300
    synthetic_pretrain_clips: int = 0  # extra captioned pre-training clips per synthetic class
    synthetic_frames: int = 16
    synthetic_size: int = 64
    frames_dir: str = ""  # extract videos into JPEG frame folders here (data volume) and train from those ("": no)
    frame_size: int = 256  # scale extracted frames down to this short side (never up; 0 keeps the video's size)
    frame_stride: int = 1  # extract every k-th frame (1: all)
    # model and pre-training
    preset: str = "tiny-8-32px"  # architecture preset, e.g. ViT-B/32-8
    weights: str = "shipped:synthetic-captions"  # start checkpoint: a path, "shipped:NAME" (actionclip.pretrained), "": random init
    num_frames: int = 0  # frames per clip (0: the preset's)
    fusion: str = ""  # temporal fusion override: meanP, Transf, Conv1D, LSTM, Transf_cls ("" keeps)
    pretrain_epochs: float = 0.0  # caption pre-training epochs (0: import the weights only)
    pretrain_max_steps: int = 0
    pretrain_batch_size: int = 32
    pretrain_lr: float = 3e-4
    # prompt
    templates: list[str] = field(default_factory=list)  # extra templates with "{}", scored beside the 16 defaults
    include_default_templates: bool = True
    prompt_rule: str = "top_k"  # top_k | all
    prompt_keep: int = 8
    prompt_max_clips: int = 0  # 0: all clips of the split
    # fine-tuning
    finetune_epochs: float = 14.0
    finetune_max_steps: int = 0
    finetune_warmup_epochs: float = 0.7
    finetune_batch_size: int = 16
    finetune_lr: float = 1.5e-4
    few_shot: int = 0  # K clips per class (0: all)
    finetune_loss: str = "kl"  # kl (ActionCLIP) | infonce
    # evaluation
    eval_num_clips: int = 1  # temporal views per video
    eval_num_crops: int = 1  # spatial crops per view (1 or 3)
    eval_batch_size: int = 16
    # registry
    registry_name: str = "actionclip"
    promotion_metric: str = "top1"
    promotion_margin: float = 0.0  # champion moves when metric > champion's + margin
    # runtime
    experiment: str = "actionclip"  # MLflow experiment
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 2  # DataLoader workers per stage
    work_root: str = ""  # shared folder for resumable stage checkpoints ("": per-task temporary folders)
    # other PretrainConfig / FinetuneConfig fields; the defaults suit the synthetic demo: no flips (they would swap
    # "moving left" and "moving right"), no colour jitter or multi-scale crops, light weight decay
    pretrain_overrides: dict = field(default_factory=lambda: dict(DEMO_TRAINING))
    prompt_overrides: dict = field(default_factory=dict)
    finetune_overrides: dict = field(default_factory=lambda: dict(DEMO_FINETUNE))
    eval_overrides: dict = field(default_factory=dict)


def param_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(PipelineParams))


def defaults() -> dict[str, Any]:
    """Parameter name -> default value."""
    return dataclasses.asdict(PipelineParams())


def help_text(name: str) -> str:
    """The trailing comment of a field, read from this file's source (shown by ``--help``)."""
    import inspect

    for line in inspect.getsource(PipelineParams).splitlines():
        stripped = line.strip()
        if stripped.startswith(f"{name}:") and "#" in stripped:
            return stripped.split("#", 1)[1].strip()
    return ""


def check_names(params: Any) -> None:
    """``ConfigError`` naming the first key of ``params`` that is not a pipeline parameter."""
    import difflib

    names = [f.name for f in param_fields()]
    for key in params:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(f"unknown pipeline parameter {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def parse_value(name: str, text: str) -> Any:
    """Convert a command-line string to the parameter's type (lists: comma-separated; dicts: JSON)."""
    check_names([name])
    tp = str({f.name: f.type for f in param_fields()}[name])
    try:
        if tp == "bool":
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if tp == "int":
            return int(text)
        if tp == "float":
            return float(text)
        if tp.startswith("list"):
            return [v for v in (s.strip() for s in text.split(",")) if v]
        if tp == "dict":
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"pipeline parameter {name!r} expects {tp}, got {text!r}") from None
    return text
