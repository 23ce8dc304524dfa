"""The model factory: ``load`` builds an ``ActionCLIP`` from a checkpoint of any supported source, a
``save_pretrained`` directory or a preset; ``create_model`` builds a randomly initialised one.

Reading files is ``actionclip.checkpoint_io``'s job and recognising / mapping each source format is
``actionclip.checkpoint_formats``'; their public names are re-exported here.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

from actionclip.checkpoint_formats import (FORMATS, SourceFormat, detect_format, find_format, from_actionclip_original,
                                           from_mmaction2, from_native, from_open_clip, from_openai, infer_clip_config,
                                           open_clip_activation, open_clip_name, save_openai, to_openai_state_dict)
from actionclip.checkpoint_io import read_checkpoint
from actionclip.config import ActionCLIPConfig, canonical_fusion, list_presets, preset_config
from actionclip.errors import CheckpointError, ConfigError
from actionclip.model import ActionCLIP

__all__ = ["FORMATS", "SourceFormat", "create_model", "detect_format", "find_format", "from_actionclip_original",
           "from_mmaction2", "from_native", "from_open_clip", "from_openai", "infer_clip_config", "load",
           "open_clip_activation", "open_clip_name", "read_checkpoint", "save_openai", "to_openai_state_dict"]

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]


def _check_keys(model: ActionCLIP, state: State, where: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label} key(s): {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def load(source: str | os.PathLike[str], num_frames: int | None = None, fusion: str | None = None,
         device: str | torch.device = "cpu", activation: str | None = None,
         open_clip_model: str | None = None) -> ActionCLIP:
    """Build an ``ActionCLIP`` from a checkpoint file of any supported format, a ``save_pretrained`` directory, or a
    preset name (random initialisation). Returns the model in eval mode, float32, on ``device``.

    Args:
        num_frames: clip length T to configure (default: the checkpoint's, else 8).
        fusion: override the temporal module. Weights of a different fusion in the checkpoint are then ignored;
            a plain CLIP checkpoint defaults to ``meanP``.
        activation: ``"quick_gelu"`` or ``"gelu"`` for both towers, overriding what the format assumes
            (``SourceFormat.activation``: weights cannot tell the two apart).
        open_clip_model: the open_clip model name the weights come from (``"ViT-B-32"``, ``"ViT-B-32-quickgelu"``):
            sets that model's activation, unless ``activation`` is given too.
    """
    src = str(source)
    if not os.path.exists(src) and src.replace("/", "-") in {p.replace("/", "-") for p in list_presets()}:
        cfg = preset_config(src)
        state: State | None = None
        fmt = "preset"
    else:
        content, container = read_checkpoint(src)
        source_format = find_format(content, container)
        fmt = source_format.name
        try:
            state, cfg = source_format.convert(content, src)
        except KeyError as exc:
            raise CheckpointError(f"{src} (format {fmt}): missing entry {exc}") from exc
    where = f"{src} (format {fmt})"

    data = cfg.to_dict()
    if activation is None and open_clip_model is not None:
        activation = open_clip_activation(open_clip_model)
    if activation is not None:
        data["vision"]["activation"] = data["text"]["activation"] = activation
    elif fmt == "open_clip" and "open_clip_config" not in content:
        log.warning("%s: no open_clip_config.json, assuming GELU (open_clip's default); pass activation='quick_gelu' "
                    "or the open_clip model name for a QuickGELU model", where)
    if fusion is not None and canonical_fusion(fusion) != cfg.fusion.kind:
        if state is not None and any(k.startswith("fusion.") for k in state):
            log.warning("%s: ignoring the checkpoint's %s fusion weights, using a new %s", where, cfg.fusion.kind, fusion)
        state = {k: v for k, v in state.items() if not k.startswith("fusion.")} if state is not None else None
        data["fusion"]["kind"] = canonical_fusion(fusion)  # keeps the source's layers / position rows / eps
    if num_frames is not None:
        data["num_frames"] = num_frames
    try:
        cfg = ActionCLIPConfig.from_dict(data)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc

    if state is None:
        return ActionCLIP(cfg).to(device).eval()
    if fmt != "native" and "logit_scale" not in state:
        state["logit_scale"] = torch.tensor(math.log(1 / 0.07))  # the model's initial value
    with torch.device("meta"):  # names and shapes only: no memory, no random initialisation to pay for
        skeleton = ActionCLIP(cfg)
    if any(k.startswith("fusion.") for k in skeleton.state_dict()) and not any(k.startswith("fusion.") for k in state):
        # a CLIP-only checkpoint with a parametric fusion: the fusion starts from its own initialisation
        model = ActionCLIP(cfg)
        state = dict(state, **{k: v for k, v in model.state_dict().items() if k.startswith("fusion.")})
        _check_keys(model, state, where)
        model.load_state_dict(state, strict=True)
    else:  # every tensor comes from the checkpoint: adopt them instead of initialising and then overwriting
        _check_keys(skeleton, state, where)
        model = skeleton
        model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def create_model(preset: str | ActionCLIPConfig, **overrides: Any) -> ActionCLIP:
    """A randomly initialised model from a preset name or a config, in eval mode. ``overrides`` replace top-level
    config fields (``num_frames=16``) or nested ones as dicts (``fusion={"kind": "meanP"}``)."""
    cfg = preset if isinstance(preset, ActionCLIPConfig) else preset_config(preset)
    if overrides:
        data = cfg.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        cfg = ActionCLIPConfig.from_dict(data)
    return ActionCLIP(cfg).eval()
