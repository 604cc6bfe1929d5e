# Two commands for a new user: `make test` and `make demo`. Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.ready
# Tier 3 runs the real Portkey gateway (npm @portkey-ai/gateway, pinned in package-lock.json).
NODE_READY := node_modules/.ready
NODE_HINT  := Node.js (>= 18) and npm are needed for the gateway tests (tests/gateway). Install them: Debian/Ubuntu: apt-get install nodejs npm; elsewhere: https://nodejs.org/en/download

.PHONY: install node-install test lint unit airflow-tests gateway-tests demo bench clean test-oldest-airflow

install: $(READY)

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.7'
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e . --group dev
	touch $(READY)

# npm ci installs exactly package-lock.json (no postinstall scripts: the gateway's
# patch-package step ships no patches). The stamp lives inside node_modules, so deleting
# node_modules reinstalls.
node-install: $(NODE_READY)

$(NODE_READY): package.json package-lock.json
	@command -v node >/dev/null 2>&1 || { echo "error: 'node' not found. $(NODE_HINT)" >&2; exit 1; }
	@command -v npm >/dev/null 2>&1 || { echo "error: 'npm' not found. $(NODE_HINT)" >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' || { echo "error: Node.js $$(node --version) is too old. $(NODE_HINT)" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund
	touch $(NODE_READY)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

airflow-tests: install
	$(BIN)/pytest tests/airflow

gateway-tests: install $(NODE_READY)
	$(BIN)/pytest tests/gateway

test: lint $(NODE_READY)
	$(BIN)/pytest tests --ignore=tests/deployment

# Tier 4 (deployment): Airflow distributed as production runs it, on loopback: PostgreSQL and
# Redis (Debian's postgresql and redis-server packages; .ci/run installs them), CeleryExecutor
# with two workers, scheduler, dag-processor, api-server and two triggerers, against the
# emulator as a process of its own. `make test` skips this tier (it needs
# PORTKEY_DEPLOYMENT_TESTS=1); it took 30 minutes on a busy 2-core machine (docs/deployment.md).
DEPLOY_READY := $(VENV)/.deploy-ready

$(DEPLOY_READY): $(READY) pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e . --group dev --group deployment
	touch $(DEPLOY_READY)

.PHONY: test-deployment
test-deployment: $(DEPLOY_READY)
	PORTKEY_DEPLOYMENT_TESTS=1 $(BIN)/pytest tests/deployment -s -p no:cacheprovider --timeout=2400

# The connection as a user meets it: Airflow's api-server (REST API and UI) on loopback, and the
# connection form in Debian's Chromium through Selenium and Debian's chromedriver (installed
# here when missing: no browser download). Under 5 minutes; `make test` skips it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: test-ui chromium
chromium:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

test-ui: install chromium
	PORTKEY_UI_TESTS=1 $(BIN)/pytest tests/ui -s -p no:cacheprovider

demo: install
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory node-install; \
	else echo "Node.js not found: the demo talks to the emulator without the real gateway."; fi
	$(BIN)/python demo/run_demo.py

# Benchmarks (bench/): builds bench/.venv-baselines for the baselines (the project's venv stays
# lean), runs every benchmark and writes docs/benchmarks.md. Under 10 minutes.
bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

# The oldest Airflow this provider claims (pyproject.toml) passes tiers 1 and 2 too.
OLDEST_AIRFLOW := 3.3.0
OLD_VENV       := .venv-airflow-$(OLDEST_AIRFLOW)

$(OLD_VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'uv>=0.7'
	$(OLD_VENV)/bin/uv pip install --quiet --python $(OLD_VENV)/bin/python \
		"apache-airflow==$(OLDEST_AIRFLOW)" -e . --group dev
	touch $(OLD_VENV)/.ready

test-oldest-airflow: $(OLD_VENV)/.ready
	$(OLD_VENV)/bin/pytest tests/unit tests/airflow
