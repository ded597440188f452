PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
# uv resolves the lock (make lock) only; installing needs nothing but pip.
UV_VERSION := 0.13.8

.PHONY: demo test lint format bench audit lock clean browser screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly the locked set, every file checked against its hash; then the project itself,
# built with the locked setuptools (no build isolation, which would fetch an unpinned one).
# A lock older than pyproject's dependency lists stops here with one line.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	@$(PYTHON) tools/lockfile.py check
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve every dependency (latest releases within pyproject's ranges) and the build
# tools; commit the result. Runs without the stamp: the lock may be stale right now.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/python tools/lockfile.py compile --uv $(BIN)/uv

# The locked set against PyPI's vulnerability data (the JSON API, which also serves the
# packages): exit 1 naming each vulnerable package, or one line when PyPI cannot be reached.
audit: $(STAMP)
	$(BIN)/python tools/audit.py $(LOCK)

demo: $(STAMP)
	$(BIN)/fullkit demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -q

# Chromium for the console's browser tests (Debian's package, or Chrome on macOS; see
# tools/chromium.sh).
browser: $(STAMP)
	@sh tools/chromium.sh $(BIN)/python

# The README's picture of the console, from a seeded ledger.
screenshot: $(STAMP) browser
	$(BIN)/python -m tests.console_screenshot docs/console.png

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bridge connectors kernel sandbox
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .fullkit
