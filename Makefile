# BigDataFlow — every entry point of the toolkit. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/bigdataflow.example.toml
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: install
install: $(BIN)/python ## Create .venv with the pinned Python dependencies (pyspark, confluent-kafka, ...)

.PHONY: lint
lint: install ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: install ## ruff: fix what can be fixed and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: install ## Run the test suite (unit tests with a local SparkSession; no servers needed)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: keys
keys: install ## Create a key file: make keys KEY_FILE=path (mode 0600)
	@test -n "$(KEY_FILE)" || { echo "usage: make keys KEY_FILE=path" >&2; exit 2; }
	$(BIN)/bdf-keys create $(KEY_FILE)

.PHONY: offline-source
offline-source: install ## Serve the offline randomuser.me API on 127.0.0.1:8080
	$(BIN)/bdf-randomuser --host 127.0.0.1 --port 8080

.PHONY: produce
produce: install ## Publish COUNT profiles with CONFIG (default config/bigdataflow.example.toml)
	$(BIN)/bdf-producer --config $(CONFIG) --count $${COUNT:-1000}

.PHONY: clean
clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
