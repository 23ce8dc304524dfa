"""The small value every stage function returns."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    """What a stage produced.

    Attributes:
        stage: "pretrain", "prompt", "finetune" or "evaluate".
        out_dir: the stage's output directory.
        paths: named outputs, e.g. {"model": ".../model", "checkpoints": ..., "metrics": ".../metrics.json"}.
        metrics: scalar results (final loss, top1, ...), also written to ``metrics.json``.
        run_id: the MLflow run id (None when tracking is off or on ranks other than 0).
    """

    stage: str
    out_dir: str
    paths: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
