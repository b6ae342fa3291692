#!/usr/bin/env bash
# Build the GPU kit: a folder of wheels that installs sonovec with `pip install --no-index` on a
# machine without network (the GPU machine benchmarks/gpu.sh runs on), without torch.
#
#   bash scripts/gpu-kit.sh                          # .gpu-kit/: CPython 3.12, only what the GPU machine lacks
#   bash scripts/gpu-kit.sh --python 3.11.7 --full --out /tmp/kit   # a clean venv here holding only torch
#
# --python X.Y.Z  the target CPython (default 3.12.3, the GPU machine's)
# --full          everything but torch and torch's own requirements (default: leave out what the GPU
#                 machine's image already holds; scripts/gpu_kit.py says which, and why grpcio and
#                 protobuf come anyway)
# --out DIR       the kit folder (default .gpu-kit, git-ignored); emptied first
# --max-mb N      fail when the kit is larger (default 48: the working tree that travels to the GPU
#                 machine, kit included, must stay under 64 MiB)
#
# Contents: the project's three wheels (pip wheel --no-deps; the client's build generates its gRPC
# code from proto/), third-party wheels at the versions installed in this checkout's venv (what the
# tests here ran on) for manylinux x86_64, and manifest.json (the target and what it is assumed to
# provide). scripts/gpu_kit.py check verifies the kit from the wheels' own metadata.
# Needs this checkout's venv (make install) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET=3.12.3
MODE=gpu
KIT=.gpu-kit
MAX_MB=48
while [[ $# -gt 0 ]]; do
    case $1 in
        --python) TARGET=$2; shift 2 ;;
        --full) MODE=full; MAX_MB=0; shift ;;
        --out) KIT=$2; shift 2 ;;
        --max-mb) MAX_MB=$2; shift 2 ;;
        *) echo "gpu-kit.sh: unknown argument $1 (see the comments at the top)" >&2; exit 2 ;;
    esac
done
[[ -x $PY ]] || { echo "gpu-kit.sh: no $PY; run make install first (or set PYTHON)" >&2; exit 2; }
[[ $TARGET =~ ^3\.[0-9]+\.[0-9]+$ ]] || { echo "gpu-kit.sh: --python wants X.Y.Z, got $TARGET" >&2; exit 2; }
SHORT=${TARGET%.*}

rm -rf "$KIT"
mkdir -p "$KIT"
echo "gpu-kit: CPython $TARGET, mode $MODE, into $KIT"

# 1. The project's distributions (pure Python: any 3.x). The client's build runs protoc (grpcio-tools).
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$KIT" ./models ./client ./service

# 2. Third-party wheels for the target. pip matches manylinux_2_N exactly: name them all. A package
#    published only as an sdist (encodec 0.1.1) comes as one and is built here into a wheel, which
#    must be pure Python (step 3 refuses a wheel the target cannot install).
"$PY" scripts/gpu_kit.py plan --python "$TARGET" --mode "$MODE" >"$KIT/plan.txt"
platforms=(--platform manylinux2014_x86_64 --platform linux_x86_64)
for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip download --quiet --no-deps --implementation cp \
    --python-version "$SHORT" "${platforms[@]}" --dest "$KIT" -r "$KIT/plan.txt"
for sdist in "$KIT"/*.tar.gz "$KIT"/*.zip; do
    [[ -e $sdist ]] || continue
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$KIT" "$sdist"
    rm "$sdist"
done

# 3. Complete? (one version each, installable tags, every requirement met in the kit or on the target)
"$PY" scripts/gpu_kit.py check "$KIT" --python "$TARGET" --mode "$MODE"

size_kb=$(du -sk "$KIT" | cut -f1)
echo "gpu-kit: $(ls "$KIT"/*.whl | wc -l) wheels, $((size_kb / 1024)) MiB in $KIT"
ls -S "$KIT"/*.whl | sed -n 1,5p | while read -r f; do echo "  $(du -h "$f" | cut -f1)  $(basename "$f")"; done
if [[ $MAX_MB -gt 0 && $size_kb -gt $((MAX_MB * 1024)) ]]; then
    echo "gpu-kit.sh: the kit is over --max-mb $MAX_MB MiB" >&2
    exit 1
fi
