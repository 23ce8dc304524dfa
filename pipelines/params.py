"""The pipeline's parameters as plain data (no kfp import): the one declaration of each parameter's name, type,
default and meaning, read by the pipeline function (``pipelines.pipeline`` builds its KFP signature from it), the CLI
flags and the docs.

A parameter that is a stage setting takes its default and meaning from the stage config
(``actionclip.train.config``) or the library function it feeds; where the demo wants another value, that value is
in ``DEMO``, the one place the demo recipe is written down.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from typing import Any

from actionclip.data.prepare import prepare_dataset
from actionclip.data.synthetic import generate_synthetic
from actionclip.errors import ConfigError
from actionclip.serving.registry import register_model
from actionclip.train.config import EvaluateConfig, FinetuneConfig, PretrainConfig, PromptConfig, field_help

PRETRAIN, PROMPT, FINETUNE, EVALUATE = PretrainConfig(), PromptConfig(), FinetuneConfig(), EvaluateConfig()

# The demo recipe: the pipeline's defaults where they differ from the library's, so that `actionclip pipeline run`
# trains the tiny synthetic model on a CPU in minutes (docs/training.md has the measurements). The training
# overrides: no flips (they would swap "moving left" and "moving right"), no colour jitter or multi-scale crops,
# light weight decay.
DEMO_TRAINING = {"flip": False, "color_jitter": False, "multiscale_crop": False, "weight_decay": 0.05}
# Fine-tuning on 2 CPU cores: decode each clip once, and give both cores to the training step (two torch threads,
# loading in the main process): on an idle 2-core machine that is 1.3x faster than one thread beside a loader
# worker, while two threads *and* a worker oversubscribe the cores. Two threads, not torch's default, so that the
# weights are the same on any machine with the same CPU kernels. No validation passes (evaluate does that); the
# text tower stays as pre-trained, which keeps the held-out actions' words where zero-shot needs them.
DEMO_FINETUNE = {**DEMO_TRAINING, "cache_clips": True, "num_workers": 0, "val_every": 0, "freeze": ["text"],
                 "threads": 2}
DEMO: dict[str, Any] = {
    "val_fraction": 0.25, "synthetic_clips_per_class": 300, "synthetic_pretrain_clips": 0,
    # the start checkpoint, caption-pre-trained on synthetic clips by this project (actionclip.pretrained)
    "preset": "tiny-8-32px", "weights": "shipped:synthetic-captions",
    "pretrain_epochs": 0.0, "pretrain_batch_size": 32, "pretrain_lr": 3e-4, "pretrain_overrides": DEMO_TRAINING,
    "finetune_epochs": 14.0, "finetune_warmup_epochs": 0.7, "finetune_batch_size": 16, "finetune_lr": 1.5e-4,
    "finetune_overrides": DEMO_FINETUNE,
    "eval_batch_size": 16,
}


def _from(source: Any, name: str, demo: str = "") -> Any:
    """A parameter that is setting ``name`` of ``source`` (a stage config or a library function): its default from
    there (or ``DEMO[demo]``), its meaning from the config's field comment."""
    if dataclasses.is_dataclass(source):
        default, meta = getattr(source, name), {"config": type(source), "field": name}
    else:
        default, meta = inspect.signature(source).parameters[name].default, {}
        default = "" if default is None else default
    if demo:
        default = DEMO[demo]
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _demo(name: str) -> Any:
    """A parameter whose default is the demo recipe's ``DEMO[name]`` (a fresh copy per instance)."""
    return field(default_factory=lambda: copy.deepcopy(DEMO[name]))


@dataclass
class PipelineParams:
    """Every knob of the pipeline. Defaults: the tiny synthetic CPU demo (`actionclip pipeline run`)."""

    # data
    data_source: str = "synthetic"  # "synthetic" or a path on the data volume (class folders, list, CSV, frames)
    data_format: str = _from(prepare_dataset, "format")  # auto | synthetic | folder | mmaction | kinetics | frames ...
    label_map: str = _from(prepare_dataset, "label_map")  # label-map file for list sources
    video_root: str = _from(prepare_dataset, "video_root")  # root for relative paths in list sources
    heldout_labels: list[str] = field(default_factory=list)  # labels kept out of fine-tuning (zero-shot eval)
    val_fraction: float = _from(prepare_dataset, "val_fraction", "val_fraction")  # per-label validation fraction
    synthetic_dir: str = "/data/synthetic"  # where synthetic clips are generated (data volume)
    synthetic_classes: list[str] = field(default_factory=list)  # empty: the 8 seen + 3 held-out default actions
    # synthetic clips per class (train + val)
    synthetic_clips_per_class: int = _from(generate_synthetic, "clips_per_class", "synthetic_clips_per_class")
    # extra captioned pre-training clips per synthetic class
    synthetic_pretrain_clips: int = _from(generate_synthetic, "pretrain_clips_per_class", "synthetic_pretrain_clips")
    synthetic_frames: int = _from(generate_synthetic, "frames")  # frames per synthetic clip
    synthetic_size: int = _from(generate_synthetic, "size")  # synthetic frame size (pixels, square)
    frames_dir: str = _from(prepare_dataset, "frames_dir")  # extract videos into JPEG frame folders here ("": no)
    frame_size: int = _from(prepare_dataset, "frame_short_side")  # scale extracted frames down to this short side
    frame_stride: int = _from(prepare_dataset, "frame_stride")  # extract every k-th frame (1: all)
    # model and pre-training
    preset: str = _from(PRETRAIN, "model", "preset")  # architecture preset, e.g. ViT-B/32-8
    # checkpoint to start from (OpenAI CLIP / ActionCLIP / MMAction2 / ours), "shipped:NAME" (actionclip.pretrained),
    # "": random init of the preset
    weights: str = _demo("weights")
    num_frames: int = _from(PRETRAIN, "num_frames")
    fusion: str = _from(PRETRAIN, "fusion")
    pretrain_epochs: float = _from(PRETRAIN, "epochs", "pretrain_epochs")
    pretrain_max_steps: int = _from(PRETRAIN, "max_steps")
    pretrain_batch_size: int = _from(PRETRAIN, "batch_size", "pretrain_batch_size")
    pretrain_lr: float = _from(PRETRAIN, "lr", "pretrain_lr")
    # prompt
    templates: list[str] = _from(PROMPT, "templates")
    include_default_templates: bool = _from(PROMPT, "include_default")
    prompt_rule: str = _from(PROMPT, "rule")
    prompt_keep: int = _from(PROMPT, "keep")
    prompt_max_clips: int = _from(PROMPT, "max_clips")
    # fine-tuning
    finetune_epochs: float = _from(FINETUNE, "epochs", "finetune_epochs")
    finetune_max_steps: int = _from(FINETUNE, "max_steps")
    finetune_warmup_epochs: float = _from(FINETUNE, "warmup_epochs", "finetune_warmup_epochs")
    finetune_batch_size: int = _from(FINETUNE, "batch_size", "finetune_batch_size")
    finetune_lr: float = _from(FINETUNE, "lr", "finetune_lr")
    few_shot: int = _from(FINETUNE, "few_shot")
    finetune_loss: str = _from(FINETUNE, "loss")
    # evaluation (eval_batch_size also batches the prompt stage)
    eval_num_clips: int = _from(EVALUATE, "num_clips")
    eval_num_crops: int = _from(EVALUATE, "num_crops")
    eval_batch_size: int = _from(EVALUATE, "batch_size", "eval_batch_size")
    # registry
    registry_name: str = _from(register_model, "name")  # MLflow registered model name
    promotion_metric: str = _from(register_model, "metric")  # evaluation metric compared with the champion's
    promotion_margin: float = _from(register_model, "margin")  # champion moves when metric > champion's + margin
    # runtime, the same for every stage
    experiment: str = _from(PRETRAIN, "experiment")
    seed: int = _from(PRETRAIN, "seed")
    device: str = _from(PRETRAIN, "device")
    num_workers: int = _from(PRETRAIN, "num_workers")
    # resumable stage checkpoints on the data volume, keyed by KFP run id and stage: a retried task resumes from its
    # last checkpoint ("": per-task temporary folders, what `actionclip pipeline run` uses locally)
    work_root: str = "/data/work"  # folder for resumable stage checkpoints, per run id and stage ("": temporary)
    # other stage config fields, per stage
    pretrain_overrides: dict = _demo("pretrain_overrides")  # other PretrainConfig fields
    prompt_overrides: dict = field(default_factory=dict)  # other PromptConfig fields
    finetune_overrides: dict = _demo("finetune_overrides")  # other FinetuneConfig fields
    eval_overrides: dict = field(default_factory=dict)  # other EvaluateConfig fields


def param_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(PipelineParams))


def defaults() -> dict[str, Any]:
    """Parameter name -> default value."""
    return dataclasses.asdict(PipelineParams())


def help_text(name: str) -> str:
    """The parameter's meaning (shown by ``--help`` and in the pipeline's KFP descriptions): the trailing comment of
    its field here, else the comment of the stage config field it is, else a comment line of its own just above."""
    import re

    source = inspect.getsource(PipelineParams)
    trailing = re.search(rf"^\s+{name}: [^#\n]*#\s*(.+)$", source, flags=re.M)
    if trailing:
        return trailing.group(1).strip()
    meta = {f.name: f.metadata for f in param_fields()}[name]
    if "config" in meta and field_help(meta["config"]).get(meta["field"]):
        return field_help(meta["config"])[meta["field"]]
    above = re.search(rf"^\s+#\s*(.+)\n\s+{name}: ", source, flags=re.M)
    return above.group(1).strip() if above else ""


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
    import typing

    from actionclip.train.config import coerce

    check_names([name])
    tp = typing.get_type_hints(PipelineParams)[name]
    try:
        if tp is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return coerce(name, text, tp)
    except (ValueError, ConfigError):  # json.JSONDecodeError is a ValueError
        kind = {f.name: str(f.type) for f in param_fields()}[name]
        raise ConfigError(f"pipeline parameter {name!r} expects {kind}, got {text!r}") from None
