# make demo   - the whole stack on a private redis-server and PostgreSQL, with a simulated fleet
# make test   - the test suite (unit, real-Redis integration, crash tests)
# make check  - lint, types and tests: what CI runs
# make bench  - end-to-end throughput and latency against the BRPOP baseline
# make env    - random secrets for docker compose into .env (kept if already there)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint check bench env redis-server postgresql chromium

# The operator console's front-end libraries, from the npm registry at
# build time (package-lock.json pins them), copied into static/vendor/:
# ocpp-api serves them itself, no CDN.
CONSOLE := adapters/console
VENDOR := $(CONSOLE)/static/vendor/.built

$(VENDOR): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json $(CONSOLE)/vendor.mjs
	@if ! command -v npm >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	cd $(CONSOLE) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && node vendor.mjs
	touch $@

$(BIN)/.installed: pyproject.toml $(VENDOR)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Tests and the demo start their own redis-server unless REDIS_URL is set.
redis-server:
	@if [ -z "$$REDIS_URL" ] && ! command -v redis-server >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	fi

# Tests and the demo start their own PostgreSQL unless DATABASE_URL is set. Debian keeps
# its binaries off PATH, in /usr/lib/postgresql/<version>/bin.
postgresql:
	@if [ -z "$$DATABASE_URL" ] && ! command -v initdb >/dev/null \
		&& ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

# The console's browser tests drive Debian's chromium (Playwright cannot
# download a browser here).
chromium:
	@if ! command -v chromium >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

env:
	sh deploy/make-env.sh

# KEEP=1: leave the stack up after the run, for a person to look at the console.
demo: $(BIN)/.installed redis-server postgresql
	$(BIN)/ocpp-demo $(if $(KEEP),--keep)

test: $(BIN)/.installed redis-server postgresql chromium
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: $(BIN)/.installed redis-server
	$(BIN)/python -m bench.e2e
