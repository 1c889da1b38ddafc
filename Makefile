# One virtual environment (.venv) for everything; `serve` installs only the serving runtime into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
MODELS_DIR ?= models
HOST ?= 127.0.0.1
PORT ?= 8000
CONFIG ?= training/configs/de-en.yaml
PYTEST_ARGS ?=

.PHONY: help setup setup-serve serve test test-slow test-soak test-deploy loadtest bench prepare train export evaluate rerank calibrate ablation lock clean

help:
	@echo "make serve              set up .venv (serving runtime) and start the API on $(HOST):$(PORT)"
	@echo "make test               set up .venv (dev) and run the test suite"
	@echo "make test-soak          20,000-request memory soak against a served tiny model (CI runs it)"
	@echo "make test-deploy        build and check the container, monitoring and manifests (root, podman)"
	@echo "make prepare CONFIG=... inspect a config's corpora: counts, rejects per cleaning rule, splits"
	@echo "make train CONFIG=...   train a model from scratch (resumes if interrupted)"
	@echo "make export RUN=runs/de-en OUT=models/de-en   export, check parity, evaluate, calibrate confidence"
	@echo "make rerank OUT=models/de-en   choose the reverse model's reranking weight on validation data"
	@echo "make calibrate          fit and measure the shipped models' translation confidence (docs/confidence.md)"
	@echo "make loadtest [URL=...] locust at increasing concurrency -> loadtest/reports/"
	@echo "make bench              engine, service and scheduler benchmarks (ratios measured side by side)"
	@echo "make ablation           cell/attention ablation study (~100 min on 2 cores) -> docs/ablation.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.serve: $(BIN)/python requirements/serve.in constraints.txt
	$(PIP) -r requirements/serve.in
	touch $@

$(VENV)/.dev: $(BIN)/python requirements/serve.in requirements/train.in requirements/dev.in constraints.txt
	$(PIP) -r requirements/dev.in
	touch $@ $(VENV)/.serve

setup-serve: $(VENV)/.serve
setup: $(VENV)/.dev

serve: setup-serve
	MT_MODELS_DIR=$(MODELS_DIR) $(BIN)/python -m service serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-soak: setup
	$(BIN)/python -m pytest -m soak -s $(PYTEST_ARGS)

URL ?=
LOADTEST_ARGS ?=
BENCH_ARGS ?=

# Locust at 1, 8, 32, 64 users against a service it starts (or URL=...): report in loadtest/reports/<time>/.
loadtest: setup
	$(BIN)/python -m loadtest.run $(if $(URL),--url $(URL),--models-dir $(MODELS_DIR)) $(LOADTEST_ARGS)

# Engine (PyTorch / ONNX fp32 / int8 by batch size), service (batching on vs off) and scheduler (batch vs continuous,
# bench/scheduling.py; BENCH_ARGS="--skip-scheduling" or --scheduling-args "...") benchmarks: docs/performance.md.
bench: setup
	$(BIN)/python -m bench.run --model-dir $(MODELS_DIR)/de-en --out bench/results $(BENCH_ARGS)

# Container checks: podman build + run + probes, Prometheus, hadolint, compose, kustomize (root; see docs/deployment.md).
test-deploy:
	bash deploy/ci/container-checks.sh

prepare: setup
	$(BIN)/python -m training.prepare --config $(CONFIG)

train: setup
	$(BIN)/python -m training.train --config $(CONFIG)

RUN ?= runs/de-en
OUT ?= models/de-en
export: setup
	$(BIN)/python -m training.export --run-dir $(RUN) --out $(OUT) --quantize
	$(BIN)/python -m training.evaluate --model-dir $(OUT)
	$(BIN)/python -m training.calibrate --model-dir $(OUT) --plot-dir docs/confidence

# Let the reverse direction's model (beside OUT) rerank OUT's beam, with a weight chosen on validation data
# (docs/training.md); then run evaluate and calibrate again.
rerank: setup
	$(BIN)/python -m training.rerank --model-dir $(OUT)

# Fit and measure the translation confidence of the shipped models (docs/confidence.md).
calibrate: setup
	$(BIN)/python -m training.calibrate --model-dir $(MODELS_DIR)/*/ --plot-dir docs/confidence

ablation: setup
	$(BIN)/python -m training.ablation --config training/configs/ablation.yaml --out runs/ablation --docs docs

evaluate: setup
	$(BIN)/python -m training.evaluate --model-dir $(MODELS_DIR)/*/

lock: setup
	{ echo "# Pinned versions of every Python package the project installs (regenerate with: make lock)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
