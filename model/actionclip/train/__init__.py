"""Training stages of ActionCLIP's "pre-train, prompt and fine-tune" paradigm, plus evaluation.

    from actionclip.train import pretrain, prompt, finetune, evaluate
    from actionclip.train import PretrainConfig, PromptConfig, FinetuneConfig, EvaluateConfig

    result = finetune(FinetuneConfig(data="prepared/", model="runs/pretrain/model", out_dir="runs/finetune"))
    result.paths["model"], result.metrics["val_top1"], result.run_id

Configs are light (no torch import); the stage functions are imported lazily so that ``actionclip --help`` and the
CLI parsers stay fast.
"""
from __future__ import annotations

from typing import Any

from actionclip.train.config import (
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    PromptConfig,
    StageConfig,
    TrainingConfig,
)
from actionclip.train.result import StageResult

_LAZY = {
    "pretrain": "actionclip.train.pretraining",
    "prompt": "actionclip.train.prompting",
    "finetune": "actionclip.train.finetuning",
    "evaluate": "actionclip.train.evaluation",
}

__all__ = [
    "pretrain", "prompt", "finetune", "evaluate", "StageResult", "StageConfig", "TrainingConfig",
    "PretrainConfig", "PromptConfig", "FinetuneConfig", "EvaluateConfig",
]


def __getattr__(name: str) -> Any:
    # Stage functions pull in torch; resolve them on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actionclip.train' has no attribute {name!r}")
