"""The project image: the one setting every component (and the manifests and docs) uses.

Override it for a private registry or a locally built tag with ``ACTIONCLIP_IMAGE``; it is read when the components
are defined, so set it before importing ``components`` (``actionclip pipeline compile --image`` does this for you).
"""
from __future__ import annotations

import os

IMAGE = os.environ.get("ACTIONCLIP_IMAGE", "ghcr.io/actionclip-mlops/actionclip:0.1.0")
