# Lyceum: `make run` starts everything on this machine; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lock run run-full trace-demo migrate test test-unit test-component test-e2e schemathesis lint format typecheck migration validate-deploy bench-courses bench-webhooks bench-gateway bench-hotpaths bench-chat bench-documents clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@echo "==> creating $(VENV) and installing Lyceum with its dev tools, at the versions of constraints.txt"
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install everything, at the versions of constraints.txt

lock: $(STAMP) ## Resolve every dependency again at its newest allowed version into constraints.txt
	@$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal --upgrade \
		--custom-compile-command "make lock" --output-file constraints.txt
	@$(MAKE) --no-print-directory install

run: $(STAMP) ## Migrate, then start every service in one process (SQLite, in-process bus); gateway on GATEWAY_PORT (8000)
	@$(BIN)/python -m launcher embedded

run-full: $(STAMP) ## Migrate, then start one process per service on PostgreSQL, Redis and RabbitMQ (localhost)
	@$(BIN)/python -m launcher full

trace-demo: $(STAMP) ## One registration's trace as a tree, from a run-full started with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
	@$(BIN)/python -m launcher.trace_demo

migrate: $(STAMP) ## Upgrade every service's database (SQLite under var/; MODE=full: the PostgreSQL ones)
	@$(BIN)/python -m launcher migrate $(or $(MODE),embedded)

test: $(STAMP) ## Unit tests, component tests, then the end-to-end suite in both modes
	@$(BIN)/pytest -v -ra --durations=10

test-unit: $(STAMP) ## Unit tests only
	@$(BIN)/pytest -ra tests/unit

test-component: $(STAMP) ## Component tests only (the gateway in front of a stub upstream)
	@$(BIN)/pytest -ra tests/component

test-e2e: $(STAMP) ## End-to-end tests only: the real stack (embedded and full stack)
	@$(BIN)/pytest -ra tests/e2e

schemathesis: $(STAMP) ## Schemathesis, every check, over the gateway's OpenAPI as student and admin (part of make test)
	@$(BIN)/pytest -ra tests/e2e/test_openapi_schemathesis.py

lint: $(STAMP) ## ruff (lint and format check) and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy shared gateway services launcher deploy tests bench

format: $(STAMP) ## Apply ruff's fixes and formatting
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

typecheck: $(STAMP)
	@$(BIN)/mypy shared gateway services launcher deploy tests bench

migration: $(STAMP) ## New migration: make migration SERVICE=users MESSAGE="add avatar"
	@test -n "$(SERVICE)" -a -n "$(MESSAGE)" || (echo 'usage: make migration SERVICE=name MESSAGE="what changed"'; exit 2)
	@$(BIN)/python -c 'import sys; from pathlib import Path; from shared.migrations import new_revision; new_revision(Path("services/$(SERVICE)/migrations"), sys.argv[1])' "$(MESSAGE)"
	@$(BIN)/ruff format --quiet services/$(SERVICE)/migrations/versions

validate-deploy: $(STAMP) ## Validate Dockerfile, docker-compose.yml, the Kustomize base and overlays (with the operators' CRD schemas) offline
	@bash deploy/validate.sh $(VENV)

bench-courses: $(STAMP) ## Catalogue list p50/p99 at 1k and 100k courses, SQLite and PostgreSQL
	@$(BIN)/python -m bench.bench_courses

bench-webhooks: $(STAMP) ## Webhooks end to end: events/s, p50/p99 for 1, 10, 100 endpoints and one that never answers
	@$(BIN)/python -m bench.bench_webhooks

bench-gateway: $(STAMP) ## Gateway cost: req/s, p50/p99 direct vs gateway vs nginx, gateway peak memory
	@$(BIN)/python -m bench.bench_gateway

bench-hotpaths: $(STAMP) ## Hot paths: req/s, p50/p99 at concurrency 1 and 32, minimal FastAPI app vs services direct vs gateway vs nginx (PROFILE=1: py-spy profiles)
	@$(BIN)/python -m bench.bench_hotpaths

bench-chat: $(STAMP) ## Chat: time to first token and total, stub vs chat vs gateway, SSE and WebSocket, 1 and 200 streams
	@$(BIN)/python -m bench.bench_chat

bench-documents: $(STAMP) ## Documents: 100 MB upload MB/s direct and via gateway vs a disk copy, service memory; search p50/p99 at 1k and 10k documents, SQLite and PostgreSQL
	@$(BIN)/python -m bench.bench_documents

clean: ## Remove local data (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
