# totesys-platform. The two commands that matter:
#   make run    the whole platform locally (PostgreSQL, totesys simulator, Dagster UI on http://127.0.0.1:3000)
#   make test   the test suite
# Both create .venv on first use (Python 3.11+) and reinstall only when pyproject.toml changes.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# The install is redone only when pyproject.toml or the constraints change (the stamp is older).
# The constraints pin every runtime dependency to the versions the production image uses.
CONSTRAINTS := $(wildcard deploy/constraints.txt)
STAMP := $(VENV)/.installed
# -qq: machine-wide pip configs can make pip warn about every package; errors still show.
PIP := $(VENV_PYTHON) -m pip -qq --disable-pip-version-check --no-input
# Extra arguments: make run ARGS="--port 3001", make test ARGS="-k simulator"
ARGS ?=

.PHONY: help venv run test clean distclean

help: ## show the targets
	@echo "totesys-platform: asset-based ELT on Dagster"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Extra arguments: make run ARGS=\"--port 3001 --seed-scale 10\", make test ARGS=\"-k simulator\""

venv: $(STAMP) ## create .venv and install the project with its test extras

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ -z "$(PYTHON)" ]; then echo "error: no python3.11 or python3 on PATH; install Python 3.11+" >&2; exit 1; fi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: $(PYTHON) is older than 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(VENV_PYTHON) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing totesys-platform and its test extras into $(VENV) (a minute or two the first time)"
	@$(PIP) install $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) --editable ".[test]"
	@touch $(STAMP)

run: venv ## start everything locally; Dagster UI on http://127.0.0.1:3000, Ctrl-C stops it all
	@$(VENV)/bin/totesys-platform run $(ARGS)

test: venv ## run the tests (real PostgreSQL, moto, Dagster runs)
	$(VENV_PYTHON) -m pytest $(ARGS)

clean: ## stop the local stack and delete its data (.local)
	@if [ -x $(VENV)/bin/totesys-platform ] && [ -d .local ]; then TOTESYS_LOCAL_DIR=$(CURDIR)/.local $(VENV)/bin/totesys-platform stack down || true; fi
	rm -rf .local

distclean: clean ## also delete .venv
	rm -rf $(VENV)

# Ticks of the lake's many-ticks bench (bench/lake_ticks.py) that `make bench` runs after the suite.
LAKE_TICKS ?= 1000

.PHONY: bench bench-lake
bench: venv ## run the benchmark suite and write BENCHMARKS.md (about 45 minutes on 2 cores; ARGS="--profile tiny" LAKE_TICKS=20 for a smoke run)
	@$(PIP) install $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) --editable ".[test,bench]"
	$(VENV_PYTHON) bench/run.py --scales 1 10 100 --repeat 3 --repeat-large 3 --profile-ours --profile-scale 10 $(ARGS)
	$(VENV_PYTHON) bench/lake_ticks.py --ticks $(LAKE_TICKS)

bench-lake: venv ## only the lake over many ticks (LAKE_TICKS=1000, about 20 minutes): its section of BENCHMARKS.md
	$(VENV_PYTHON) bench/lake_ticks.py --ticks $(LAKE_TICKS)
