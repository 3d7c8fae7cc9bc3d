# One-command set-up for a fresh Linux (or macOS) machine: `make demo` runs the main
# job (the napari app records a run through the recorder widget, under Xvfb when a
# Linux machine has no screen), `make test` runs the test-suite. Both create .venv and
# install what they need. Windows: the PowerShell commands in the README (Platforms).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

.PHONY: demo demo-single record app test lint bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# re-install whenever pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# mesofield's own loader (datakit), the downstream client the tests load runs with
	$(BIN)/python -m pip install --quiet --no-deps "mesofield>=0.5.0b0"
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

# a whole rig on simulated devices (widefield + pupil camera + wheel, one clock),
# recorded through the recorder's experiment mode as a user pressing Record would
demo: $(VENV)/.installed system-deps
	scripts/with-display.sh $(BIN)/mesofield-napari gui --experiment examples/experiment \
		--duration 3 --out $(DEMO_OUT) --screenshot $(DEMO_OUT)/experiment.png --quit

# one camera through the single-camera recorder on napari-micromanager's core
demo-single: $(VENV)/.installed system-deps
	scripts/with-display.sh $(BIN)/mesofield-napari gui --record-frames 200 \
		--out $(DEMO_OUT) --writer both --screenshot $(DEMO_OUT)/recorder.png --quit

# the same experiment without napari (headless command line)
record: $(VENV)/.installed
	$(BIN)/mesofield-napari record --experiment examples/experiment --duration 3 \
		--out $(DEMO_OUT)

# the app for interactive use (simulated camera unless CONFIG=path/to/MMConfig.cfg)
app: $(VENV)/.installed system-deps
	$(BIN)/mesofield-napari gui $(if $(CONFIG),--config $(CONFIG))

# Linux: the whole suite, then the file layer's tests under the Windows and macOS
# emulation (tests/_emulate_os.py, the README's Platforms section). macOS (and Git Bash on
# Windows): the files the emulation proved, on the real system.
PLATFORM_TESTS := $(shell cat tests/platform-suite.txt)
# test processes: 3 on 2 cores (the tests mostly wait on recordings); TEST_JOBS=0 runs
# in this one process
TEST_JOBS ?= 3
EMULATED := -q -p no:cacheprovider -n $(TEST_JOBS) -m "not slow" $(PLATFORM_TESTS)

# lint first: ruff, then mypy over src/ (pyproject.toml's [tool.mypy]; docs/design.md,
# Types) and the pyproject.toml schema, as CI's lint job and the pre-commit hooks
test: lint system-deps
ifeq ($(shell uname -s),Linux)
	$(BIN)/python -m pytest -n $(TEST_JOBS)
	$(BIN)/python -m pytest --emulate-os=windows $(EMULATED)
	$(BIN)/python -m pytest --emulate-os=macos $(EMULATED)
else
	$(BIN)/python -m pytest $(PLATFORM_TESTS)
endif

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/validate-pyproject pyproject.toml

bench: $(VENV)/.installed system-deps
	$(BIN)/python benchmarks/bench_writers.py --markdown
	$(BIN)/python benchmarks/bench_reader.py
	$(BIN)/python benchmarks/bench_batch.py
	scripts/with-display.sh $(BIN)/python benchmarks/bench_gui_recording.py
	$(BIN)/python benchmarks/bench_video.py --markdown
	$(BIN)/python benchmarks/bench_exact_tiff.py --markdown
	$(BIN)/python benchmarks/bench_open_metadata.py
	$(BIN)/python benchmarks/bench_experiment.py --markdown
	scripts/with-display.sh $(BIN)/python benchmarks/bench_experiment_gui.py --markdown
	scripts/with-display.sh $(BIN)/python benchmarks/bench_gui_recording.py \
		--frames 1000 --size 1024 --live-rois 4 --markdown \
		--results benchmarks/results/bench_live_traces.md

clean:
	rm -rf $(VENV) $(DEMO_OUT)
