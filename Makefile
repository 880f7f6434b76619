# Every target bootstraps .venv itself: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: run test bench lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.base: $(BIN)/activate pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/activate pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,semantic]'
	touch $@ $(VENV)/.base

run: $(VENV)/.base
	$(BIN)/breakdesk demo

test: $(VENV)/.dev
	$(BIN)/pytest -n 2 -q

bench: $(VENV)/.dev
	$(PY) -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache breakdesk.db*
