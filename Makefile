# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= small
SEED ?= 0
# WORLD_DIR=W: the loop on a world imported before (moon data import logs / recbole / hm).
# WORLD=movielens: MovieLens-100k + all-MiniLM-L6-v2, both fetched into DOWNLOADS when absent
# (GroupLens terms: research use, no redistribution; never commit the data or the weights).
WORLD ?= synthetic
# IMAGE_TOWER=lite0: the synthetic world's encoder on the ImageNet EfficientNet-Lite0 trunk
# (configs/encoder/<preset>_pretrained.yaml), fetched into DOWNLOADS when absent.
IMAGE_TOWER ?=
DOWNLOADS ?= artifacts/downloads
MOVIELENS ?= $(DOWNLOADS)/movielens
TEXT_TOWER ?= $(DOWNLOADS)/all-MiniLM-L6-v2
ifeq ($(WORLD),movielens)
ART ?= artifacts/movielens
else
ART ?= artifacts
endif

# make study: the exchange-rate and scaling studies (configs/studies/$(PRESET).yaml), resumable;
# on the demo's world and training set when they exist, else on a world of its own.
STUDY_OUT ?= $(ART)/studies/$(PRESET)
STUDY_REPORT ?= docs/studies/$(PRESET)
STUDY_WORLD ?= $(if $(wildcard $(ART)/world/world.json),$(ART)/world,)
STUDY_TRAINING_SET ?= $(if $(STUDY_WORLD),$(wildcard $(ART)/training_set.parquet),)

.PHONY: install demo study test lint typecheck clean

install:
	bash scripts/install.sh

demo: install
ifneq ($(WORLD_DIR),)
	bash scripts/fetch_minilm.sh $(TEXT_TOWER)
	$(PY) -m pipelines.demo --world-dir $(WORLD_DIR) --text-tower $(TEXT_TOWER) \
	  --seed $(SEED) --artifacts $(ART)/imported
else ifeq ($(WORLD),movielens)
	bash scripts/fetch_movielens.sh $(MOVIELENS)
	bash scripts/fetch_minilm.sh $(TEXT_TOWER)
	$(PY) -m pipelines.demo --world movielens --movielens-path $(MOVIELENS) \
	  --text-tower $(TEXT_TOWER) --seed $(SEED) --artifacts $(ART)
else ifneq ($(IMAGE_TOWER),)
	bash scripts/fetch_efficientnet_lite.sh $(DOWNLOADS) 0
	$(PY) -m pipelines.demo --preset $(PRESET) --seed $(SEED) --artifacts $(ART)/pretrained \
	  --image-tower $(DOWNLOADS)/efficientnet-lite0-57934424.pth
else
	$(PY) -m pipelines.demo --preset $(PRESET) --seed $(SEED) --artifacts $(ART)
endif

study: install
	HF_HUB_OFFLINE=1 $(PY) -m moon_rec.cli study all --preset $(PRESET) \
	  --out $(STUDY_OUT) --report-out $(STUDY_REPORT) $(if $(STUDY_WORLD),--world $(STUDY_WORLD),) \
	  $(if $(STUDY_TRAINING_SET),--training-set $(STUDY_TRAINING_SET),)

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
