"""Kubeflow Pipelines v2 components, one per stage of the ActionCLIP pipeline.

Each component is a thin typed ``@dsl.component`` around a library call (imports inside the body), built on the
project image (``components.image.IMAGE``) with no ``packages_to_install``: every dependency lives in the image.

    open_run -> prepare_data -> pretrain_model -> select_prompts -> finetune_model -> evaluate_model -> register_model
    close_run (exit handler)
"""
from __future__ import annotations

from components.evaluate import evaluate_model
from components.finetune import finetune_model
from components.image import IMAGE
from components.prepare import prepare_data
from components.pretrain import pretrain_model
from components.prompt import select_prompts
from components.register import register_model
from components.tracking import close_run, open_run

__all__ = [
    "IMAGE", "open_run", "close_run", "prepare_data", "pretrain_model", "select_prompts", "finetune_model",
    "evaluate_model", "register_model",
]
