"""The MLflow pyfunc model, logged as *models from code*: MLflow stores this file's source and runs it on load,
so no pickled Python object is ever written to or read from the artifact store. Weights come from the safetensors
artifact.

Artifacts (see ``actionclip.serving.packaging``): ``weights`` (model.safetensors), ``config`` (config.json),
``labels`` (labels.txt), ``prompt`` (prompt.json). ``model_config``: ``int8`` plus ``ServingLimits`` fields; the
``ACTIONCLIP_SERVING_*`` environment variables override the limits at serving time.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import mlflow
import pydantic
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class VideoRequest(pydantic.BaseModel):
    """One request row. The type hint below is the model signature: MLflow validates every row against it
    (strictly, and ``extra="forbid"`` turns an unknown or misspelt field into a 400 instead of silently dropping it).
    Semantic checks (limits, templates, decoding) happen in ``actionclip.serving.requests``."""

    model_config = pydantic.ConfigDict(extra="forbid")

    video: str                              # local path, file:// URI, data: URI or base64 of the file's bytes
    labels: Optional[list[str]] = None      # default: the model's label list
    templates: Optional[list[str]] = None   # default: the model's prompt templates
    top_k: Optional[int] = None             # default 5
    return_all: Optional[bool] = None       # also return every label's probability


class ActionCLIPPyfunc(mlflow.pyfunc.PythonModel):
    """Rows ``{video, labels?, templates?, top_k?, return_all?}`` -> ``{labels, probs, all_probs?}`` per row.

    Over REST: ``POST /invocations`` with ``{"inputs": [{"video": ...}, ...]}``.
    """

    def load_context(self, context) -> None:
        from actionclip.serving.limits import ServingLimits
        from actionclip.serving.predictor import VideoPredictor

        config = dict(context.model_config or {})
        self.limits = ServingLimits.from_mapping(config).with_env()
        int8 = _flag(os.environ.get("ACTIONCLIP_SERVING_INT8", config.get("int8", False)))
        weights = context.artifacts["weights"]
        # actionclip.load reads a directory holding model.safetensors + config.json; MLflow copies both artifacts
        # into the same artifacts/ directory.
        self.predictor = VideoPredictor.from_files(
            os.path.dirname(weights),
            labels=context.artifacts.get("labels"),
            prompt=context.artifacts.get("prompt"),
            int8=int8,
            limits=self.limits,
        )

    def predict(self, model_input: list[VideoRequest], params=None) -> list[dict[str, Any]]:
        from actionclip.errors import ActionCLIPError
        from actionclip.serving.requests import parse_requests

        rows = [r.model_dump() if isinstance(r, pydantic.BaseModel) else r for r in model_input]
        try:
            requests = parse_requests(rows, self.limits)
            predictions = self.predictor.predict(requests)
        except ActionCLIPError as exc:
            # INVALID_PARAMETER_VALUE is what the scoring server maps to HTTP 400 (a client error, not a 500).
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return [p.to_dict() for p in predictions]


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


mlflow.models.set_model(ActionCLIPPyfunc())
