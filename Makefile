# make demo   - the whole stack on a private redis-server and PostgreSQL, with a simulated fleet
# make test   - the test suite (unit, real-Redis integration, crash tests)
# make check  - lint, types and tests: what CI runs
# make bench  - end-to-end throughput and latency against the BRPOP baseline
# make env    - random secrets for docker compose into .env (kept if already there)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint check bench env redis-server postgresql

$(BIN)/.installed: pyproject.toml
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

env:
	sh deploy/make-env.sh

demo: $(BIN)/.installed redis-server postgresql
	$(BIN)/ocpp-demo

test: $(BIN)/.installed redis-server postgresql
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: $(BIN)/.installed redis-server
	$(BIN)/python -m bench.e2e
