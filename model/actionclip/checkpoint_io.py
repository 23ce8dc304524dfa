"""Reading checkpoint files safely: what container a file is and its tensors, without running any of its code.

Pickled files go through ``torch.load(weights_only=True)``; TorchScript archives through a restricted unpickler that
rebuilds only tensors (``torch.jit.load`` would compile and attach the archive's code); safetensors files and
``save_pretrained`` directories through safetensors. Every failure is a one-line ``CheckpointError`` naming the file.
Which source format the content is in, and how its keys map, is ``actionclip.checkpoint_formats``' job.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from actionclip.config import list_presets
from actionclip.errors import CheckpointError
from actionclip.model import CONFIG_NAME, WEIGHTS_NAME

State = dict[str, torch.Tensor]

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
                    return collections.OrderedDict
                raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

            def persistent_load(self, pid: Any) -> torch.Tensor:
                _, dtype_name, key, _location, numel = pid
                dtype = _STORAGE_DTYPES[dtype_name]
                raw = bytearray(archive.read(f"{prefix}data/{key}"))
                return torch.frombuffer(raw, dtype=dtype)[:numel] if numel else torch.empty(0, dtype=dtype)

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


# open_clip's Hugging Face hub layout (``push_to_hf_hub``): a config whose ``model_cfg`` names the architecture
# (``quick_gelu`` included) beside the weights, as safetensors or as a weights-only pickle.
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _read_directory(p: Path) -> tuple[Any, str]:
    weights, config = p / WEIGHTS_NAME, p / CONFIG_NAME
    try:
        if weights.is_file() and config.is_file():
            return {"state": load_file(str(weights)), "config": json.loads(config.read_text())}, "directory"
        open_clip_weights = next((p / n for n in OPEN_CLIP_WEIGHTS if (p / n).is_file()), None)
        if (p / OPEN_CLIP_CONFIG).is_file() and open_clip_weights is not None:
            state = (load_file(str(open_clip_weights)) if open_clip_weights.suffix == ".safetensors"
                     else torch.load(open_clip_weights, map_location="cpu", weights_only=True))
            return {"state": state, "open_clip_config": json.loads((p / OPEN_CLIP_CONFIG).read_text())}, "open_clip-directory"
    except (SafetensorError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{p}: cannot read the saved model ({_first_informative_line(str(exc))})") from exc
    raise CheckpointError(f"{p}: a model directory needs {WEIGHTS_NAME} and {CONFIG_NAME} (this project's) or "
                          f"{OPEN_CLIP_CONFIG} and {' or '.join(OPEN_CLIP_WEIGHTS)} (open_clip's)")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """Read a checkpoint file or directory. Returns ``(content, container)`` where container is ``"directory"``,
    ``"open_clip-directory"``, ``"safetensors"``, ``"torchscript"`` or ``"pickle"``. Raises ``CheckpointError``
    naming the file."""
    p = Path(path)
    if p.is_dir():
        return _read_directory(p)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory (and not a preset: {', '.join(list_presets())})")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty")
    try:
        if _is_safetensors(p):
            with open(p, "rb") as f:  # the config travels in the safetensors metadata
                header_len = int.from_bytes(f.read(8), "little")
                meta = json.loads(f.read(header_len)).get("__metadata__", {})
            return {"state": load_file(str(p)), "config": json.loads(meta["config"]) if "config" in meta else None,
                    "metadata": meta}, "safetensors"
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
