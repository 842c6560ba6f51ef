# Two commands: `make run` serves the service, `make test` runs the whole suite.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
FHIR_SERVER_DIR := tests/fhir_server

.PHONY: run test lint bench bench-instructions mutate fuzz soak scale-test fhir-server clean

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

# `knee-cds serve` (cds_service/cli.py) is the one definition: gunicorn with gunicorn.conf.py (as the benchmark runs it)
# and the development settings: the card preview page at /preview; a fhirServer may be a local FHIR server over http
# (production allows https and public addresses only); any of these set in the environment wins. KNEE_CDS_HOST=...
# changes the address.
run: $(VENV)/.run-installed
	$(BIN)/knee-cds serve --port $(PORT)

test: $(VENV)/.dev-installed $(FHIR_SERVER_DIR)/node_modules/.installed
	$(BIN)/ruff check cds_service tests bench fhir_examples tools gunicorn.conf.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed targets live here, not in the tests: service vs a bare Flask app under gunicorn (wrk, server CPU per
# request), then in-process latency by chart size. Needs wrk (apt-get install wrk); about a minute.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench

# The same service-vs-bare comparison counted in machine instructions under valgrind (apt-get install valgrind):
# the same figure on every run, whatever else the machine does. About half a minute.
bench-instructions: $(VENV)/.dev-installed
	$(BIN)/python -m bench.instructions

# Mutation check: each named mutation of tools/mutations.py on a scratch copy of the tree must be killed by
# its tests. About 3 minutes; not part of `make test` or CI.
mutate: $(VENV)/.dev-installed
	$(BIN)/python -m tools.mutate

# The schemathesis fuzz of GET /openapi.json's operations with 5,000 cases (make test runs 300); about 3 minutes.
fuzz: $(VENV)/.dev-installed
	KNEE_CDS_FUZZ_CASES=5000 $(BIN)/python -m pytest tests/test_fuzz.py -q

# Load-and-kill run of the real server (gunicorn.conf.py) on SQLite and PostgreSQL: mixed traffic from 6 clients,
# kill -9 of one worker at 1/3 and of the whole server at 2/3 (then restarted on the same port and database); every
# acknowledged feedback item must be stored exactly once, and no answer may be a 5xx. About 3.5 minutes (90 s per
# database); not part of `make test`. Shorter: make soak SOAK_ARGS="--seconds 30 --database sqlite".
soak: $(VENV)/.run-installed
	$(BIN)/python -m tools.soak $(SOAK_ARGS)

# The production layout of deploy/ (nginx.conf, knee-cds.service, knee-cds.env.example) on this machine: two instances
# on a fresh PostgreSQL database behind nginx (TLS, JWT on every call), hook and feedback traffic from 4 clients for 60 s,
# one instance killed with SIGKILL mid-call at 1/3 and restarted at 1/2. Needs PostgreSQL on 127.0.0.1:5432 and
# Debian's nginx (installed when missing and root). About 70 s; not part of `make test`. Shorter: SCALE_ARGS="--seconds 30".
scale-test: $(VENV)/.run-installed
	$(BIN)/python -m tools.scale_test $(SCALE_ARGS)

# The test FHIR server (Medplum's router) on http://127.0.0.1:8103 with every sample loaded as of today, for the
# CDS Hooks Sandbox and `make run` (README: "Pointing an EHR or the CDS Hooks Sandbox at it"). Ctrl-C stops it.
fhir-server: $(VENV)/.run-installed $(FHIR_SERVER_DIR)/node_modules/.installed
	$(BIN)/python -m tools.fhir_server --port $${FHIR_PORT:-8103}

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check cds_service tests bench fhir_examples tools gunicorn.conf.py
	$(BIN)/ruff format --check cds_service tests bench fhir_examples

clean:
	rm -rf $(VENV) $(FHIR_SERVER_DIR)/node_modules instance dist
