# The two commands: `make run` (a local cluster on an embedded PostgreSQL) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TOPOLOGY ?= config/topology.yaml

.PHONY: test run lint typecheck pytest protos postgres-binaries chromium venv chaos

test: venv postgres-binaries chromium lint typecheck pytest

run: venv postgres-binaries
	$(BIN)/taskmesh up --topology $(TOPOLOGY)

venv: $(VENV)/.installed

# Re-installs when the package metadata changes; uv when it can be had (seconds), else pip.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv \
		&& $(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,bench]' \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $@

# The embedded ledger and the test harness run Debian's PostgreSQL server binaries.
postgres-binaries:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then :; \
	else \
		echo "PostgreSQL server binaries not found: installing Debian's postgresql"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends postgresql; \
	fi

# The dashboard's browser tests drive Debian's Chromium through Playwright.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	else \
		echo "Chromium not found: installing Debian's chromium for the browser tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; \
	fi

lint: venv
	$(BIN)/ruff check taskmesh tests protos
	$(BIN)/ruff format --check taskmesh tests protos
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

pytest: venv postgres-binaries chromium
	$(BIN)/pytest

# The chaos scenarios at full size (e.g. a region killed holding 1,000 queued runs); prints the
# table of runs submitted, completed, lost, duplicated and the recovery time of each.
chaos: venv postgres-binaries
	$(BIN)/pytest tests/chaos --chaos-full

protos: venv
	$(BIN)/python protos/generate.py
