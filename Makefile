# sonovec tasks. Everything installs into ./.venv from this repository's own files.
#   make serve            install, then serve REST :8000 + gRPC :50051 (WEIGHTS=pretrained|random|DIR)
#   make test             install (incl. redis-server via apt-get when missing), then the whole suite
#   make lint             ruff + mypy
#   make bench            CI-sized benchmark runs (see benchmarks/README.md for full runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS ?= pretrained
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install serve test test-fast lint bench system-deps clean

$(STAMP): models/pyproject.toml service/pyproject.toml client/pyproject.toml requirements-dev.txt \
		$(wildcard proto/*/*.proto proto/*/*/*.proto)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first and pinned: its CPU build is what our machines carry; unpinned pulls several GB.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e './models[torch,onnx]' -e ./client -e ./service -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/sonovec serve --weights $(WEIGHTS) $(ARGS)

system-deps:
	./scripts/system-deps.sh

test: install system-deps
	PYTHON=$(abspath $(BIN)/python) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not model and not slow and not deploy" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy -p sonovec.models -p sonovec.server -p sonovec.client
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/study_replay.py --quick
	$(BIN)/python benchmarks/limit.py --quick
	$(BIN)/python benchmarks/load.py --quick
	$(BIN)/python benchmarks/search_bench.py --quick

clean:
	rm -rf $(VENV) .cache build dist

-include deploy.mk
