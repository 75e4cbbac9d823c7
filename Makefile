# Thin wrappers: `make` bootstraps the project virtualenv, everything else calls the `rtca` CLI inside it.
PYTHON ?= python3.11
VENV   := .venv
RTCA   := $(VENV)/bin/rtca
STAMP  := $(VENV)/.installed

.PHONY: up down wipe status test test-fast lab bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11"; exit 1; }
	@test -d $(VENV) || { echo "creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned Python dependencies into $(VENV) (first time: about a minute) ..."
	@$(VENV)/bin/pip install -q --upgrade pip
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
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir .

clean:
	rm -rf $(VENV)

# Benchmarks (minutes; not part of CI): ratios measured in the same run, absolute figures beside them.
bench: venv
	$(VENV)/bin/python -m rtca.bench.stats_kernel
	$(RTCA) up
	$(VENV)/bin/python -m rtca.bench.functions_e2e
