# Every target bootstraps .venv itself: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: run test bench lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The modules setup.py compiles with mypyc or Cython (listed in src/breakdesk/native.py): editing one rebuilds it.
CORE := $(shell sed -n 's|^ *"\(breakdesk/[a-z_/]*\.pyx\{0,1\}\)",$$|src/\1|p' src/breakdesk/native.py)

# Stamps re-run the install whenever the project's metadata or a compiled module's source changes.
$(VENV)/.base: $(BIN)/activate pyproject.toml setup.py src/breakdesk/native.py $(CORE)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/activate pyproject.toml setup.py src/breakdesk/native.py $(CORE)
	$(PY) -m pip install --quiet -e '.[dev,semantic]'
	touch $@ $(VENV)/.base

run: $(VENV)/.base
	$(BIN)/breakdesk demo

test: $(VENV)/.dev
	$(BIN)/pytest -n 2 -q

bench: $(VENV)/.dev
	$(PY) -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench scripts setup.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build breakdesk.db* src/*__mypyc* src/breakdesk/*/*.so
