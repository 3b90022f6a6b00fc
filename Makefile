# The two commands a newcomer needs (see README):
#   make run    set up .venv and start the training daemon on the default config
#   make test   set up .venv and run the test suite
PY ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET := { grep -v '^WARNING: Location' || true; }
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test setup bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip 2>&1 | $(QUIET)
	# torch 2.13.0: a CPU build where this machine keeps one on disk, PyPI's (CUDA) build elsewhere.
	$(VENV)/bin/python -m pip install -q torch==2.13.0 2>&1 | $(QUIET)
	$(VENV)/bin/python -m pip install -q -e '.[test]' 2>&1 | $(QUIET)
	$(VENV)/bin/python -c "import go2train, genesis, torch, stable_baselines3" 
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	$(VENV)/bin/go2train daemon start --run-dir .

# Two test files at a time: the real-process tests wait on their processes about half the time.
TEST_JOBS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

bench: setup
	$(VENV)/bin/go2train bench
