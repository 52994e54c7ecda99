# mcagent: one entry point for setup, tests, demo and benchmarks.
# Every target builds .venv itself on a fresh clone (needs only python3 >= 3.10 and make).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named after a hash of the dependency files, so it is redone only when they change.
# .venv is a developer's: requirements-dev.txt = requirements.txt (the tools) + the test and lint tools.
DEPS_HASH := $(shell cat pyproject.toml requirements.txt requirements-dev.txt 2>/dev/null | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])")
STAMP  := $(VENV)/.deps-$(DEPS_HASH)
PYTEST_ARGS ?=
JOBS ?= auto

.PHONY: fit venv test lint compile bench demo clean help upy32 fuzz

help:
	@echo "make demo    - southgate + the real firmware on the MicroPython Unix port, with a report"
	@echo "make test    - build .venv if needed, compile firmware with mpy-cross, run all host tests"
	@echo "make venv    - only create/refresh .venv (console scripts land in .venv/bin/)"
	@echo "make lint    - ruff over host code and firmware, ruff format --check, mypy over tools/"
	@echo "make compile - mpy-cross every firmware file (build/mpy/)"
	@echo "make upy32   - 32-bit MicroPython Unix port from source, plain + firmware frozen (build/upy32/)"
	@echo "make fit     - per board: smallest 32-bit heap for a first and a later wake vs its heap_kb (FIT_ARGS=--help)"
	@echo "make bench   - run benchmarks (firmware RAM, console chart), write docs/benchmarks.md"
	@echo "make fuzz    - southgate's fuzz test with more cases (FUZZ_CASES=50000, FUZZ_SEED)"
	@echo "make clean   - remove .venv and build outputs"

venv: $(STAMP)

$(STAMP):
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 'mcagent needs Python >= 3.10')"
	@if test -x $(BIN)/python; then \
		echo "updating .venv: installing the pinned tools from requirements-dev.txt (up to 30 s)..."; \
	else \
		echo "creating .venv and installing the pinned tools from requirements-dev.txt (about 30 s)..."; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@echo "installing mcagent's host tools into .venv (editable: mcagent, southgate)..."
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.deps-*
	@touch $@

compile: $(STAMP)
	$(BIN)/python -m mcagent_tools.build --out build/mpy

demo: $(STAMP)
	$(BIN)/python -m mcagent_tools.demo $(DEMO_ARGS)

# The 32-bit port is built before pytest (its workers would otherwise wait on one another for it);
# --optional: a machine without its source or a 32-bit gcc skips those tests (CI=true fails instead).
# The heap bounds (marker "heap": wakes at -X heapsize near their figures) run after the rest, alone: under
# CPU contention a wake's heap layout varies by a step (docs/benchmarks.md; host_tests/conftest.py selects
# by MCAGENT_HEAP_PHASE, so a -m in PYTEST_ARGS still applies). Exit 5: that phase selected nothing.
test: $(STAMP)
	$(BIN)/python -m mcagent_tools.upy32 --frozen --optional
	MCAGENT_HEAP_PHASE=skip $(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	MCAGENT_HEAP_PHASE=only $(BIN)/python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

upy32: $(STAMP)
	$(BIN)/python -m mcagent_tools.upy32 --frozen

fit: $(STAMP)
	$(BIN)/python -m mcagent_tools.fit $(FIT_ARGS)

# ruff over the host code (pyproject.toml) and the firmware (its MicroPython-aware firmware/ruff.toml), the
# formatting of both, and mypy over the host tools ([tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check tools host_tests firmware
	$(BIN)/ruff format --check tools host_tests firmware
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m mcagent_tools.bench $(BENCH_ARGS)
	$(BIN)/python -m southgate.console.bench

# The fuzz test of make test (4,000 seeded cases), longer: FUZZ_CASES=..., FUZZ_SEED=...
FUZZ_CASES ?= 50000
FUZZ_SEED ?= 20240501
fuzz: $(STAMP)
	SG_FUZZ_CASES=$(FUZZ_CASES) SG_FUZZ_SEED=$(FUZZ_SEED) $(BIN)/python -m pytest -q -p no:cacheprovider \
		host_tests/southgate/test_sg_hostile.py -k fuzz

clean:
	rm -rf $(VENV) build .pytest_cache
