# Two commands matter: `make demo` and `make test`. `make help` lists the rest.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,dev,deepspeed,eval,ner,trackers,slurm
DEMO_ARGS ?=
GPU_PY ?= python3
GPU_CHECK_ARGS ?=

.PHONY: help venv demo test test-fast test-slurm lint bench gpu-wheels gpu-check gpu-dry-run clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/sft-train: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(BIN)/sft-train  ## create .venv with the project and its CPU/dev extras

demo: venv  ## fetch SmolLM2-135M offline, train it on the demo data on CPU, print where results are
	$(BIN)/python -m sft.demo $(DEMO_ARGS)

test: lint  ## lint, then the full test suite (unit, slow, distributed; gpu tests skip without a GPU)
	$(BIN)/python -m pytest -q tests

test-fast: venv  ## unit tests only
	$(BIN)/python -m pytest -q -m "not slow and not distributed and not slurm" tests

test-slurm: venv  ## the real-Slurm launch tests only (root + Debian slurm packages)
	$(BIN)/python -m pytest -q -m slurm tests/launch

lint: venv  ## ruff check + ruff format --check
	$(BIN)/ruff check sft tests benchmarks
	$(BIN)/ruff format --check sft tests benchmarks

bench: venv  ## planner benchmark (see benchmarks/README.md for the training benchmarks)
	$(BIN)/python benchmarks/bench_planner.py

gpu-wheels: venv  ## save the wheels a lent GPU machine lacks into .gpu_wheels/ (carry that folder)
	$(BIN)/python benchmarks/gpu_wheels.py

gpu-check:  ## on a lent GPU machine: gpu tests + bf16 padding/packing/loss bench -> $OUT/gpu_check.json
	PYTHONUNBUFFERED=1 $(GPU_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-dry-run: venv  ## gpu-check's whole pipeline on CPU (tiny model, few steps) -> gpu_out/
	$(BIN)/python benchmarks/gpu_check.py --dry-run $(GPU_CHECK_ARGS)

clean:  ## remove caches and outputs (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache
