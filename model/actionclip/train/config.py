"""Typed configuration for the four training stages.

One dataclass per stage (``PretrainConfig``, ``PromptConfig``, ``FinetuneConfig``, ``EvaluateConfig``). Every field has
a default, can be loaded from a YAML or JSON file (unknown keys are rejected with the nearest valid names), and can be
overridden on the command line (``--field-name value``; booleans as ``--flag`` / ``--no-flag``; lists as several
values). ``to_dict()`` gives the fully resolved config for logging. This module imports nothing heavy: the CLI builds
its parsers from these classes.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar, Union

from actionclip.coercion import parse_bool
from actionclip.errors import ConfigError

C = TypeVar("C", bound="StageConfig")

PRECISIONS = ("auto", "fp32", "bf16")
COLOR_PLACES = ("auto", "loader", "device")
FINETUNE_LOSSES = ("kl", "infonce")
PRETRAIN_LOSSES = ("clip", "kl")
PROMPT_RULES = ("top_k", "all")
TOWERS = ("image", "text", "fusion")


@dataclass
class StageConfig:
    """Fields shared by every stage: where data comes from, where outputs go, tracking and runtime settings."""

    STAGE: ClassVar[str] = ""

    data: str = ""  # prepared dataset directory (manifest.jsonl, labels.txt, ...)
    model: str = "tiny-8"  # preset name, checkpoint file or model directory to start from
    out_dir: str = ""  # outputs go here; default: runs/<stage>
    seed: int = 0  # random seed (data order, augmentation, initialisation)
    device: str = "auto"  # auto: cuda when available, else cpu
    num_workers: int = 2  # DataLoader worker processes per rank
    threads: int = 0  # torch CPU threads (0: torch's default / OMP_NUM_THREADS); 1 avoids oversubscribed cores
    batch_size: int = 8  # clips per optimiser step (all ranks and accumulation steps together) / per eval batch
    experiment: str = "actionclip"  # MLflow experiment name
    run_name: str = ""  # MLflow run name; default: the stage name
    parent_run_id: str = ""  # nest this stage's MLflow run under this run (a pipeline run)
    tracking: bool = True  # log to MLflow (tracking URI from MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)
    quiet: bool = False  # no progress bar; one log line per epoch instead

    # ------------------------------------------------------------------ construction and I/O
    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Field name -> resolved type annotation."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build and validate a config; unknown keys and wrongly typed values raise ``ConfigError``."""
        types_ = cls.field_types()
        unknown = [k for k in values if k.replace("-", "_") not in types_]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key.replace("-", "_"), types_, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown {cls.STAGE} config key(s): {', '.join(hints)}")
        kwargs = {k.replace("-", "_"): coerce(k, v, types_[k.replace("-", "_")]) for k, v in values.items()}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls: type[C], path: str | Path, overrides: Mapping[str, Any] | None = None) -> C:
        """Load a YAML (``.yaml``/``.yml``) or JSON file, then apply ``overrides`` on top."""
        values = dict(read_config_file(path))
        values.update(overrides or {})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (for logging and for reproducing the run)."""
        return {"stage": self.STAGE, **dataclasses.asdict(self)}

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        return type(self).from_dict({**dataclasses.asdict(self), **changes})

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first impossible value."""
        _positive(self, "batch_size")
        _at_least(self, "num_workers", 0)
        _at_least(self, "threads", 0)

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.STAGE}")


@dataclass
class TrainingConfig(StageConfig):
    """Optimisation, precision, checkpointing and distributed settings shared by pre-training and fine-tuning."""

    epochs: float = 1.0  # schedule length; fractional epochs allowed
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs); the schedule still spans `epochs`
    lr: float = 5e-6  # base learning rate of the CLIP towers (text group; image group x visual_lr_mult)
    visual_lr_mult: float = 1.0
    fusion_lr_mult: float = 10.0  # the temporal fusion module is new, so it learns 10x faster (ActionCLIP f_ratio)
    weight_decay: float = 0.2  # applied to every parameter, as ActionCLIP does
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_epochs: float = 0.0  # linear warm-up from 0, then cosine to 0 by `epochs` (by fractional epoch)
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    accum_steps: int = 1  # micro-batches per optimiser step on each rank
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the model
    augment: bool = True  # random frames + crops (TrainTransform); off: the test sampling and centre crop
    flip: bool = True  # random horizontal flips when augmenting (turn off when left/right is part of the label)
    color_jitter: bool = True  # ActionCLIP's colour jitter and random grayscale when augmenting
    # on the device the draws stay per clip (made in the workers); only the pixel work moves, off the worker CPUs
    color_on: str = "auto"  # where colour jitter runs: loader (workers), device (whole batches), auto: device on CUDA
    multiscale_crop: bool = True  # ActionCLIP's multi-scale crop when augmenting; off: a short-side square
    cache_clips: bool = False  # keep every decoded video in memory (per loader worker); sampling/augmentation still run
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps (0: only at epoch ends)
    keep_checkpoints: int = 2  # newest step checkpoints kept (epoch-end ones count too)
    resume: str = "auto"  # auto: newest checkpoint in out_dir/checkpoints if any; never; or a checkpoint path
    log_every: int = 10  # optimiser steps between per-step MLflow metrics
    val_every: int = 1  # epochs between validation passes (0: none)
    freeze: list[str] = field(default_factory=list)  # towers kept fixed: any of image, text, fusion

    def validate(self) -> None:
        super().validate()
        _at_least(self, "epochs", 0)
        _at_least(self, "max_steps", 0)
        _positive(self, "lr")
        _at_least(self, "visual_lr_mult", 0)
        _at_least(self, "fusion_lr_mult", 0)
        _at_least(self, "weight_decay", 0)
        _at_least(self, "warmup_epochs", 0)
        _at_least(self, "grad_clip", 0)
        _positive(self, "accum_steps")
        _at_least(self, "checkpoint_every", 0)
        _positive(self, "keep_checkpoints")
        _positive(self, "log_every")
        _at_least(self, "val_every", 0)
        _choice(self, "precision", PRECISIONS)
        _choice(self, "color_on", COLOR_PLACES)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{self.STAGE} config: betas must be two numbers in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ConfigError(f"{self.STAGE} config: eps must be > 0, got {self.eps}")
        bad = [t for t in self.freeze if t not in TOWERS]
        if bad:
            raise ConfigError(f"{self.STAGE} config: freeze accepts {', '.join(TOWERS)}; got {', '.join(bad)}")
        if self.warmup_epochs > self.epochs > 0:
            raise ConfigError(
                f"{self.STAGE} config: warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})"
            )


@dataclass
class PretrainConfig(TrainingConfig):
    """Initialise a model (preset, OpenAI CLIP, ActionCLIP, MMAction2 or our checkpoint) and optionally continue
    contrastive video-caption pre-training (symmetric InfoNCE, as CLIP). ``epochs: 0`` imports only."""

    STAGE: ClassVar[str] = "pretrain"

    epochs: float = 0.0  # caption pre-training epochs (0: import the weights only)
    preset: str = ""  # preset whose frame count and fusion a checkpoint `model` gets ("": the checkpoint's own)
    num_frames: int = 0  # frames per clip (0: the preset's: `model` itself when it is a preset, else `preset`)
    fusion: str = ""  # temporal fusion: meanP, Transf, Conv1D, LSTM, Transf_cls ("": the preset's, as num_frames)
    split: list[str] = field(default_factory=lambda: ["pretrain", "train"])  # splits whose clips/captions are used
    caption_template: str = "a video of {}"  # text for clips without a caption (label substituted)
    loss: str = "clip"  # clip: symmetric InfoNCE, diagonal targets; kl: identical captions count as positives

    def validate(self) -> None:
        super().validate()
        _at_least(self, "num_frames", 0)
        _choice(self, "loss", PRETRAIN_LOSSES)
        if self.epochs > 0 and not self.data:
            raise ConfigError("pretrain config: epochs > 0 needs a prepared dataset (--data)")
        if "{}" not in self.caption_template:
            raise ConfigError("pretrain config: caption_template must contain '{}' for the label")


@dataclass
class PromptConfig(StageConfig):
    """Score candidate templates by zero-shot accuracy on a split and keep the best ones."""

    STAGE: ClassVar[str] = "prompt"

    split: str = "val"  # manifest split the templates are scored on
    templates: list[str] = field(default_factory=list)  # user templates with '{}', scored beside the defaults
    include_default: bool = True  # also score ActionCLIP's 16 templates
    rule: str = "top_k"  # top_k: keep the `keep` best by top-1 (ties: original order); all: keep every template
    keep: int = 8  # templates kept by top_k
    max_clips: int = 0  # score on at most this many clips (0: all)

    def validate(self) -> None:
        super().validate()
        _choice(self, "rule", PROMPT_RULES)
        _positive(self, "keep")
        _at_least(self, "max_clips", 0)
        bad = [t for t in self.templates if "{}" not in t]
        if bad:
            raise ConfigError(f"prompt config: templates need a '{{}}' for the label name: {bad[0]!r}")
        if not self.templates and not self.include_default:
            raise ConfigError("prompt config: no candidate templates (include_default is off and templates is empty)")


@dataclass
class FinetuneConfig(TrainingConfig):
    """End-to-end fine-tuning with ActionCLIP's objective on labelled clips."""

    STAGE: ClassVar[str] = "finetune"

    epochs: float = 10.0  # fine-tuning epochs (fractional allowed)
    warmup_epochs: float = 1.0  # linear warm-up from 0 before the cosine schedule
    prompt: str = ""  # prompt.json from the prompt stage (its kept templates); "" uses the 16 default templates
    loss: str = "kl"  # kl: ActionCLIP (same-label targets, softmax(10 G)); infonce: MMAction2 (diagonal targets)
    few_shot: int = 0  # train on K clips per class (seeded choice); 0: all
    val_split: str = "val"  # manifest split validated on after each epoch

    def validate(self) -> None:
        super().validate()
        _choice(self, "loss", FINETUNE_LOSSES)
        _at_least(self, "few_shot", 0)
        if not self.data:
            raise ConfigError("finetune config: a prepared dataset is required (--data)")


@dataclass
class EvaluateConfig(StageConfig):
    """Multi-view evaluation with ActionCLIP scoring, plus zero-shot accuracy on held-out labels."""

    STAGE: ClassVar[str] = "evaluate"

    split: str = "val"  # manifest split evaluated
    num_clips: int = 1  # temporal views per video
    num_crops: int = 1  # spatial crops per view: 1 (centre) or 3 (left/centre/right or top/centre/bottom)
    prompt: str = ""  # prompt.json whose kept templates are used; "" uses the 16 default templates
    heldout: bool = True  # also score heldout-split clips against heldout_labels.txt (zero-shot)
    history: str = ""  # training history JSON for the curves plot; "" looks for history.json beside the model
    plots: bool = True  # write the confusion, per-class and training-curve plots

    def validate(self) -> None:
        super().validate()
        _positive(self, "num_clips")
        if self.num_crops not in (1, 3):
            raise ConfigError(f"evaluate config: num_crops must be 1 or 3, got {self.num_crops}")
        if not self.data:
            raise ConfigError("evaluate config: a prepared dataset is required (--data)")


STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    c.STAGE: c for c in (PretrainConfig, PromptConfig, FinetuneConfig, EvaluateConfig)
}


# ---------------------------------------------------------------------------------------------------------- helpers
def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; ``ConfigError`` when missing, unparsable or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError: report which file and why
        raise ConfigError(f"cannot parse config file {p}: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of field names to values, got {type(data).__name__}")
    return data


def field_help(cls: type) -> dict[str, str]:
    """Field name -> the trailing comment of its declaration (the setting's meaning, shown by ``--help`` and in the
    KFP components' parameter descriptions); a subclass's own comment wins over its base's."""
    import inspect
    import re

    out: dict[str, str] = {}
    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        for m in re.finditer(r"^\s+(\w+): [^=\n]+= .*?#\s*(.+)$", inspect.getsource(klass), flags=re.M):
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Check/convert ``value`` to the annotated type (ints accepted for floats, strings for CLI-style input).

    The one rule for text input, used by the stage configs and the pipeline's flags alike: booleans as
    ``actionclip.coercion.parse_bool``; a list given as one string is comma-separated, items stripped.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(name, value, args[0])
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {name!r} must be a list, got {value!r}")
        return [coerce(name, v, item) for v in value]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return parse_bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field {name!r} must be {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def _positive(cfg: StageConfig, name: str) -> None:
    if getattr(cfg, name) <= 0:
        raise ConfigError(f"{cfg.STAGE} config: {name} must be > 0, got {getattr(cfg, name)}")


def _at_least(cfg: StageConfig, name: str, low: float) -> None:
    if getattr(cfg, name) < low:
        raise ConfigError(f"{cfg.STAGE} config: {name} must be >= {low}, got {getattr(cfg, name)}")


def _choice(cfg: StageConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{cfg.STAGE} config: {name} must be one of {', '.join(choices)}; got {getattr(cfg, name)!r}")
