# The one image every ActionCLIP pipeline component runs in (CPU and GPU stages alike).
#
# Build it with scripts/build_image.sh: that script assembles the build context (a wheelhouse made on the host
# with `pip wheel`, so nothing here needs a network) and tags the result with the project's image setting
# (components/image.py, env ACTIONCLIP_IMAGE). Context layout it expects:
#   wheels/deps/*.whl      every third-party wheel the project needs (torch, timm, mlflow, kfp, decord, ...)
#   wheels/project/*.whl   the actionclip-mlops wheel itself
#
# BASE_IMAGE must provide python3 (with the venv module and its headers) of the same minor version the wheelhouse
# was built for (PYTHON_VERSION), and g++: torch.compile's CPU backend (inductor) compiles its kernels with them at
# run time. scripts/build_image.sh passes a locally made Debian base with both; a registry base needs them added
# (docs/container.md). The pip torch wheels are CUDA builds, so the same image runs GPU stages on nodes whose
# container runtime exposes the NVIDIA driver (see docs/container.md for a CUDA base).
# No "# syntax=" line on purpose: it would make BuildKit pull a frontend image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Same minor Python as the wheelhouse, and the host's exact kfp: every lightweight component starts with
# `pip install kfp==<host version>`, which is a no-op (and network-free) only when that version is installed.
ARG PYTHON_VERSION=3.11
ARG KFP_VERSION
ARG UID=1000

ENV VIRTUAL_ENV=/opt/actionclip/venv \
    PATH=/opt/actionclip/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_PYTHON_REFRESH=quiet \
    HOME=/home/actionclip \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton
# (caches under /tmp: the pods mount an emptyDir there and keep the root filesystem read-only)

# A virtualenv because Debian's system Python refuses pip installs (PEP 668); a numeric non-root user that can
# write only its home (the venv stays root-owned, so running code cannot modify the installed project).
RUN set -eu; \
    python3 -c "import sys; v = '.'.join(map(str, sys.version_info[:2])); \
assert v == '${PYTHON_VERSION}', f'BASE_IMAGE has Python {v}; the wheelhouse needs ${PYTHON_VERSION}'"; \
    command -v g++ >/dev/null || { echo "BASE_IMAGE has no g++: torch.compile needs it (docs/container.md)" >&2; exit 1; }; \
    python3 -c "import os, sysconfig; p = os.path.join(sysconfig.get_paths()['include'], 'Python.h'); \
assert os.path.exists(p), f'BASE_IMAGE has no {p}: torch.compile needs the Python headers (docs/container.md)'"; \
    python3 -m venv "$VIRTUAL_ENV"; \
    getent group "${UID}" >/dev/null || groupadd --gid "${UID}" actionclip; \
    getent passwd "${UID}" >/dev/null || useradd --uid "${UID}" --gid "${UID}" --no-create-home \
        --home-dir /home/actionclip --shell /bin/sh actionclip; \
    mkdir -p /home/actionclip; \
    chown "${UID}:${UID}" /home/actionclip

# Dependencies in their own layer so a source change reinstalls only the small project wheel. The bind mount
# adds no layer for the wheels themselves.
RUN --mount=type=bind,source=wheels/deps,target=/tmp/wheels/deps \
    set -eu; \
    pip install --no-index --find-links /tmp/wheels/deps /tmp/wheels/deps/*.whl; \
    python -c "import kfp, sys; v = kfp.__version__; \
sys.exit(0 if v == '${KFP_VERSION}' or not '${KFP_VERSION}' else f'kfp {v} in the image, host has ${KFP_VERSION}')"

RUN --mount=type=bind,source=wheels,target=/tmp/wheels \
    set -eu; \
    pip install --no-index --find-links /tmp/wheels/deps --no-deps /tmp/wheels/project/*.whl; \
    pip check; \
    python -c "import actionclip"

LABEL org.opencontainers.image.title="actionclip" \
      org.opencontainers.image.description="ActionCLIP video-text action recognition: library, KFP components, serving" \
      org.opencontainers.image.licenses="Apache-2.0"

USER ${UID}:${UID}
WORKDIR /home/actionclip
CMD ["actionclip", "--help"]
