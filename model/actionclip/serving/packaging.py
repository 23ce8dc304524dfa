"""Log an ActionCLIP model directory as an MLflow models-from-code pyfunc.

Artifacts: model.safetensors + config.json (weights, no pickle), labels.txt, prompt.json. The signature comes from
the type hints of ``ActionCLIPPyfunc.predict`` (a list of request objects, see pyfunc_model.py); the input example is
a tiny real clip, base64-encoded, so MLflow checks at log time that the model loads and answers, and
``serving_input_example.json`` shows users the request format.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from actionclip.serving.errors import RegistryError
from actionclip.serving.limits import ServingLimits
from actionclip.serving.requests import encode_base64, read_label_file

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# Distributions the pyfunc needs at serving time, pinned to the versions it was logged with.
_RUNTIME_DISTRIBUTIONS = (
    "actionclip-mlops", "mlflow", "torch", "torchvision", "timm", "safetensors", "numpy", "pandas", "decord",
    "ftfy", "regex",
)


def pip_requirements() -> list[str]:
    """``name==version`` for every runtime dependency, from this environment (the image the model was built in).

    ``actionclip-mlops`` is this project: serve in the project image (``--env-manager local``), or install the
    project wheel before letting MLflow build an environment from these pins.
    """
    reqs = []
    for dist in _RUNTIME_DISTRIBUTIONS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")  # drop local tags such as +cu130: pip cannot resolve them
    return reqs


def example_clip_bytes(frames: int = 8, size: int = 32) -> bytes:
    """A tiny real MPEG-4 clip (a bright square moving right) for the input example, ~2-4 KB."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            x = (t * size) // frames
            img[size // 4: size // 2, x: x + size // 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def stage_artifacts(
    model_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Sequence[str] | None,
    prompt: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """Copy/write the four artifact files into ``out_dir`` and return the MLflow ``artifacts`` mapping."""
    import actionclip

    src, out = Path(model_dir), Path(out_dir)
    if src.is_file():
        src = src.parent
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (src / name).is_file():
            raise RegistryError(f"{src} is not a saved model directory: {name} is missing (use save_pretrained)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / WEIGHTS_NAME, out / WEIGHTS_NAME)
    shutil.copy2(src / CONFIG_NAME, out / CONFIG_NAME)

    if labels is None:
        labels = src / "labels.txt"
    label_list = read_label_file(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    if not label_list:
        raise RegistryError("the model needs a non-empty label list (labels.txt of the prepared dataset)")
    (out / "labels.txt").write_text("\n".join(label_list) + "\n", encoding="utf-8")

    if prompt is not None:
        from actionclip.serving.predictor import load_prompt_templates

        load_prompt_templates(prompt)  # validate before logging
        shutil.copy2(prompt, out / "prompt.json")
    else:
        (out / "prompt.json").write_text(json.dumps({
            "templates": list(actionclip.TEMPLATES), "scores": {}, "rule": "all templates (no prompt stage)",
        }, indent=2), encoding="utf-8")
    return {
        "weights": str(out / WEIGHTS_NAME),
        "config": str(out / CONFIG_NAME),
        "labels": str(out / "labels.txt"),
        "prompt": str(out / "prompt.json"),
    }


def log_pyfunc(
    model_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    prompt: str | os.PathLike[str] | None = None,
    *,
    name: str = "model",
    int8: bool = False,
    limits: ServingLimits | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
):
    """Log the pyfunc model in the active MLflow run; returns MLflow's ``ModelInfo`` (``model_uri`` =
    ``models:/m-<id>``)."""
    import mlflow

    model_config = {"int8": bool(int8), **(limits or ServingLimits()).to_dict()}
    with tempfile.TemporaryDirectory(prefix="actionclip-pyfunc-") as tmp:
        artifacts = stage_artifacts(model_dir, labels, prompt, tmp)
        example_labels = read_label_file(artifacts["labels"])[:2]
        example = [{"video": encode_base64(example_clip_bytes()), "labels": example_labels, "top_k": 1}]
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_FILE),
            artifacts=artifacts,
            model_config=model_config,
            input_example=example,
            pip_requirements=pip_requirements(),
            params=dict(params) if params else None,
            tags=dict(tags) if tags else None,
        )
