"""The project's images: the one setting every component (and the manifests and docs) uses.

``IMAGE`` runs every pipeline task, the fine-tuning job and model serving (torch, timm, mlflow, kfp). ``MLFLOW_IMAGE``
is the slim tracking-server image (mlflow, the Postgres driver, boto3; no torch) built from Dockerfile.mlflow. The
manifests name them ``actionclip`` and ``actionclip-mlflow`` and map both in manifests/components/project-image, the
one place a deployer sets registries and digests.

Override ``IMAGE`` for a private registry or a locally built tag with ``ACTIONCLIP_IMAGE``; it is read when the
components are defined, so set it before importing ``components`` (``actionclip pipeline compile --image`` does this
for you).
"""
from __future__ import annotations

import os

IMAGE = os.environ.get("ACTIONCLIP_IMAGE", "ghcr.io/actionclip-mlops/actionclip:0.1.0")
MLFLOW_IMAGE = os.environ.get("ACTIONCLIP_MLFLOW_IMAGE", "ghcr.io/actionclip-mlops/actionclip-mlflow:0.1.0")
