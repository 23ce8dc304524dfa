#!/usr/bin/env bash
# Build the project's two images with a private Docker engine; no image registry is needed:
#   actionclip         (Dockerfile)         every pipeline task, the fine-tuning job, serving; torch.compile-ready
#   actionclip-mlflow  (Dockerfile.mlflow)  the slim tracking server: mlflow[auth], psycopg2, boto3, no torch
# Each build is tagged twice: the setting's tag (components/image.py, what kfp.local and the tests use) and a tag
# no other build shares, <setting tag>-<UTC build time>-<inputs hash>, which is what a deployment should pin.
#
# Usage (as root):
#   eval "$(scripts/build_image.sh)"   start the engine if needed, build each image whose inputs changed, and print
#                                     `export DOCKER_HOST=...`, `export ACTIONCLIP_IMAGE=<unique tag>`,
#                                     `export ACTIONCLIP_MLFLOW_IMAGE=<unique tag>` and each image's id as a comment
#                                     (the only stdout)
#   scripts/build_image.sh --force    rebuild even when an image built from the same inputs exists
#   scripts/build_image.sh --stop     stop the private engine (images and layers stay for the next run)
#   scripts/build_image.sh --clean    stop it and delete the whole state folder (images, layers, wheelhouse)
#
# Environment:
#   ACTIONCLIP_DOCKER_ROOT  state folder: engine data, socket, wheelhouse, logs (default /var/lib/actionclip-docker)
#   ACTIONCLIP_IMAGE        project image name:tag (default: components/image.py IMAGE)
#   ACTIONCLIP_MLFLOW_IMAGE tracking-server image name:tag (default: components/image.py MLFLOW_IMAGE)
#   BASE_IMAGE              base image to build both on instead of the locally made Debian ones (e.g.
#                           python:3.11-slim where a registry is reachable; the project image then needs a base with
#                           g++ and the Python headers, which its build checks)
#   PYTHON                  host interpreter whose pip builds the wheelhouse (default python3)
#
# Exit status: 0 built or up to date; 3 this machine cannot host an engine (not root, no apt-get); 1 anything else.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ACTIONCLIP_DOCKER_ROOT:-/var/lib/actionclip-docker}
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/docker.pid"
CTX="$STATE/context"
PYTHON=${PYTHON:-python3}
BASE_SUITE=bookworm                        # its python3 is 3.11, the host's Python
# Locally made bases (bump a suffix when its package list changes). The project image's also has the C++ compiler
# and Python headers torch.compile's CPU backend builds its kernels with; the server's has neither.
LOCAL_BASE="local/actionclip-base:${BASE_SUITE}-1"
LOCAL_BASE_PACKAGES=python3,python3-venv
LOCAL_TOOLCHAIN_BASE="local/actionclip-toolchain-base:${BASE_SUITE}-1"
LOCAL_TOOLCHAIN_PACKAGES=python3,python3-venv,python3-dev,g++
MLFLOW_CTX="$STATE/context-mlflow"
DOCKER=/usr/bin/docker                     # Debian's client: the one on PATH may lack BuildKit support
HASH_LABEL=org.actionclip.inputs-hash
export DOCKER_HOST="unix://$SOCK"
START=$SECONDS

log() { printf '[build_image %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { printf 'build_image: error: %s\n' "$2" >&2; exit "$1"; }

engine_up() { [ -S "$SOCK" ] && "$DOCKER" info >/dev/null 2>&1; }

engine_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_tools() {
    if [ -x "$DOCKER" ] && command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die 3 "no Docker engine installed and no apt-get to install one"
    log "installing docker.io and debootstrap from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends docker.io debootstrap >&2
    [ -x "$DOCKER" ] || die 1 "docker.io installed but $DOCKER is missing"
}

start_engine() {
    engine_up && { log "engine already running (pid $(engine_pid || echo '?'))"; return; }
    if pid=$(engine_pid); then
        die 1 "dockerd (pid $pid) is running but does not answer on $SOCK; see $STATE/dockerd.log or run --stop"
    fi
    mkdir -p "$STATE/data" "$STATE/exec"
    rm -f "$SOCK" "$PIDFILE"
    log "starting dockerd (data root $STATE/data)"
    # No bridge, no iptables, no ip_forward: builds and test containers use --network=none, so the host's
    # network configuration stays untouched. fd 9 (the build lock) must not leak into the daemon.
    setsid dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" -H "unix://$SOCK" --pidfile "$PIDFILE" \
        --iptables=false --ip-forward=false --bridge=none \
        </dev/null >"$STATE/dockerd.log" 2>&1 9>&- &
    for _ in $(seq 1 120); do
        engine_up && { log "engine up"; return; }
        kill -0 $! 2>/dev/null || break
        sleep 0.5
    done
    tail -n 20 "$STATE/dockerd.log" >&2 || true
    die 1 "dockerd did not start; log: $STATE/dockerd.log"
}

stop_engine() {
    local pid
    if pid=$(engine_pid); then
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && die 1 "dockerd (pid $pid) did not stop within 30 s"
    fi
    # dockerd leaves an nsfs mount under its exec root; deepest first so the folder can be deleted.
    awk -v root="$STATE/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    rm -f "$SOCK" "$PIDFILE"
}

# First Debian mirror in the host's apt sources that serves $1 (never a hard-coded host name).
apt_mirror() {
    "$PYTHON" - "$1" <<'EOF'
import glob, re, sys

suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):  # deb822 paragraphs
    for para in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in para.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                fields[m.group(1).lower()] = m.group(2).split()
        if ("deb" in fields.get("types", []) and suite in fields.get("suites", [])
                and fields.get("enabled", ["yes"]) != ["no"] and fields.get("uris")):
            print(fields["uris"][0]); sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):  # one-line style
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1]); sys.exit(0)
sys.exit(f"no apt source for suite {suite!r} on this host")
EOF
}

# make_base NAME PACKAGES: a Debian $BASE_SUITE minbase image with PACKAGES (comma-separated), unless NAME exists.
make_base() {
    local name=$1 packages=$2
    if "$DOCKER" image inspect "$name" >/dev/null 2>&1; then
        log "base image $name present"
        return
    fi
    local mirror slug rootfs
    slug=$(printf '%s' "$name" | tr -c 'A-Za-z0-9' _)
    rootfs="$STATE/rootfs-$slug"
    mirror=$(apt_mirror "$BASE_SUITE")
    log "making base image $name with debootstrap ($BASE_SUITE + $packages from $mirror)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$packages" "$BASE_SUITE" "$rootfs" "$mirror" \
        >"$STATE/debootstrap-$slug.log" 2>&1 \
        || { tail -n 20 "$STATE/debootstrap-$slug.log" >&2; die 1 "debootstrap failed for $name"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    : >"$rootfs/etc/resolv.conf"
    tar -C "$rootfs" -c . | "$DOCKER" import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$name" >/dev/null
    rm -rf "$rootfs"
}

# image_setting NAME: components/image.py's NAME (IMAGE or MLFLOW_IMAGE), which reads its own environment override.
image_setting() {
    # run only that file: components/__init__ may import kfp
    "$PYTHON" -c 'import runpy, sys; print(runpy.run_path(sys.argv[1])[sys.argv[2]])' "$ROOT/components/image.py" "$1" \
        || die 1 "cannot read $1 from components/image.py"
}

# Files that make up the project wheel and the image recipe (tracked or new, never git-ignored ones).
source_files() {
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -co --exclude-standard -z -- \
            pyproject.toml README.md LICENSE model components pipelines Dockerfile .dockerignore scripts/build_image.sh
    else
        (cd "$ROOT" && find pyproject.toml README.md model components pipelines Dockerfile .dockerignore \
            scripts/build_image.sh -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null)
    fi | (cd "$ROOT" && while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done) | sort -z
}

inputs_hash() {
    {
        printf '%s\n' "$1" "$PY_MM" "$KFP_VERSION"
        source_files | (cd "$ROOT" && xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
}

# The tracking-server image depends on its recipe, the host's mlflow version and this script only.
mlflow_inputs_hash() {
    {
        printf '%s\n' "$1" "$PY_MM" "$MLFLOW_VERSION"
        (cd "$ROOT" && sha256sum Dockerfile.mlflow scripts/mlflow_identities.py scripts/build_image.sh)
    } | sha256sum | cut -c1-16
}

# Move src/*.whl into dst, keeping byte-identical files untouched (their stat info lets BuildKit skip re-sending
# and re-hashing them) and dropping wheels no longer needed.
sync_wheels() {
    local src=$1 dst=$2 f name
    mkdir -p "$dst"
    for f in "$dst"/*.whl; do
        if [ -e "$f" ] && [ ! -e "$src/${f##*/}" ]; then rm -f "$f"; fi
    done
    for f in "$src"/*.whl; do
        [ -e "$f" ] || continue
        name=${f##*/}
        if [ -e "$dst/$name" ] && cmp -s "$f" "$dst/$name"; then rm -f "$f"; else mv -f "$f" "$dst/$name"; fi
    done
}

# pip prints one warning per package for the host's partial local indexes; they are noise here.
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

build_wheelhouse() {
    local src="$STATE/src" new="$STATE/wheels.new" stamp
    rm -rf "$src" "$new"
    mkdir -p "$src" "$new/project" "$CTX"
    # Build from a copy of exactly the hashed files: nothing is written into the shared working tree.
    source_files | (cd "$ROOT" && tar --null -T - -cf -) | tar -C "$src" -xf -
    # Pin everything to the versions installed on the host (what the tests ran with); the host's pip
    # configuration supplies its local torch wheels and version caps.
    "$PYTHON" -m pip freeze --exclude-editable | grep -vE '^(-e |#)| @ ' >"$STATE/host-constraints.txt" || true
    stamp=$(cat "$src/pyproject.toml" "$STATE/host-constraints.txt" | sha256sum | cut -c1-16)
    if [ "$(cat "$CTX/wheels/deps.stamp" 2>/dev/null)" = "$stamp" ]; then
        # Same dependency declaration and host versions: only the project wheel needs rebuilding.
        log "dependencies unchanged: building only the project wheel"
        "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$new/project" "$src" 2>&1 | quiet_pip \
            || die 1 "pip wheel failed for the project (see above)"
    else
        log "building the wheelhouse with $("$PYTHON" -m pip --version | cut -d' ' -f1-2)"
        rm -f "$CTX/wheels/deps.stamp"
        "$PYTHON" -m pip wheel --quiet --wheel-dir "$new" --constraint "$STATE/host-constraints.txt" \
            "$src" "kfp==$KFP_VERSION" 2>&1 | quiet_pip || die 1 "pip wheel failed (see above)"
        mv "$new"/actionclip_mlops-*.whl "$new/project/" 2>/dev/null || true
        sync_wheels "$new" "$CTX/wheels/deps"
        echo "$stamp" >"$CTX/wheels/deps.stamp"
    fi
    ls "$new"/project/actionclip_mlops-*.whl >/dev/null 2>&1 || die 1 "pip wheel failed (see the messages above)"
    sync_wheels "$new/project" "$CTX/wheels/project"
    rm -rf "$src" "$new"
    log "wheelhouse: $(ls "$CTX/wheels/deps" | wc -l) wheels, $(du -sh "$CTX/wheels" | cut -f1)"
}

# The server image's wheelhouse: the host's mlflow version with its auth app, the Postgres driver and boto3.
build_mlflow_wheelhouse() {
    local new="$STATE/wheels-mlflow.new" stamp
    stamp=$(printf '%s\n' "$MLFLOW_VERSION" "$PY_MM" | sha256sum | cut -c1-16)
    if [ "$(cat "$MLFLOW_CTX/wheels.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "tracking-server wheelhouse up to date"
        return
    fi
    log "building the tracking-server wheelhouse (mlflow[auth]==$MLFLOW_VERSION, psycopg2-binary, boto3)"
    rm -rf "$new"; mkdir -p "$new" "$MLFLOW_CTX"
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$new" "mlflow[auth]==$MLFLOW_VERSION" psycopg2-binary boto3 2>&1 \
        | quiet_pip || die 1 "pip wheel failed for the tracking-server image (see above)"
    ls "$new"/mlflow-*.whl >/dev/null 2>&1 || die 1 "pip wheel failed for the tracking-server image (see above)"
    sync_wheels "$new" "$MLFLOW_CTX/wheels"
    rm -rf "$new"
    echo "$stamp" >"$MLFLOW_CTX/wheels.stamp"
}

# build_image IMAGE UNIQUE_TAG BASE HASH DOCKERFILE CONTEXT [--build-arg ...]
build_image() {
    local image=$1 unique=$2 base=$3 hash=$4 dockerfile=$5 ctx=$6 slug
    shift 6
    slug=$(printf '%s' "${image##*/}" | tr -c 'A-Za-z0-9' _)
    log "building $unique (BuildKit, --network=none, base $base)"
    DOCKER_BUILDKIT=1 "$DOCKER" build --network=none --progress=plain --build-arg BASE_IMAGE="$base" "$@" \
        --label "$HASH_LABEL=$hash" -f "$dockerfile" -t "$image" -t "$unique" "$ctx" >"$STATE/build-$slug.log" 2>&1 \
        || { tail -n 40 "$STATE/build-$slug.log" >&2; die 1 "docker build failed; full log: $STATE/build-$slug.log"; }
    log "built $unique: $("$DOCKER" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}')"
    # Untag earlier builds of this setting (pushed copies stay in the registry), so their layers can be pruned.
    local tag
    "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' "${image%:*}" | while read -r tag; do
        case $tag in "$image"-*Z-*) [ "$tag" = "$unique" ] || "$DOCKER" rmi "$tag" >/dev/null ;; esac
    done
}

# unique_tag IMAGE HASH: the tag of an earlier build of these inputs if IMAGE still carries one, else a new one.
unique_tag() {
    local image=$1 hash=$2 tag
    while read -r tag; do
        case $tag in "$image"-*Z-"${hash:0:8}") echo "$tag"; return ;; esac
    done < <("$DOCKER" image inspect --format '{{range .RepoTags}}{{println .}}{{end}}' "$image" 2>/dev/null)
    echo "$image-$(date -u +%Y%m%dT%H%M%SZ)-${hash:0:8}"
}

# needs_build IMAGE HASH: 0 when IMAGE is missing, was built from other inputs, or --force was given.
needs_build() {
    [ "$FORCE" = 1 ] && return 0
    [ "$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null)" != "$2" ]
}

main() {
    local mode=build
    FORCE=0
    case "${1:-}" in
        "") ;;
        --force) FORCE=1 ;;
        --stop) mode=stop ;;
        --clean) mode=clean ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die 1 "unknown option ${1}; see --help" ;;
    esac
    [ "$(id -u)" = 0 ] || die 3 "must run as root: it installs packages and starts a private dockerd"
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock 9                                   # one build at a time per state folder
    case $mode in
        stop) stop_engine; log "stopped"; return ;;
        clean) stop_engine; rm -rf "$STATE"; log "removed $STATE"; return ;;
    esac

    ensure_tools
    start_engine
    local image mlflow_image base mlflow_base hash mlflow_hash unique mlflow_unique pids=() pid
    image=$(image_setting IMAGE)
    mlflow_image=$(image_setting MLFLOW_IMAGE)
    case ${image##*/}${mlflow_image##*/} in *:*:*) ;; *) die 1 "image settings need a tag: $image, $mlflow_image" ;; esac
    PY_MM=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    KFP_VERSION=$("$PYTHON" -c 'from importlib.metadata import version; print(version("kfp"))') \
        || die 1 "kfp is not installed for $PYTHON; install the project first (pip install -e .)"
    MLFLOW_VERSION=$("$PYTHON" -c 'from importlib.metadata import version; print(version("mlflow"))')
    base=${BASE_IMAGE:-$LOCAL_TOOLCHAIN_BASE}
    mlflow_base=${BASE_IMAGE:-$LOCAL_BASE}
    hash=$(inputs_hash "$base")
    mlflow_hash=$(mlflow_inputs_hash "$mlflow_base")
    unique=$(unique_tag "$image" "$hash")
    mlflow_unique=$(unique_tag "$mlflow_image" "$mlflow_hash")

    # Bases (network + dpkg) and wheelhouses (pip, mostly file copies) are independent: overlap them.
    if needs_build "$image" "$hash"; then
        if [ -z "${BASE_IMAGE:-}" ]; then make_base "$LOCAL_TOOLCHAIN_BASE" "$LOCAL_TOOLCHAIN_PACKAGES" & pids+=($!); fi
        build_wheelhouse
        for pid in "${pids[@]}"; do wait "$pid" || die 1 "making a base image failed (see above)"; done
        pids=()
        cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$CTX/"
        build_image "$image" "$unique" "$base" "$hash" "$CTX/Dockerfile" "$CTX" \
            --build-arg PYTHON_VERSION="$PY_MM" --build-arg KFP_VERSION="$KFP_VERSION"
    else
        log "$image is up to date (inputs $hash)"
        "$DOCKER" tag "$image" "$unique"
    fi
    if needs_build "$mlflow_image" "$mlflow_hash"; then
        if [ -z "${BASE_IMAGE:-}" ]; then make_base "$LOCAL_BASE" "$LOCAL_BASE_PACKAGES" & pids+=($!); fi
        build_mlflow_wheelhouse
        for pid in "${pids[@]}"; do wait "$pid" || die 1 "making a base image failed (see above)"; done
        mkdir -p "$MLFLOW_CTX/scripts"
        cp "$ROOT/Dockerfile.mlflow" "$MLFLOW_CTX/Dockerfile"
        cp "$ROOT/scripts/mlflow_identities.py" "$MLFLOW_CTX/scripts/"
        build_image "$mlflow_image" "$mlflow_unique" "$mlflow_base" "$mlflow_hash" "$MLFLOW_CTX/Dockerfile" "$MLFLOW_CTX"
    else
        log "$mlflow_image is up to date (inputs $mlflow_hash)"
        "$DOCKER" tag "$mlflow_image" "$mlflow_unique"
    fi
    # Keep this build's cache (a source change then reinstalls only the project layer and re-sends only changed
    # files), drop cache unused for 30 minutes (e.g. a deps layer from an older dependency set) and untagged images.
    "$DOCKER" builder prune -f --filter until=30m >/dev/null 2>&1 || true
    "$DOCKER" image prune -f >/dev/null
    log "done"
    printf 'export DOCKER_HOST=%q\nexport ACTIONCLIP_IMAGE=%q\nexport ACTIONCLIP_MLFLOW_IMAGE=%q\n' \
        "$DOCKER_HOST" "$unique" "$mlflow_unique"
    # A local image has an id (the digest of its config), not yet a registry digest: `docker push` prints that one,
    # which goes into manifests/components/project-image (docs/deploy.md, step 0).
    for unique in "$unique" "$mlflow_unique"; do
        printf '# %s id %s (%s)\n' "$unique" "$("$DOCKER" image inspect --format '{{.Id}}' "$unique")" \
            "$("$DOCKER" image inspect --format '{{.Size}}' "$unique" | awk '{printf "%.2f GB", $1/1e9}')"
    done
}

main "$@"
