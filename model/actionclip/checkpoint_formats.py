"""The checkpoint source formats: for each, how to recognise its layout and how to map its keys onto ``ActionCLIP``.

==================== =====================================================================================
``openai-jit``       OpenAI CLIP TorchScript archive (the released ``ViT-B-32.pt``)
``openai``           plain OpenAI CLIP state dict (``visual.proj``, ``token_embedding.weight``, ...)
``actionclip``       original ActionCLIP: ``model_state_dict`` (OpenAI keys) + ``fusion_model_state_dict``
                     (``module.``-prefixed, DataParallel)
``mmaction2``        MMAction2 ActionCLIP: ``state_dict`` with ``clip.`` / ``adapter.`` prefixes
``openai-export``    this project's ``--to openai`` safetensors export (activation in its metadata)
``open_clip``        open_clip's own files: a hub directory (``open_clip_config.json`` + weights), a bare
                     ``open_clip_model.safetensors``, or a training checkpoint (``epoch``, ``name``,
                     ``state_dict``); the tensors themselves are in OpenAI's layout
``native``           this project: ``model.safetensors`` + ``config.json`` (``ActionCLIP.save_pretrained``)
==================== =====================================================================================

The towers' activation is not in any weights (``SourceFormat.activation`` says what each format assumes):
QuickGELU for OpenAI, ActionCLIP and MMAction2; for open_clip the ``quick_gelu`` flag of its config, else GELU (its
own architectures' default, e.g. ``ViT-B-32``); ours from ``config.json``. ``open_clip_activation`` gives the
activation of an open_clip model name.

A format is recognised from the content's keys, never from the file name. Each foreign format has one function that
maps its keys to this project's layout and infers the architecture from tensor shapes, as the source's own
``build_model`` does (timm's ``checkpoint_filter_fn`` is the model). ``to_openai_state_dict`` / ``save_openai`` are
the way back, for peers (OpenAI's ``clip``, open_clip).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from actionclip.config import ActionCLIPConfig, FusionConfig, TextConfig, VisionConfig
from actionclip.errors import CheckpointError, ConfigError
from actionclip.model import ActionCLIP
from actionclip.vision import openai_visual_to_timm, timm_to_openai_visual

State = dict[str, torch.Tensor]
Converted = tuple[State, ActionCLIPConfig]
_JIT_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


# --------------------------------------------------------------------------------------------------------------
# Shapes -> architecture (shared by every CLIP-based source)
# --------------------------------------------------------------------------------------------------------------
def _count_blocks(state: State, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _require(state: State, keys: tuple[str, ...], fmt: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{fmt} checkpoint lacks required key(s): {', '.join(missing)}")


def infer_clip_config(state: State) -> tuple[VisionConfig, TextConfig, int]:
    """OpenAI ``build_model`` rules: every hyper-parameter from tensor shapes (heads = width // 64)."""
    _require(state, ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "text_projection",
                     "positional_embedding", "token_embedding.weight", "ln_final.weight"), "CLIP")
    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vision = VisionConfig(image_size=patch * grid, patch_size=patch, width=width,
                          layers=_count_blocks(state, "visual.transformer.resblocks."), heads=max(1, width // 64))
    text_width = state["ln_final.weight"].shape[0]
    text = TextConfig(context_length=state["positional_embedding"].shape[0],
                      vocab_size=state["token_embedding.weight"].shape[0], width=text_width,
                      layers=_count_blocks(state, "transformer.resblocks."), heads=max(1, text_width // 64))
    return vision, text, state["text_projection"].shape[1]


def _clip_to_native(state: State) -> State:
    """OpenAI CLIP keys -> this project's ``visual.*`` (timm), ``text.*`` and ``logit_scale``; float32."""
    out: State = {}
    for k, v in openai_visual_to_timm(state, "visual.").items():
        out["visual." + k] = v
    for k, v in state.items():
        if k.startswith("visual.") or k in _JIT_ONLY_KEYS or k.endswith("attn_mask"):
            continue
        if k == "logit_scale":
            out["logit_scale"] = v
        else:
            out["text." + k] = v
    return {k: v.float() for k, v in out.items()}  # fp16 -> fp32 is exact; fp32 tensors are untouched


def _fusion_kind_from_keys(keys: list[str]) -> str:
    if any(k.startswith("transformer.cls_token") for k in keys):
        return "Transf_cls"
    if any(k.startswith("transformer.resblocks.") for k in keys):
        return "Transf"
    if any(k.startswith("lstm_visual.") for k in keys):
        return "LSTM"
    if any(k.startswith("shift.") for k in keys):
        return "Conv1D"
    return "meanP"


def _fusion_config(fusion_state: State, ln_eps: float) -> FusionConfig:
    kind = _fusion_kind_from_keys(list(fusion_state))
    layers = _count_blocks(fusion_state, "transformer.resblocks.") or _count_blocks(
        fusion_state, "transformer.transformer_enc.layers.") or 6
    rows = fusion_state["frame_position_embeddings.weight"].shape[0] if "frame_position_embeddings.weight" in fusion_state else 77
    return FusionConfig(kind=kind, layers=layers, position_rows=rows, ln_eps=ln_eps)


# --------------------------------------------------------------------------------------------------------------
# One function per source format
# --------------------------------------------------------------------------------------------------------------
def _wrapped_state(content: dict[str, Any]) -> dict[str, Any]:
    """A state dict saved bare or under ``state_dict`` (training scripts' habit)."""
    return content["state_dict"] if isinstance(content.get("state_dict"), dict) else content


def _is_openai(content: Any, container: str) -> bool:
    state = _wrapped_state(content)
    return ("visual.proj" in state or "visual.class_embedding" in state
            or any(k.startswith("module.visual.") for k in state))


def from_openai(state: State) -> Converted:
    """Plain OpenAI CLIP state dict (or TorchScript tensors). No temporal weights: the fusion is ``meanP``."""
    if any(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    vision, text, embed = infer_clip_config(state)
    cfg = ActionCLIPConfig(embed_dim=embed, vision=vision, text=text, fusion=FusionConfig(kind="meanP"))
    return _clip_to_native(state), cfg


def _is_actionclip(content: Any, container: str) -> bool:
    return "model_state_dict" in content


def from_actionclip_original(ckpt: dict[str, Any]) -> Converted:
    """Original ActionCLIP: ``model_state_dict`` (OpenAI keys, fp16/fp32 mix) and ``fusion_model_state_dict``
    (``module.`` prefix; TF-style LayerNorm eps 1e-12)."""
    clip_state = ckpt["model_state_dict"]
    fusion_state = {k.removeprefix("module."): v for k, v in (ckpt.get("fusion_model_state_dict") or {}).items()}
    vision, text, embed = infer_clip_config(clip_state)
    fusion = _fusion_config(fusion_state, ln_eps=1e-12)
    if fusion.kind != "Transf":
        fusion_state.pop("frame_position_embeddings.weight", None)  # created but unused by the other modules
    cfg = ActionCLIPConfig(embed_dim=embed, vision=vision, text=text, fusion=fusion)
    out = _clip_to_native(clip_state)
    out.update({"fusion." + k: v.float() for k, v in fusion_state.items()})
    return out, cfg


def _is_mmaction2(content: Any, container: str) -> bool:
    inner = content.get("state_dict")
    return isinstance(inner, dict) and any(k.startswith("clip.") for k in inner)


def from_mmaction2(ckpt: dict[str, Any]) -> Converted:
    """MMAction2 ActionCLIP: ``state_dict`` with ``clip.`` and ``adapter.`` prefixes; the adapter's position table
    has exactly T rows and its LayerNorms are CLIP's (eps 1e-5)."""
    inner = ckpt["state_dict"]
    clip_state = {k[len("clip."):]: v for k, v in inner.items() if k.startswith("clip.")}
    adapter = {k[len("adapter."):]: v for k, v in inner.items() if k.startswith("adapter.")}
    vision, text, embed = infer_clip_config(clip_state)
    fusion = _fusion_config(adapter, ln_eps=1e-5)
    cfg = ActionCLIPConfig(embed_dim=embed, num_frames=min(8, fusion.position_rows) if fusion.kind != "Transf" else fusion.position_rows,
                           vision=vision, text=text, fusion=fusion)
    out = _clip_to_native(clip_state)
    out.update({"fusion." + k: v.float() for k, v in adapter.items()})
    return out, cfg


_OPEN_CLIP_DEFAULTS = {  # model_cfg options this port computes only at these values
    "custom_text": False,
    "vision_cfg": {"attentional_pool": False, "no_ln_pre": False, "final_ln_after_pool": False, "pool_type": "tok",
                   "ls_init_value": None, "timm_model_name": None, "act_kwargs": None, "norm_kwargs": None},
    "text_cfg": {"pool_type": "argmax", "no_causal_mask": False, "final_ln_after_pool": False, "proj_bias": False,
                 "embed_cls": False, "ls_init_value": None, "hf_model_name": None, "act_kwargs": None},
}


def open_clip_activation(model_name: str) -> str:
    """The activation of an open_clip model name: ``...-quickgelu`` names are QuickGELU, the others (``ViT-B-32``,
    ``ViT-B-16``, ``ViT-L-14``, ...) exact GELU. Weights loaded with ``pretrained="openai"`` are QuickGELU whatever
    the name (open_clip forces it); pass ``activation="quick_gelu"`` for those."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigError(f"an open_clip model name is a non-empty string, got {model_name!r}")
    return "quick_gelu" if model_name.strip().lower().endswith("-quickgelu") else "gelu"


def _open_clip_state(content: dict[str, Any]) -> dict[str, Any]:
    return content["state"] if "state" in content else content.get("state_dict", {})


def _is_our_openai_export(content: Any, container: str) -> bool:
    return container == "safetensors" and content.get("metadata", {}).get("format") == "openai"


def from_our_openai_export(content: dict[str, Any]) -> Converted:
    """``save_openai``'s safetensors: OpenAI's layout, with the activation it was exported with in the metadata."""
    state, cfg = from_openai(content["state"])
    cfg.vision.activation = cfg.text.activation = content["metadata"].get("activation", "quick_gelu")
    return state, cfg


def _is_open_clip(content: Any, container: str) -> bool:
    if container == "open_clip-directory":
        return True
    if container == "safetensors":  # open_clip_model.safetensors: CLIP tensors without this project's config
        return content.get("config") is None and _is_openai(content["state"], container)
    return (container == "pickle" and {"epoch", "name"} <= set(content) and isinstance(content.get("state_dict"), dict)
            and _is_openai(content, container))


def from_open_clip(content: dict[str, Any]) -> Converted:
    """open_clip's files: OpenAI's key layout (``module.``-prefixed in training checkpoints); the activation from
    ``open_clip_config.json``'s ``quick_gelu`` where the file has one, else GELU, open_clip's default."""
    model_cfg = (content.get("open_clip_config") or {}).get("model_cfg", {})
    unsupported = [f"{k}={model_cfg[k]!r}" for k, v in _OPEN_CLIP_DEFAULTS.items()
                   if not isinstance(v, dict) and model_cfg.get(k, v) != v]
    for tower in ("vision_cfg", "text_cfg"):
        given = model_cfg.get(tower) or {}
        unsupported += [f"{tower}.{k}={given[k]!r}" for k, v in _OPEN_CLIP_DEFAULTS[tower].items() if given.get(k, v) != v]
    if unsupported:
        raise CheckpointError(f"open_clip model options this port does not compute: {', '.join(unsupported)}")
    state, cfg = from_openai(_open_clip_state(content))
    cfg.vision.activation = cfg.text.activation = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    return state, cfg


def from_native(content: dict[str, Any], source: str) -> Converted:
    if content.get("config") is None:
        raise CheckpointError(f"{source}: safetensors file without an ActionCLIP config (expected save_pretrained output)")
    try:
        cfg = ActionCLIPConfig.from_dict(content["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: invalid config.json ({exc})") from exc
    return dict(content["state"]), cfg


@dataclass(frozen=True)
class SourceFormat:
    name: str
    claims: Callable[[Any, str], bool]  # (content, container) -> is this the format's layout?
    convert: Callable[[Any, str], Converted]  # (content, source for messages) -> weights in our layout, config
    activation: str  # what the format assumes for the towers' activation, in words (model info, docs)


# Checked in this order; the first that claims the content wins (open_clip, ActionCLIP and MMAction2 files also hold
# OpenAI-style keys, so the plain OpenAI layout comes last).
FORMATS: tuple[SourceFormat, ...] = (
    SourceFormat("openai-export", _is_our_openai_export, lambda c, src: from_our_openai_export(c),
                 "as recorded by this project's --to openai export (safetensors metadata)"),
    SourceFormat("open_clip", _is_open_clip, lambda c, src: from_open_clip(c),
                 "quick_gelu if open_clip_config.json says quick_gelu, else gelu (open_clip's default)"),
    SourceFormat("native", lambda c, container: container in ("directory", "safetensors"), from_native,
                 "as saved in config.json (quick_gelu when absent)"),
    SourceFormat("openai-jit", lambda c, container: container == "torchscript", lambda c, src: from_openai(c),
                 "quick_gelu"),
    SourceFormat("actionclip", _is_actionclip, lambda c, src: from_actionclip_original(c), "quick_gelu"),
    SourceFormat("mmaction2", _is_mmaction2, lambda c, src: from_mmaction2(c), "quick_gelu"),
    SourceFormat("openai", _is_openai, lambda c, src: from_openai(_wrapped_state(c)),
                 "quick_gelu (OpenAI's; an open_clip state_dict() saved bare looks the same: pass its activation "
                 "or open_clip model name)"),
)


def find_format(content: Any, container: str) -> SourceFormat:
    """The source format of a file's content (``read_checkpoint``'s result)."""
    if container == "pickle" and not isinstance(content, dict):
        raise CheckpointError(f"expected a dict of tensors, found a {type(content).__name__}")
    for fmt in FORMATS:
        if fmt.claims(content, container):
            return fmt
    keys = ", ".join(list(_wrapped_state(content))[:8])
    raise CheckpointError(f"unrecognised checkpoint layout (first keys: {keys})")


def detect_format(content: Any, container: str) -> str:
    """Name the source format from the content's keys."""
    return find_format(content, container).name


def to_openai_state_dict(model: ActionCLIP) -> State:
    """This project's weights in OpenAI CLIP key layout (image + text towers and ``logit_scale``; the temporal fusion
    has no place in it)."""
    state = model.state_dict()
    out = timm_to_openai_visual({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
    for k, v in state.items():
        if k.startswith("text."):
            out[k[len("text."):]] = v
    out["logit_scale"] = state["logit_scale"]
    return out


# open_clip's names for the published CLIP geometries: (patch, image size, vision width, vision layers, text width).
_OPEN_CLIP_NAMES = {(32, 224, 768, 12, 512): "ViT-B-32", (16, 224, 768, 12, 512): "ViT-B-16",
                    (14, 224, 1024, 24, 768): "ViT-L-14", (14, 336, 1024, 24, 768): "ViT-L-14-336"}


def open_clip_name(cfg: ActionCLIPConfig) -> str | None:
    """The open_clip model name that computes this model's towers (with its activation), if it is a published
    geometry; ``None`` otherwise."""
    v = cfg.vision
    name = _OPEN_CLIP_NAMES.get((v.patch_size, v.image_size, v.width, v.layers, cfg.text.width))
    if name is None or cfg.text.layers != 12 or cfg.embed_dim != (768 if "L-14" in name else 512):
        return None
    return name + "-quickgelu" if v.activation == "quick_gelu" else name


def save_openai(model: ActionCLIP, path: str | Path) -> Path:
    """Write the towers in OpenAI CLIP's layout, float32, for peers: a ``.pt`` file (a plain dict of tensors, which
    OpenAI's ``clip.load`` and open_clip's ``create_model(name, pretrained=path)`` / ``load_openai_model`` read as
    they are, and ``torch.load(weights_only=True)`` too), or ``.safetensors`` (open_clip only). The activation is
    not in the file: OpenAI's clip always computes QuickGELU; in open_clip pick the model name (``open_clip_name``)."""
    if model.config.vision.activation != model.config.text.activation:
        raise CheckpointError("the OpenAI layout has one activation for both towers; this model mixes "
                              f"{model.config.vision.activation} and {model.config.text.activation}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in to_openai_state_dict(model).items()}
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".safetensors":  # the metadata lets this project read the activation back; peers ignore it
        save_file(state, str(tmp), metadata={"format": "openai", "activation": model.config.vision.activation})
    else:
        torch.save(state, tmp)
    os.replace(tmp, out)  # an interrupted export never leaves a half file under the final name
    return out
