# Thin wrappers: `make` bootstraps the project virtualenv; up, down, wipe, status and the benchmarks call the `rtca`
# CLI inside it, test and test-fast call its pytest, lab its jupyter.
PYTHON ?= python3.11
VENV   := .venv
LAB_PORT ?= 8888
RTCA   := $(VENV)/bin/rtca
STAMP  := $(VENV)/.installed

.PHONY: up down wipe status test test-fast lab bench bench-quick venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11"; exit 1; }
	@test -d $(VENV) || { echo "creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned Python dependencies into $(VENV) (first time: 1-3 minutes, quietly) ..."
	@$(VENV)/bin/pip install -q pip==26.3
	@$(VENV)/bin/pip install -q -e ".[dev]"
	@touch $(STAMP)

# Stack, functions, tables, dashboards and the replay: the runbooks 00-40, executed copies in .run/runbooks/.
up: venv
	$(RTCA) runbooks
	@$(RTCA) status

down: venv
	$(RTCA) down

wipe: venv
	$(RTCA) down --wipe

status: venv
	$(RTCA) status

test: venv
	$(VENV)/bin/pytest

test-fast: venv
	$(VENV)/bin/pytest -m "not stack"

lab: venv
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --notebook-dir . $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV)

# Benchmarks (not part of CI): ratios against references measured in the same run, absolute figures beside them;
# a table on stdout, JSON under .run/bench/ (docs/performance.md). `make bench` takes about an hour and also runs
# the start-up benchmark (a second stack on ports +20000); `make bench-quick` takes minutes.
bench: venv
	$(RTCA) up
	$(RTCA) bench kernel functions ingest freshness capacity queries startup

bench-quick: venv
	$(RTCA) up
	$(RTCA) bench --quick
