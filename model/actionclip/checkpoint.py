"""Reading checkpoints of every supported source format and mapping them onto ``ActionCLIP``.

Formats (detected from the file and its keys, never from the file name):

==================== =====================================================================================
``openai-jit``       OpenAI CLIP TorchScript archive (the released ``ViT-B-32.pt``), read without running code
``openai``           plain OpenAI CLIP state dict (``visual.proj``, ``token_embedding.weight``, ...)
``actionclip``       original ActionCLIP: ``model_state_dict`` (OpenAI keys) + ``fusion_model_state_dict``
                     (``module.``-prefixed, DataParallel)
``mmaction2``        MMAction2 ActionCLIP: ``state_dict`` with ``clip.`` / ``adapter.`` prefixes
``native``           this project: ``model.safetensors`` + ``config.json`` (``ActionCLIP.save_pretrained``)
==================== =====================================================================================

Each foreign format has one explicit function that maps its keys to this project's layout and infers the
architecture from tensor shapes. Pickled formats are read with ``torch.load(weights_only=True)``; TorchScript
archives with a restricted unpickler that only rebuilds tensors.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from actionclip.config import ActionCLIPConfig, FusionConfig, TextConfig, VisionConfig, canonical_fusion, list_presets, preset_config
from actionclip.errors import CheckpointError, ConfigError
from actionclip.model import CONFIG_NAME, WEIGHTS_NAME, ActionCLIP
from actionclip.vision import openai_visual_to_timm, timm_to_openai_visual

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
_JIT_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


# --------------------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------------------
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a TorchScript module object; keeps only its attribute dict."""

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *args: Any) -> torch.Tensor:
    return storage.as_strided(size, stride, offset).clone()


def _read_torchscript(path: Path) -> State:
    """Tensors of a TorchScript archive, keyed like ``module.state_dict()`` (plus plain tensor attributes).

    ``torch.jit.load`` would compile and attach the archive's code; this reads only ``data.pkl`` and the raw tensor
    storages, with an unpickler that can build nothing but tensors, dicts and inert module placeholders.
    """
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if module.startswith("__torch__"):
                    return _ScriptObject
                if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                    return _rebuild_tensor
                if module == "torch._utils" and name == "_rebuild_parameter":
                    return lambda data, requires_grad, hooks, *a: data
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                if module == "collections" and name == "OrderedDict":
                    import collections

                    return collections.OrderedDict
                raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

            def persistent_load(self, pid: Any) -> torch.Tensor:
                _, dtype_name, key, _location, numel = pid
                dtype = _STORAGE_DTYPES[dtype_name]
                raw = bytearray(archive.read(f"{prefix}data/{key}"))
                return torch.frombuffer(raw, dtype=dtype)[:numel] if numel else torch.empty(0, dtype=dtype)

        import io

        root = Unpickler(io.BytesIO(archive.read(pkl))).load()

    state: State = {}

    def walk(obj: Any, path: str) -> None:
        attrs = obj.state if isinstance(obj, _ScriptObject) else obj if isinstance(obj, dict) else {}
        for name, value in attrs.items():
            if isinstance(value, torch.Tensor):
                state[path + name] = value
            elif isinstance(value, (_ScriptObject, dict)):
                walk(value, f"{path}{name}.")

    walk(root, "")
    return state


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """Read a checkpoint file or directory. Returns ``(content, container)`` where container is ``"directory"``,
    ``"safetensors"``, ``"torchscript"`` or ``"pickle"``. Raises ``CheckpointError`` naming the file."""
    p = Path(path)
    if p.is_dir():
        weights, config = p / WEIGHTS_NAME, p / CONFIG_NAME
        if not weights.is_file() or not config.is_file():
            raise CheckpointError(f"{p}: a model directory needs {WEIGHTS_NAME} and {CONFIG_NAME}")
        try:
            return {"state": load_file(str(weights)), "config": json.loads(config.read_text())}, "directory"
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p}: cannot read the saved model ({exc})") from exc
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory (and not a preset: {', '.join(list_presets())})")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty")
    try:
        if _is_safetensors(p):
            with open(p, "rb") as f:  # the config travels in the safetensors metadata
                header_len = int.from_bytes(f.read(8), "little")
                meta = json.loads(f.read(header_len)).get("__metadata__", {})
            return {"state": load_file(str(p)), "config": json.loads(meta["config"]) if "config" in meta else None}, "safetensors"
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
            if any("/code/" in n or n.endswith("constants.pkl") for n in names):
                return _read_torchscript(p), "torchscript"
        return torch.load(p, map_location="cpu", weights_only=True), "pickle"
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, SafetensorError) as exc:
        raise CheckpointError(f"{p}: truncated or corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{p}: not a loadable checkpoint (refused by the weights-only unpickler: "
                              f"{_first_informative_line(str(exc))})") from exc
    except Exception as exc:  # the unpicklers raise many types (IndexError, ValueError, RuntimeError) on garbage
        msg = _first_informative_line(str(exc)) if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {msg})") from exc


def _first_informative_line(message: str) -> str:
    """torch's unpickling errors span many lines of advice; keep the line that names the cause."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else "unknown error"


def detect_format(content: Any, container: str) -> str:
    """Name the source format from the content's keys."""
    if container in ("directory", "safetensors"):
        return "native"
    if container == "torchscript":
        return "openai-jit"
    if not isinstance(content, dict):
        raise CheckpointError(f"expected a dict of tensors, found a {type(content).__name__}")
    if "model_state_dict" in content:
        return "actionclip"
    if isinstance(content.get("state_dict"), dict):
        inner = content["state_dict"]
        if any(k.startswith("clip.") for k in inner):
            return "mmaction2"
        content = inner
    if "visual.proj" in content or "visual.class_embedding" in content:
        return "openai"
    if any(k.startswith("module.visual.") for k in content):
        return "openai"
    keys = ", ".join(list(content)[:8])
    raise CheckpointError(f"unrecognised checkpoint layout (first keys: {keys})")


# --------------------------------------------------------------------------------------------------------------
# Architecture inference and key mapping, one function per source format
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


def from_openai(state: State) -> tuple[State, ActionCLIPConfig]:
    """Plain OpenAI CLIP state dict (or TorchScript tensors). No temporal weights: the fusion is ``meanP``."""
    if any(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    vision, text, embed = infer_clip_config(state)
    cfg = ActionCLIPConfig(embed_dim=embed, vision=vision, text=text, fusion=FusionConfig(kind="meanP"))
    return _clip_to_native(state), cfg


def from_actionclip_original(ckpt: dict[str, Any]) -> tuple[State, ActionCLIPConfig]:
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


def from_mmaction2(ckpt: dict[str, Any]) -> tuple[State, ActionCLIPConfig]:
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


def from_native(content: dict[str, Any], source: str) -> tuple[State, ActionCLIPConfig]:
    if content.get("config") is None:
        raise CheckpointError(f"{source}: safetensors file without an ActionCLIP config (expected save_pretrained output)")
    try:
        cfg = ActionCLIPConfig.from_dict(content["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: invalid config.json ({exc})") from exc
    return dict(content["state"]), cfg


_MAPPERS: dict[str, Callable[[Any], tuple[State, ActionCLIPConfig]]] = {
    "openai": lambda c: from_openai(c.get("state_dict", c) if isinstance(c.get("state_dict"), dict) else c),
    "openai-jit": from_openai,
    "actionclip": from_actionclip_original,
    "mmaction2": from_mmaction2,
}


def to_openai_state_dict(model: ActionCLIP) -> State:
    """This project's weights in OpenAI CLIP key layout (image + text towers and ``logit_scale``)."""
    state = model.state_dict()
    out = timm_to_openai_visual({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
    for k, v in state.items():
        if k.startswith("text."):
            out[k[len("text."):]] = v
    out["logit_scale"] = state["logit_scale"]
    return out


# --------------------------------------------------------------------------------------------------------------
# Loading into a model
# --------------------------------------------------------------------------------------------------------------
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
         device: str | torch.device = "cpu") -> ActionCLIP:
    """Build an ``ActionCLIP`` from a checkpoint file of any supported format, a ``save_pretrained`` directory, or a
    preset name (random initialisation). Returns the model in eval mode, float32, on ``device``.

    Args:
        num_frames: clip length T to configure (default: the checkpoint's, else 8).
        fusion: override the temporal module. Weights of a different fusion in the checkpoint are then ignored;
            a plain CLIP checkpoint defaults to ``meanP``.
    """
    src = str(source)
    if not os.path.exists(src) and src.replace("/", "-") in {p.replace("/", "-") for p in list_presets()}:
        cfg = preset_config(src)
        state: State | None = None
        fmt = "preset"
    else:
        content, container = read_checkpoint(src)
        fmt = detect_format(content, container)
        try:
            state, cfg = from_native(content, src) if fmt == "native" else _MAPPERS[fmt](content)
        except KeyError as exc:
            raise CheckpointError(f"{src} (format {fmt}): missing entry {exc}") from exc
    where = f"{src} (format {fmt})"

    data = cfg.to_dict()
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

    model = ActionCLIP(cfg)
    if state is not None:
        keep_fresh = {k for k in model.state_dict() if k.startswith("fusion.")} if not any(
            k.startswith("fusion.") for k in state) else set()
        if keep_fresh:  # a CLIP-only checkpoint with a parametric fusion: the fusion starts from its own init
            state = dict(state, **{k: v for k, v in model.state_dict().items() if k in keep_fresh})
        if fmt != "native" and "logit_scale" not in state:
            state["logit_scale"] = model.logit_scale.detach().clone()
        _check_keys(model, state, where)
        model.load_state_dict(state, strict=True)
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
