# `make run` and `make test` work from a fresh clone: they create .venv,
# install the pinned dependencies once, then run the pipeline or the tests.
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Steps started by `mlflow run` call `python` and `mlflow` from PATH: use the venv's.
export PATH := $(BIN):$(PATH)
# Absolute SQLite path in the project root unless a tracking server is configured.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

HYDRA_OPTIONS ?=
PYTEST_ARGS ?=

.PHONY: setup run test test-fast ui clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(STAMP)
	$(BIN)/mlflow run . --env-manager local -P hydra_options="$(HYDRA_OPTIONS)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)"

clean:
	rm -rf $(VENV) .pytest_cache
