#!/usr/bin/env bash
# Checkov over the rendered manifests (what CI runs). Checkov pins many packages of its own, so it lives in its own
# virtualenv, not the project's: CHECKOV (default /tmp/actionclip-checkov/bin/checkov; created with
# `python -m venv /tmp/actionclip-checkov && /tmp/actionclip-checkov/bin/pip install checkov` when missing).
# Renders each kustomization from a copy whose *.env come from the *.env.example files, then
#   checkov --framework kubernetes -d <rendered> --skip-check <the waivers in docs/deploy.md, "Checkov"> "$@"
# CHECKOV_SKIP= (empty) runs without the waivers; extra arguments go to checkov (tests/test_checkov.py: -o json).
# Exit status: checkov's (non-zero when a check fails that is not waived).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECKOV=${CHECKOV:-/tmp/actionclip-checkov/bin/checkov}
if [ ! -x "$CHECKOV" ]; then
    python3 -m venv /tmp/actionclip-checkov
    /tmp/actionclip-checkov/bin/pip install -q checkov >&2  # stdout stays checkov's report
    CHECKOV=/tmp/actionclip-checkov/bin/checkov
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r "$ROOT/manifests" "$WORK/manifests"
find "$WORK/manifests" -name '*.env' -delete
for ex in $(find "$WORK/manifests" -name '*.env.example'); do cp "$ex" "${ex%.example}"; done
mkdir -p "$WORK/rendered"
for root in overlays/local overlays/local/serving overlays/gpu overlays/gpu/serving finetune; do
    kubectl kustomize "$WORK/manifests/$root" > "$WORK/rendered/$(echo "$root" | tr / -).yaml"
done
# waivers, each with its reason in docs/deploy.md ("Checkov")
SKIP=${CHECKOV_SKIP-CKV_K8S_15,CKV_K8S_35,CKV_K8S_40,CKV_K8S_43}
exec "$CHECKOV" --framework kubernetes --quiet --compact ${SKIP:+--skip-check "$SKIP"} -d "$WORK/rendered" "$@"
