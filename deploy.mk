# Deployment targets; included by the top-level Makefile (also usable alone: make -f deploy.mk TARGET).
#   make deploy-tools   helm, hadolint, kubernetes-validate into .cache/tools and the Python env
#   make deploy-check   helm lint/template/validate for every example, broken examples refused, hadolint
#   make deploy-test    the pytest suite under tests/deploy (marker deploy)
#   make image          build the image with buildah from a local debootstrap base (as root; see docs/deploy.md)
#   make image-smoke    run the service inside the image (buildah run) until its probe says ready

# --- tools and checks ---------------------------------------------------------------------------
# The Python env the tools go into: the project's venv when there is one.
DEPLOY_PY ?= $(if $(wildcard .venv/bin/python),$(abspath .venv/bin/python),python3)
DEPLOY_TOOLS_BIN := $(CURDIR)/.cache/tools/bin
DEPLOY_SCRIPTS = $(shell $(DEPLOY_PY) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
HELM := $(DEPLOY_TOOLS_BIN)/helm
K8S_VERSION ?= 1.30.0
DEPLOY_OUT := .cache/deploy
DEPLOY_EXAMPLES := $(sort $(wildcard helm/examples/values-*.yaml))
DEPLOY_BROKEN := $(sort $(wildcard helm/examples/broken/*.yaml))

.PHONY: deploy-tools deploy-check deploy-test image-deps image-base image-base-build image image-smoke

deploy-tools:
	@PYTHON=$(DEPLOY_PY) ./scripts/deploy-tools.sh >/dev/null

deploy-check: deploy-tools
	@mkdir -p $(DEPLOY_OUT)
	@set -e; for f in $(DEPLOY_EXAMPLES); do \
	  out=$(DEPLOY_OUT)/$$(basename $$f .yaml).rendered.yaml; \
	  echo "== $$f"; \
	  $(HELM) lint --strict helm/sonovec -n sonovec -f $$f | grep -v '^$$'; \
	  $(HELM) template sonovec helm/sonovec -n sonovec -f $$f >$$out; \
	  $(DEPLOY_SCRIPTS)/kubernetes-validate --strict --no-warn -k $(K8S_VERSION) $$out; \
	done
	@set -e; for f in $(DEPLOY_BROKEN); do \
	  if $(HELM) template sonovec helm/sonovec -f $$f >/dev/null 2>$(DEPLOY_OUT)/broken.err; then \
	    echo "== $$f: ACCEPTED, but it is broken on purpose"; exit 1; \
	  fi; \
	  echo "== $$f: refused, as it should be: $$(grep -m1 '^- ' $(DEPLOY_OUT)/broken.err)"; \
	done
	@echo "== hadolint Dockerfile"
	@$(DEPLOY_SCRIPTS)/hadolint Dockerfile && echo "hadolint: clean"

deploy-test: deploy-tools
	$(DEPLOY_PY) -m pytest -q -m deploy tests/deploy

# --- image --------------------------------------------------------------------------------------
# Base images cannot be pulled here, so `make image` builds its own: debootstrap of Debian bookworm
# (python3 3.11, venv) from the mirror apt uses, imported into buildah's storage as IMAGE_BASE.
# Everything runs as root with the vfs storage driver and chroot isolation (no daemon, no overlay).
IMAGE ?= localhost/sonovec:dev
IMAGE_VARIANT ?= cpu
IMAGE_BASE ?= localhost/sonovec-base:bookworm
IMAGE_WEIGHTS ?= none
# false: one commit per stage, much faster on vfs; true: cache every instruction.
IMAGE_LAYERS ?= false
DEBIAN_SUITE ?= bookworm
# The Debian mirror apt already uses here (set DEBIAN_MIRROR where apt has none configured).
DEBIAN_MIRROR ?= $(shell apt-get indextargets --format '$$(REPO_URI)' 2>/dev/null | grep -m1 '/debian/$$')
IMAGE_DIR := .cache/image
BUILDAH := buildah --storage-driver vfs
# Where pip inside the build finds its CA bundle and local wheels: the host's, when it has them
# (this workplace reaches PyPI through a TLS proxy, and keeps the CPU torch wheel on disk).
IMAGE_HOST_CA ?= $(or $(PIP_CERT),/etc/ssl/certs/ca-certificates.crt)
IMAGE_HOST_WHEELS ?= $(firstword $(PIP_FIND_LINKS))
# Empty: the Dockerfile picks the PyTorch index for IMAGE_VARIANT. Locally, PyPI plus the wheels above.
IMAGE_TORCH_INDEX ?= $(if $(IMAGE_HOST_WHEELS),default,)
SMOKE_PORT ?= 18000
SMOKE_GRPC_PORT ?= 18051
SMOKE_METRICS_PORT ?= 18090

image-deps:
	@[ "$$(id -u)" = 0 ] || { echo "image: buildah with vfs and debootstrap need root" >&2; exit 1; }
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    buildah debootstrap >/dev/null; }

# The base is built only when buildah's storage lacks it (buildah rmi IMAGE_BASE to rebuild).
image-base: image-deps
	@$(BUILDAH) inspect --type image $(IMAGE_BASE) >/dev/null 2>&1 \
	  || $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) image-base-build

image-base-build:
	rm -rf $(IMAGE_DIR)/rootfs && mkdir -p $(IMAGE_DIR)
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	  $(DEBIAN_SUITE) $(IMAGE_DIR)/rootfs $(DEBIAN_MIRROR)
	rm -rf $(IMAGE_DIR)/rootfs/var/cache/apt/archives/*.deb $(IMAGE_DIR)/rootfs/var/lib/apt/lists/*
	tar -C $(IMAGE_DIR)/rootfs --numeric-owner -cf $(IMAGE_DIR)/rootfs.tar .
	set -e; ctr=$$($(BUILDAH) from scratch); \
	  $(BUILDAH) add $$ctr $(IMAGE_DIR)/rootfs.tar /; \
	  $(BUILDAH) config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	    --env LANG=C.UTF-8 --cmd /bin/bash $$ctr; \
	  $(BUILDAH) commit --rm $$ctr $(IMAGE_BASE)
	rm -rf $(IMAGE_DIR)/rootfs $(IMAGE_DIR)/rootfs.tar

image: image-base
	mkdir -p $(IMAGE_DIR)
	printf '[global]\ncert = /run/build/ca.crt\n' >$(IMAGE_DIR)/pip.conf
	$(if $(IMAGE_HOST_WHEELS),printf 'find-links = /run/build/wheels\n' >>$(IMAGE_DIR)/pip.conf)
	$(BUILDAH) bud --isolation chroot --format docker --layers=$(IMAGE_LAYERS) --pull=never \
	  --build-arg BASE_IMAGE=$(IMAGE_BASE) --build-arg VARIANT=$(IMAGE_VARIANT) \
	  --build-arg WEIGHTS=$(IMAGE_WEIGHTS) --build-arg TORCH_INDEX_URL=$(IMAGE_TORCH_INDEX) \
	  -v $(abspath $(IMAGE_DIR)/pip.conf):/etc/pip.conf:ro -v $(IMAGE_HOST_CA):/run/build/ca.crt:ro \
	  $(if $(IMAGE_HOST_WHEELS),-v $(IMAGE_HOST_WHEELS):/run/build/wheels:ro,) \
	  -t $(IMAGE) -f Dockerfile .
	$(BUILDAH) images $(IMAGE)

# Inside the image, as its own non-root user, with the fake backend:
#  1. SONOVEC_WEIGHTS=random under the image's SONOVEC_ALLOW_RANDOM_WEIGHTS=false must never turn ready;
#  2. with SONOVEC_ALLOW_RANDOM_WEIGHTS=true it must: the shipped probe is polled until ready, then
#     /v1/health/live and the metrics port are checked, and the server is stopped.
# chroot isolation shares the host's network, hence loopback and ports off the defaults.
SMOKE_GRPC_AND_METRICS = import grpc, urllib.request; \
  from grpc_health.v1 import health_pb2 as pb, health_pb2_grpc as stubs; \
  channel = grpc.insecure_channel(\"127.0.0.1:$(SMOKE_GRPC_PORT)\"); \
  status = stubs.HealthStub(channel).Check(pb.HealthCheckRequest(), timeout=3).status; \
  print(\"grpc.health.v1:\", pb.HealthCheckResponse.ServingStatus.Name(status)); \
  assert status == pb.HealthCheckResponse.SERVING; \
  text = urllib.request.urlopen(\"http://127.0.0.1:$(SMOKE_METRICS_PORT)/metrics\", timeout=3).read().decode(); \
  assert \"sonovec_queue_depth_seconds\" in text, \"no queue-depth gauge\"; \
  print(\"metrics: sonovec_queue_depth_seconds present\")
SMOKE_SCRIPT = \
  id; \
  stop() { kill $$1 2>/dev/null; sleep 1; kill -9 $$1 2>/dev/null; wait $$1 2>/dev/null; }; \
  SONOVEC_WEIGHTS=random sonovec serve >/tmp/refused.log 2>&1 & pid=$$!; \
  for i in $$(seq 1 20); do \
    if sonovec health 2>/dev/null; then \
      echo "image-smoke: FAILED: ready on random weights although the image forbids them" >&2; stop $$pid; exit 1; \
    fi; \
    kill -0 $$pid 2>/dev/null || break; sleep 1; \
  done; \
  stop $$pid; \
  echo "image-smoke: random weights not served; the server said: $$(grep -v "^INFO" /tmp/refused.log | tail -n1)"; \
  SONOVEC_WEIGHTS=random SONOVEC_ALLOW_RANDOM_WEIGHTS=true sonovec serve & pid=$$!; ok=; \
  for i in $$(seq 1 90); do \
    if sonovec health -v; then ok=1; break; fi; \
    kill -0 $$pid 2>/dev/null || break; sleep 1; \
  done; \
  if [ -n "$$ok" ]; then \
    sonovec health --live -v && \
    sonovec health -v --url http://127.0.0.1:$(SMOKE_METRICS_PORT)/metrics && \
    python -c "$(SMOKE_GRPC_AND_METRICS)" || ok=; \
  fi; \
  stop $$pid; \
  if [ -n "$$ok" ]; then echo "image-smoke: ready, live, gRPC serving, metrics scraped"; else echo "image-smoke: FAILED" >&2; exit 1; fi

image-smoke: image-deps
	@set -e; ctr=$$($(BUILDAH) from --pull=never $(IMAGE)); trap '$(BUILDAH) rm $$ctr >/dev/null' EXIT; \
	$(BUILDAH) run --isolation chroot \
	  --env SONOVEC_HOST=127.0.0.1 --env SONOVEC_PORT=$(SMOKE_PORT) \
	  --env SONOVEC_GRPC_PORT=$(SMOKE_GRPC_PORT) --env SONOVEC_METRICS_PORT=$(SMOKE_METRICS_PORT) \
	  --env SONOVEC_BACKEND=fake $$ctr -- sh -c '$(SMOKE_SCRIPT)'
