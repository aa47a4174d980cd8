# Two commands do everything on a fresh clone: `make run` and `make test`. Both install exactly what
# requirements.lock pins; `make lock` rewrites it from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export DJANGO_SETTINGS_MODULE ?= config.settings.local

.PHONY: run test lint lint-layers fuzz install lock preflight chromium screenshots bench bench-api bench-capture bench-workflows bench-api-path bench-bulk-update bench-retention eval-builder chaos clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Rowbell needs Python 3.11, found " + sys.version.split()[0]' \
		|| (echo "rowbell: install Python 3.11 (or run: make PYTHON=/path/to/python3.11 ...)" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)

# Every package, pip and the build backend included, at the version and with the hashes the lock gives; then the
# project itself, editable, built by the locked setuptools (no build isolation: nothing unpinned is fetched).
# Reinstall whenever the lock or pyproject.toml changes.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

install: $(VENV)/.installed

## make lock: pin pyproject.toml's dependencies (the test extra and the install group too), with hashes, in
## requirements.lock. Versions already locked stay; LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves them.
## requirements.txt is the same pins without the test extra, for platforms whose build installs it (a buildpack).
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --group pyproject.toml:install --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" --quiet -o requirements.lock $(LOCK_ARGS)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --constraints requirements.lock \
		--generate-hashes --custom-compile-command "make lock" --quiet -o requirements.txt

## make run: install, migrate, seed a demo on first run, start every process of Procfile.dev (web, worker, beat,
## sink...), then print where to look once they all answer. Warnings and errors only; VERBOSE=1 logs every
## task, beat tick and request.
VERBOSE ?=
run: export ROWBELL_LOG_LEVEL = $(if $(filter-out 0 no false,$(VERBOSE)),INFO,WARNING)
run: export ROWBELL_ACCESS_LOG = $(if $(filter-out 0 no false,$(VERBOSE)),-,/dev/null)
run: export PYTHONUNBUFFERED = 1
# Open pixels and click links point at the web port this run listens on (unless set otherwise).
run: export ROWBELL_PUBLIC_URL ?= http://127.0.0.1:$(PORT)
run: install
	@$(BIN)/python -m apps.core.preflight --listen web=$(PORT) --listen sink=8001 --listen sink-smtp=8025
	@$(BIN)/python manage.py migrate --noinput -v 0
	@$(BIN)/python manage.py seed_demo --port $(PORT) --no-banner
	@PORT=$(PORT) WEB_PORT=$(PORT) $(BIN)/honcho -f Procfile.dev start

# The browser tests drive Debian's Chromium; nothing is downloaded by Playwright.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "rowbell: installing Debian's chromium for the browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "rowbell: the browser tests need Chromium at $(CHROMIUM) (apt-get install chromium)" >&2; exit 1; }; }

## make test: install what the tests need and run the whole suite against PostgreSQL and Redis.
test: install chromium
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python -m apps.core.preflight --test
	DJANGO_SETTINGS_MODULE=config.settings.test ROWBELL_CHROMIUM=$(CHROMIUM) $(BIN)/pytest $(PYTEST_ARGS)

## make lint: the layer contract (import-linter), ruff (lint and format check), the type checker (mypy).
lint: lint-layers
	$(BIN)/ruff check apps config tests bench
	$(BIN)/ruff format --check apps config tests bench
	$(BIN)/mypy

## make lint-layers: the apps import downward only (the contract is in pyproject.toml), and no undefined name.
lint-layers: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --select F,E9 apps config tests bench

## make fuzz: the schemathesis run of `make test`, wider and with a random seed (FUZZ_EXAMPLES per operation).
FUZZ_EXAMPLES ?= 50
fuzz: install
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python -m apps.core.preflight --test
	DJANGO_SETTINGS_MODULE=config.settings.test ROWBELL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) ROWBELL_FUZZ_RANDOM=1 \
		$(BIN)/pytest -q tests/api/test_fuzz.py $(PYTEST_ARGS)

## make screenshots: the dashboard and the review queue, as the browser tests see them, into docs/screenshots/.
screenshots: install chromium
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python -m apps.core.preflight --test
	DJANGO_SETTINGS_MODULE=config.settings.test ROWBELL_SCREENSHOTS=docs/screenshots ROWBELL_CHROMIUM=$(CHROMIUM) \
		$(BIN)/pytest -q tests/browser -k "dashboard or reviewer"

## make bench-api: the trigger endpoint against a minimal Django JSON view, same server, same run.
bench-api: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) \
		|| (echo "rowbell: the benchmark needs wrk (apt-get install wrk)" >&2; exit 1)
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_api.py

## make bench-capture: customer write throughput with and without capture triggers; pick-up latency.
bench-capture: install
	@command -v pgbench >/dev/null || (echo "rowbell: the benchmark needs pgbench (PostgreSQL's client tools)" >&2; exit 1)
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_capture.py

## make bench-workflows: row change to delivered signed webhook, against a plain keep-alive POST loop.
bench-workflows: install
	@command -v pgbench >/dev/null || (echo "rowbell: the benchmark needs pgbench (PostgreSQL's client tools)" >&2; exit 1)
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_workflows.py

## make bench-api-path: trigger call to delivered signed webhook through every process, against a plain
## keep-alive POST loop, beside the database path (bench-workflows) in the same run.
bench-api-path: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) \
		|| (echo "rowbell: the benchmark needs wrk (apt-get install wrk)" >&2; exit 1)
	@command -v pgbench >/dev/null || (echo "rowbell: the benchmark needs pgbench (PostgreSQL's client tools)" >&2; exit 1)
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_api_path.py

## make bench-bulk-update: one UPDATE of 10,000 rows to 10,000 delivered signed webhooks (a run per row).
bench-bulk-update: install
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_bulk_update.py

## make bench-retention: the service database's size under sustained trigger calls, retention on and off.
bench-retention: install
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/bench_retention.py

bench: bench-api bench-capture bench-workflows bench-api-path bench-bulk-update bench-retention

## make chaos: every process killed, restarted and degraded at random under a mixed load; nothing may be lost.
chaos: install
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/chaos.py

## make eval-builder: the workflow builder over its evaluation set, against ROWBELL_AI_BASE_URL / ROWBELL_AI_MODEL.
eval-builder: install
	@$(BIN)/python -m apps.core.preflight
	$(BIN)/python bench/eval_builder.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
