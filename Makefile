# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ART ?= artifacts
PRESET ?= small
SEED ?= 0

.PHONY: install demo test lint typecheck clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m pipelines.demo --preset $(PRESET) --seed $(SEED) --artifacts $(ART)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	@# DuckDB's bindings print nanobind "leaked ..." lines at interpreter exit; drop them so
	@# pytest's summary stays the last line.
	set -o pipefail; HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q $(PYTEST_ARGS) 2>&1 | \
	  grep -v -e '^nanobind: ' -e '^ - leaked ' -e '^ - \.\.\. skipped remainder' -e 'nanobind.readthedocs'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

clean:
	rm -rf $(ART)
