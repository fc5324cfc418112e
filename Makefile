# Refloop: two commands on a fresh machine.
#   make demo   set up, then run the demo on the embedded default (SQLite, local sandbox peers)
#   make test   set up, start what the tests need (PostgreSQL, peers), run the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test setup lint bench clean postgres-start postgres-stop

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Refloop and its test tools into $(VENV) (with uv from the package index, else pip) ..."
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	@$(BIN)/pip install -q --disable-pip-version-check uv || echo "uv is not available; installing with pip"
	@if test -x $(BIN)/uv; then $(BIN)/uv pip install --python $(BIN)/python -e '.[test]'; \
	 else $(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[test]'; fi
	@touch $(STAMP)

NODE_STAMP := node_modules/.installed

# axe-core (accessibility checks in the browser tests), from package-lock.json
$(NODE_STAMP): package.json package-lock.json
	@echo "installing the tests' JavaScript (npm ci: axe-core) into node_modules ..."
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

setup: $(STAMP) $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/refloop demo

test: $(STAMP) $(NODE_STAMP)
	@./scripts/test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

postgres-start:
	@./scripts/postgres start
postgres-stop:
	@./scripts/postgres stop

clean:
	./scripts/postgres stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
