# One-command set-up for a fresh Linux machine: `make demo` runs the main job,
# `make test` runs the test-suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

.PHONY: demo test lint bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# re-install whenever pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

demo: $(VENV)/.installed system-deps
	$(BIN)/mesofield-napari record --out $(DEMO_OUT) --frames 200 --writer both

test: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_writers.py

clean:
	rm -rf $(VENV) $(DEMO_OUT)
