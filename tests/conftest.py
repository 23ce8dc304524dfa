"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite MLflow store (MLFLOW_TRACKING_URI) for every in-process stage run of the module using it."""
    root = tmp_path_factory.mktemp("mlflow")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    yield root
    mp.undo()
