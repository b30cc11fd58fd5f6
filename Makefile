# `make run` and `make test` work from a fresh clone: they create .venv and install
# into it exactly what a lock names, every file checked against its hash, with uv
# (pinned below; it reads UV_* settings, not pip.conf or PIP_*, and takes every package
# from PyPI): `make run` requirements.lock, `make test` requirements-dev.lock (the
# runtime plus the extras, i.e. ray, and pytest, pyspark, ruff, ...). Packages
# not in the lock are removed (uv pip sync), except pip, setuptools and uv itself.
# The dependencies are declared once, in pyproject.toml; `make lock` writes the locks
# and conda.yaml from it, `make lock-check` fails when they disagree.
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-dev
# Bytecode is written as Python does by default, the first time a module is imported:
# only what runs is compiled, once. PYTHONDONTWRITEBYTECODE, set on some machines, would
# make every process compile every import again (~40% more CPU).
export PYTHONDONTWRITEBYTECODE :=
UV_SYNC := $(BIN)/uv pip sync --quiet --require-hashes --python $(BIN)/python
# Locks for Linux, macOS and Windows, Python 3.11 and later; versions already in a lock
# are kept unless LOCK_ARGS says otherwise (e.g. LOCK_ARGS=--upgrade, or
# LOCK_ARGS="--upgrade-package mlflow"). The dev lock is resolved within the runtime
# lock, so that the tests run the versions `make run` installs.
LOCK_ARGS ?=
UV_COMPILE := $(BIN)/uv pip compile --quiet pyproject.toml --universal --python-version 3.11 \
  --generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS)

# Steps started by `mlflow run` call `python` and `mlflow` from PATH: use the venv's.
export PATH := $(BIN):$(PATH)
# Absolute SQLite path in the project root unless a tracking server is configured.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

HYDRA_OPTIONS ?=
FORCE ?=
WAIT ?= 600
VERSION ?=
REASON ?=
PYTEST_ARGS ?=

# Empty: the champion of the default registered model (core/contracts.py).
MODEL_NAME ?=
MODEL_URI = $(if $(MODEL_NAME),--model-uri "models:/$(MODEL_NAME)@champion")
PORT ?=
POLL ?=
WORKERS ?=

.PHONY: setup lock lock-check run retrain rollback promote reproduce batch serve score drift bench bench-big test test-fast test-stress ui clean

setup: $(STAMP)

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The offline check first: a lock that no longer matches pyproject.toml is not installed.
$(STAMP): requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/python -m core.dependencies check
	$(UV_SYNC) requirements.lock
	touch $@

$(TEST_STAMP): requirements.lock requirements-dev.lock pyproject.toml | $(BIN)/uv
	$(BIN)/python -m core.dependencies check
	$(UV_SYNC) requirements-dev.lock
	touch $(STAMP) $@

# Resolves from PyPI: the runtime lock, the dev lock (extras and dev group) within it,
# then conda.yaml from the runtime lock.
lock: | $(BIN)/uv
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --group dev --all-extras -c requirements.lock -o requirements-dev.lock
	$(BIN)/python -m core.dependencies conda > conda.yaml.tmp && mv conda.yaml.tmp conda.yaml

# The offline comparison (also a unit test), then the locks resolved again from PyPI in a
# temporary folder, within the committed locks' versions (without their hashes, which uv
# would otherwise copy): any difference in what is pinned, or in a hash, fails.
lock-check: | $(BIN)/uv
	$(BIN)/python -m core.dependencies check
	@tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp"' EXIT && cp pyproject.toml "$$tmp" && \
	$(BIN)/python -m core.dependencies pins requirements.lock > "$$tmp/runtime.pins" && \
	$(BIN)/python -m core.dependencies pins requirements-dev.lock > "$$tmp/dev.pins" && \
	(cd "$$tmp" && $(UV_COMPILE) -c runtime.pins -o requirements.lock && \
	  $(UV_COMPILE) --group dev --all-extras -c dev.pins -o requirements-dev.lock) && \
	for lock in requirements.lock requirements-dev.lock; do \
	  grep -v '^ *#' "$$lock" > "$$tmp/$$lock.committed"; grep -v '^ *#' "$$tmp/$$lock" > "$$tmp/$$lock.resolved"; \
	  diff -u "$$tmp/$$lock.committed" "$$tmp/$$lock.resolved" || \
	    { echo "$$lock is not what pyproject.toml resolves to (its versions kept): run make lock"; exit 1; }; \
	done; echo "lock-check: the locks are what pyproject.toml resolves to"

# The store is checked first (`mlflow run` alone retries a server that is down for minutes),
# and the experiment the config names (experiment.name) created: `mlflow run` puts the runs there.
run: $(STAMP)
	@experiment="$$($(BIN)/python -m core.tracking "$(HYDRA_OPTIONS)")" && set -x && \
	$(BIN)/mlflow run . --env-manager local --experiment-name "$$experiment" -P hydra_options="$(HYDRA_OPTIONS)" -P force="$(FORCE)"

# The command for schedulers: locked, cached, exit 0/1, 69 (server down), 75 (lock busy).
# Its runs are tagged pipeline.trigger=schedule; TRIGGER=manual when a person runs it.
# WHEN=drift: only when the newest batch (INPUT=file, else data.path) drifted from the champion's training data.
retrain: $(STAMP)
	$(BIN)/python -m ops.retrain --wait $(WAIT) --force "$(FORCE)" --trigger $(or $(TRIGGER),schedule) \
	  --when $(or $(WHEN),changed) $(if $(INPUT),--input "$(INPUT)") "$(HYDRA_OPTIONS)"

# champion <-> previous_champion; a second rollback undoes the first.
rollback: $(STAMP)
	$(BIN)/python -m ops.rollback "$(HYDRA_OPTIONS)"

# A validated version to champion past the gate (the only way back for a rolled-back one).
promote: $(STAMP)
	@test -n "$(VERSION)" -a -n "$(REASON)" || { echo 'usage: make promote VERSION=<registered version> REASON="why"'; exit 2; }
	$(BIN)/python -m ops.promote "$(VERSION)" --reason "$(REASON)" "$(HYDRA_OPTIONS)"

reproduce: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make reproduce VERSION=<registered version>"; exit 2; }
	$(BIN)/python -m ops.reproduce $(VERSION) "$(HYDRA_OPTIONS)"

# A "new batch" of iris-like data in data/batch.csv; ROWS=N appends N new rows to it.
batch: $(STAMP)
	$(BIN)/python -m ops.make_batch data/batch.csv $(if $(ROWS),--append $(ROWS) --seed $$(date +%s))

# The champion behind MLflow's scoring app on loopback (serving/server.py: its files checked first; every
# bad request a short JSON 4xx, no stack traces, no echo of the body). It follows the alias: a new
# champion is loaded, checked and swapped in while it answers (POLL=seconds, default 10; WORKERS=N).
serve: $(STAMP)
	$(BIN)/python -m serving.server $(MODEL_URI) --host 127.0.0.1 --port $(or $(PORT),5001) \
	  $(if $(POLL),--poll-interval $(POLL)) $(if $(WORKERS),--workers $(WORKERS))

# Batch scoring: make score INPUT=in.csv OUTPUT=out.parquet [METHOD=predict]
score: $(STAMP)
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make score INPUT=in.csv OUTPUT=out.csv [METHOD=predict_proba]"; exit 2; }
	$(BIN)/python -m serving.batch --input "$(INPUT)" --output "$(OUTPUT)" $(MODEL_URI) --predict-method $(or $(METHOD),predict_proba)

# Drift of a batch from the champion's training data, recorded on the champion's drift run with an
# HTML report: make drift INPUT=batch.csv [REPORT=drift.html] [HYDRA_OPTIONS="drift.psi=0.25"]
drift: $(STAMP)
	@test -n "$(INPUT)" || { echo "usage: make drift INPUT=batch.csv [REPORT=drift.html]"; exit 2; }
	$(BIN)/python -m ops.drift --input "$(INPUT)" $(MODEL_URI) $(if $(REPORT),--report "$(REPORT)") "$(HYDRA_OPTIONS)"

# Benchmarks print ratios measured side by side; not part of the tests' pass/fail.
bench: $(STAMP)
	$(BIN)/python -m bench.pyfunc
	$(BIN)/python -m bench.rest
	$(BIN)/python -m bench.cache
	$(BIN)/python -m bench.swap

# The 1,000,000-row pipeline and batch-scoring comparison (several minutes, ~1 GB of temp files).
bench-big: $(STAMP)
	$(BIN)/python -m bench.big

# Two workers, each taking a whole test module at a time (the tests of a module may
# share a server or a Spark session). Test order is fixed here, random in test-stress.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The code as ruff checks and formats it (settings in pyproject.toml); part of make test.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PYTEST) -p no:randomly $(PYTEST_ARGS)

test-fast: $(TEST_STAMP)
	$(PYTEST) -p no:randomly -m "not slow" $(PYTEST_ARGS)

# The suite as a busy machine runs it: two busy loops keep both cores loaded, and
# the tests run in a random order (pytest-randomly prints the seed; reuse it with
# PYTEST_ARGS=--randomly-seed=N) to catch tests that depend on each other.
# Each loop also ends by itself when this shell is gone (Ctrl-C included).
test-stress: $(TEST_STAMP)
	@pids=""; for i in 1 2; do \
	  $(BIN)/python -c "import itertools, os; p = os.getppid(); any(os.getppid() != p for _ in itertools.count())" & \
	  pids="$$pids $$!"; \
	done; \
	trap 'kill $$pids 2>/dev/null' EXIT; trap 'kill $$pids 2>/dev/null; exit 130' INT TERM; \
	$(PYTEST) $(PYTEST_ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --port $(or $(PORT),5000)

clean:
	rm -rf $(VENV) .pytest_cache .cache
