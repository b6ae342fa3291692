# syntax=docker/dockerfile:1
# sonovec server image: CPU or CUDA by build argument.
#
#   docker build -t sonovec:cpu .
#   docker build -t sonovec:cuda --build-arg VARIANT=cuda .
#   docker build -t sonovec:cpu-weights --build-arg WEIGHTS=download .   # bake the pretrained checkpoints in
#
# Without WEIGHTS=download, mount a directory holding encodec_24khz-d7cc33bc.th and
# encodec_48khz-7e698e3e.th at /weights. The image refuses random weights
# (SONOVEC_ALLOW_RANDOM_WEIGHTS=false), so an image with neither does not start by accident.
# HEALTHCHECK is a Docker-format instruction: with buildah/podman build with --format docker.
# Local builds without registry access: see deploy.mk (`make image`) and docs/deploy.md.

# Any image with python3 (3.10+) and the venv module; the CUDA variant needs no CUDA base:
# the PyTorch CUDA wheels carry their CUDA libraries and the node supplies the driver.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# weights: the pretrained EnCodec checkpoints, or an empty /weights (WEIGHTS=none, the default).
FROM ${BASE_IMAGE} AS weights
ARG WEIGHTS=none
ARG WEIGHTS_BASE_URL=https://dl.fbaipublicfiles.com/encodec/v0
# The file names end in the first 8 hex digits of their sha256 (torch.hub's convention): checked.
RUN mkdir -p /weights \
    && if [ "$WEIGHTS" = "download" ]; then \
        python3 -c 'import hashlib, sys, urllib.request; \
names = ("encodec_24khz-d7cc33bc.th", "encodec_48khz-7e698e3e.th"); \
blobs = {n: urllib.request.urlopen(f"{sys.argv[1]}/{n}", timeout=300).read() for n in names}; \
bad = [n for n, b in blobs.items() if not hashlib.sha256(b).hexdigest().startswith(n[-11:-3])]; \
bad and sys.exit(f"checksum mismatch: {bad}"); \
[open(f"/weights/{n}", "wb").write(b) for n, b in blobs.items()]' "$WEIGHTS_BASE_URL"; \
    elif [ "$WEIGHTS" != "none" ]; then echo "WEIGHTS must be download or none, not '$WEIGHTS'" >&2; exit 1; \
    fi

# ---------------------------------------------------------------------------------------------
# wheels: the three sonovec distributions built once, so the runtime stage has no build tools.
FROM ${BASE_IMAGE} AS wheels
WORKDIR /src
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "pip>=24"
# The client generates its gRPC code from proto/ at build time (grpcio-tools, a build requirement
# that pip fetches into an isolated build environment).
COPY proto/ proto/
COPY models/ models/
COPY client/ client/
COPY service/ service/
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels ./models ./client ./service

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# cpu | cuda: which PyTorch build goes in. Same torch version either way.
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip's default index: its Linux torch wheels are the CUDA build (2.13.0: CUDA 13.0, with nvidia-* wheels).
ARG TORCH_CUDA_INDEX_URL=default
# Set to use another index for torch (e.g. a mirror); empty = pick by VARIANT; "default" = pip's own.
ARG TORCH_INDEX_URL=""
ARG APP_UID=10001

LABEL org.opencontainers.image.title="sonovec" \
      org.opencontainers.image.description="Batched EnCodec embedding, coding and similarity service (REST + gRPC)" \
      org.opencontainers.image.licenses="MIT"

# Numeric user and group; no login shell, no writable home (the chart mounts /tmp).
RUN groupadd --system --gid "$APP_UID" sonovec \
    && useradd --system --no-log-init --uid "$APP_UID" --gid "$APP_UID" --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin sonovec \
    && mkdir -p /data /weights \
    && chown "$APP_UID:$APP_UID" /data

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Layer 1, largest and most stable: torch alone.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && if [ -n "$TORCH_INDEX_URL" ]; then index="$TORCH_INDEX_URL"; \
       elif [ "$VARIANT" = "cuda" ]; then index="$TORCH_CUDA_INDEX_URL"; \
       elif [ "$VARIANT" = "cpu" ]; then index="$TORCH_CPU_INDEX_URL"; \
       else echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1; fi \
    && if [ "$index" = default ]; then pip install "torch==$TORCH_VERSION"; \
       else pip install --index-url "$index" "torch==$TORCH_VERSION"; fi

# Layer 2: third-party dependencies, read from the pyproject files only, so code edits keep this
# layer cached. torch is already there and satisfies the models[torch] pin.
COPY models/pyproject.toml /tmp/req/models/pyproject.toml
COPY client/pyproject.toml /tmp/req/client/pyproject.toml
COPY service/pyproject.toml /tmp/req/service/pyproject.toml
RUN python3 -c 'import re, tomllib; \
projects = {n: tomllib.load(open(f"/tmp/req/{n}/pyproject.toml", "rb"))["project"] for n in ("models", "client", "service")}; \
extras = {"models": ("torch", "onnx")}; \
reqs = {r for n, p in projects.items() for r in p.get("dependencies", []) + [x for e in extras.get(n, ()) for x in p["optional-dependencies"][e]]}; \
print("\n".join(sorted(r for r in reqs if not re.match("sonovec[-_]", r))))' >/tmp/req/requirements.txt \
    && pip install -r /tmp/req/requirements.txt \
    && rm -rf /tmp/req

# Layer 3: weights (empty unless WEIGHTS=download). A volume mounted at /weights replaces them.
COPY --from=weights /weights /weights

# Layer 4, smallest and most often changed: the sonovec code.
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

ENV SONOVEC_HOST=0.0.0.0 \
    SONOVEC_PORT=8000 \
    SONOVEC_GRPC_PORT=50051 \
    SONOVEC_METRICS_PORT=9090 \
    SONOVEC_WEIGHTS=/weights \
    SONOVEC_ALLOW_RANDOM_WEIGHTS=false \
    SONOVEC_DEVICE=auto \
    SONOVEC_DATA_DIR=/data \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/torch \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /data
USER ${APP_UID}:${APP_UID}
EXPOSE 8000 50051 9090

# Model load and warm-up take a while on CPU: start-period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["sonovec", "health"]

ENTRYPOINT ["sonovec"]
CMD ["serve"]
