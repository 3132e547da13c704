# `make test` and `make demo` create .venv on first use (a no-op once it is current).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: test test-slow test-all test-openmmlab openmmlab demo lint bench bench-gpu list clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" -c constraints.txt
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=15

# The OpenMMLab stack (mmcv 2.1.0 built from source with CPU ops and cached, mmengine, mmdet, mmseg) for the
# detection and segmentation adapters; see tools/openmmlab.sh. A no-op once installed.
OPENMMLAB_STAMP := $(VENV)/.openmmlab-stamp

$(OPENMMLAB_STAMP): $(STAMP) tools/openmmlab.sh constraints.txt
	PYTHON=$(BIN)/python tools/openmmlab.sh
	touch $(OPENMMLAB_STAMP)

openmmlab: $(OPENMMLAB_STAMP)

test-openmmlab: $(OPENMMLAB_STAMP)
	$(BIN)/python -m pytest -m openmmlab --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m slow --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "slow or not slow"

demo: $(STAMP)
	$(BIN)/python -m zoo.train.demo

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/kernels.py

# Kernel cases, then one model per family (Triton vs reference vs timm, eager and compiled, bf16),
# inside a wall-clock budget that includes compilation: about 5 minutes on a fresh GPU machine.
BENCH_KERNELS_S ?= 80
BENCH_MODELS_S ?= 180
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/kernels.py --budget-s $(BENCH_KERNELS_S)
	$(BIN)/python benchmarks/models.py --prewarm --budget-s $(BENCH_MODELS_S) --plot

list: $(STAMP)
	$(BIN)/zoo list

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
