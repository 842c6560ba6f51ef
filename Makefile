# Two commands: `make run` serves the service, `make test` runs the whole suite.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
FHIR_SERVER_DIR := tests/fhir_server

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.run-installed

# The test FHIR server (Medplum's router); skipped quietly where npm is missing, and the
# tests that need it then skip with a reason (or fail when CI is set).
$(FHIR_SERVER_DIR)/node_modules/.installed: $(FHIR_SERVER_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(FHIR_SERVER_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: FHIR-server tests will be skipped"; fi

run: $(VENV)/.run-installed
	$(BIN)/gunicorn --workers 2 --preload --bind 127.0.0.1:$(PORT) --access-logfile - 'cds_service:create_app()'

test: $(VENV)/.dev-installed $(FHIR_SERVER_DIR)/node_modules/.installed
	$(BIN)/ruff check cds_service tests bench fhir_examples
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check cds_service tests bench fhir_examples
	$(BIN)/ruff format --check cds_service tests bench fhir_examples

clean:
	rm -rf $(VENV) $(FHIR_SERVER_DIR)/node_modules instance dist
