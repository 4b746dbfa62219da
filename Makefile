# Two commands for a fresh machine: `make dev` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# `dagster dev` runs from DAGSTER_HOME (next to this folder's dagster.yaml Dagster warns that
# it is not the one in use) without its notice that `dg dev` supersedes it (dg needs a dg
# project). A message prefix, as crypto_pipelines.replay.demo.DEV_SUPERSEDED.
comma := ,
DEV_WARNINGS := $(if $(PYTHONWARNINGS),$(PYTHONWARNINGS)$(comma))ignore:Function `dev_command` is superseded

.PHONY: dev demo test install lint typecheck unit validate bench replay clean

# The package is byte-compiled at install: every Dagster run and code server imports it
# afresh, and where PYTHONDONTWRITEBYTECODE is set nothing else would cache compiled modules.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q crypto_pipelines
	touch $(STAMP)

install: $(STAMP)

## Start the Dagster UI (http://127.0.0.1:3000) and daemon on embedded SQLite storage under DAGSTER_HOME.
dev: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	cd $(DAGSTER_HOME) && PYTHONWARNINGS='$(DEV_WARNINGS)' $(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h 127.0.0.1 -p 3000

## Offline demo: synthetic tape, replay exchange, UI and daemon on .demo/dagster_home (Ctrl-C stops).
demo: $(STAMP)
	$(BIN)/crypto-pipelines demo --dir .demo

## Install and run the whole suite: lint, type check, definitions validation, tests.
test: $(STAMP) lint typecheck validate unit

lint: $(STAMP)
	$(BIN)/ruff check crypto_pipelines crypto_pipelines_tests benchmarks
	$(BIN)/ruff format --check crypto_pipelines crypto_pipelines_tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

validate: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate -w workspace.yaml

unit: $(STAMP)
	$(BIN)/pytest

## Benchmarks: prints a table, writes benchmarks/results/*.json.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## The replay exchange on a synthetic tape, without Dagster.
replay: $(STAMP)
	$(BIN)/crypto-pipelines replay serve --synthetic --port 8765

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache .mypy_cache .ruff_cache
