"""Registry and serving: the MLflow pyfunc model (models-from-code), registration with champion/challenger
aliases, alias resolution for the manifests, and the shared prediction engine behind ``actionclip predict``.

Names are resolved lazily so ``import actionclip.serving`` (and ``actionclip --help``) does not import torch or
mlflow.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "register_model": "actionclip.serving.registry",
    "RegisterResult": "actionclip.serving.registry",
    "resolve": "actionclip.serving.registry",
    "promote": "actionclip.serving.registry",
    "list_versions": "actionclip.serving.registry",
    "log_pyfunc": "actionclip.serving.packaging",
    "VideoPredictor": "actionclip.serving.predictor",
    "Prediction": "actionclip.serving.predictor",
    "ServingLimits": "actionclip.serving.limits",
    "ServingInputError": "actionclip.serving.errors",
    "RegistryError": "actionclip.serving.errors",
    "quantize_int8": "actionclip.serving.quantize",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actionclip.serving' has no attribute {name!r}")
