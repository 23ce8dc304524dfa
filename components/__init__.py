"""Kubeflow Pipelines v2 components, one per stage of the ActionCLIP pipeline.

Each component is a thin typed ``@dsl.component`` around a library call (imports inside the body), built on the
project image (``components.image.IMAGE``) with no ``packages_to_install``: every dependency lives in the image.

    open_run -> prepare_data -> pretrain_model -> select_prompts -> finetune_model -> evaluate_model -> register_model
    close_run (exit handler)

The components are resolved lazily: inside a running task KFP's runtime ``kfp.dsl`` cannot define components, and
the task bodies import ``components._runtime`` / ``components.report``, which must not drag the definitions in.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "open_run": "tracking", "close_run": "tracking", "prepare_data": "prepare", "pretrain_model": "pretrain",
    "select_prompts": "prompt", "finetune_model": "finetune", "evaluate_model": "evaluate",
    "register_model": "register", "IMAGE": "image",
}

__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"components.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
