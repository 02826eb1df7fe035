# The two commands of the README: `make run` and `make test`. Both build .venv from the project's own files.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-fast lint install install-test install-browser

$(VENV)/.base: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

run: install
	$(VENV)/bin/pipeline-bridge serve

lint: install-test
	$(PY) -m ruff check bridge adapters
	$(PY) -m ruff format --check bridge adapters
	$(PY) -m mypy bridge adapters

# The console's browser tests drive Debian's chromium (Playwright's own browser download cannot work here). As root
# (CI on a clean machine) it is installed when missing; otherwise the tests say why they skip, or fail under CI=true.
install-browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

test: lint install-browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop (under 5 minutes on 2 cores): no lint, SQLite only, no reliability runs or image builds (README, Tests).
test-fast: install-test
	$(PY) -m pytest -q -m "not slow and not postgres" $(PYTEST_ARGS)
