# llmroute — every command installs what it needs.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
export LLMROUTE_BIN_DIR := $(abspath $(TARGET_DIR))/debug
VENV := .venv

.PHONY: test lint unit crds bench

## Run every test (lint included).
test: lint unit via-operator compat chart

## Format and clippy gates.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Rust unit, property and integration tests.
unit: bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi

## The sidecar's end-to-end suite again, every sidecar fed over gRPC by an operator.
SIDECAR_SUITES := sidecar_routing sidecar_resources sidecar_bad_input sidecar_admin sidecar_hostile sidecar_tls sidecar_config prefix_affinity
.PHONY: via-operator
via-operator: bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		LLMROUTE_E2E_VIA_OPERATOR=1 $(CARGO) nextest run --locked -p llmroute-e2e $(SIDECAR_SUITES:%=--test %) --no-fail-fast; \
	else \
		LLMROUTE_E2E_VIA_OPERATOR=1 $(CARGO) test --locked -p llmroute-e2e $(SIDECAR_SUITES:%=--test %) --no-fail-fast; \
	fi

## Regenerate crds/*.yaml from the Rust types.
crds:
	$(CARGO) run --locked -q -p llmroute-api --bin crdgen -- crds
	cp crds/*.yaml charts/llmroute/files/crds/
	cp deploy/grafana/llmroute-dashboard.json charts/llmroute/files/dashboards/

## Benchmarks (numbers go in the README): criterion for compile and routing, then the proxy hop
## against nginx with wrk (both installed from apt when missing).
bench: bench-criterion bench-proxy bench-fleet

.PHONY: bench-criterion bench-proxy bench-tools
bench-criterion:
	$(CARGO) bench --locked -p llmroute-snapshot --bench compile
	$(CARGO) bench --locked -p llmroute-router --bench decision
	$(CARGO) bench --locked -p llmroute-operator --bench status
	$(CARGO) bench --locked -p llmroute-sidecar --bench trace
	$(CARGO) bench --locked -p llmroute-sidecar --bench prefix

## Propagation to 1,000 and 10,000 subscribed streams (operator release build, its own process).
.PHONY: bench-fleet
bench-fleet:
	$(CARGO) build --locked --release -p llmroute-operator
	LLMROUTE_RELEASE_DIR=$(abspath $(TARGET_DIR))/release $(CARGO) bench --locked -p llmroute-operator --bench propagation

bench-tools:
	@command -v nginx >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq nginx-light wrk; }

bench-proxy: bench-tools $(VENV)/.installed
	$(CARGO) build --locked --release -p llmroute-sidecar -p llmroute-testkit --bin llmroute-sidecar --bin otlp-sink
	LLMROUTE_RELEASE_DIR=$(abspath $(TARGET_DIR))/release $(VENV)/bin/python bench/proxy_bench.py

# --- Python side (official openai client) --------------------------------------------------

$(VENV)/.installed: python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r python/requirements.txt
	touch $@

.PHONY: bins compat
bins:
	$(CARGO) build --locked --workspace --bins

## The Helm chart (real Helm through helm-python-sdk: render, lint, kubernetes-validate, RBAC),
## the CRDs' printer columns through kubectl's JSONPath engine, and the deploy/ examples.
.PHONY: chart
chart: $(VENV)/.installed
	cd python/chart_tests && ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider .

## The openai-package compatibility suite against the real sidecar.
compat: $(VENV)/.installed bins
	$(VENV)/bin/python -m pytest -q python/tests

## The main job on the example resources: fake upstreams + a standalone sidecar, no cluster.
.PHONY: demo
demo: $(VENV)/.installed bins
	cd python && ../$(VENV)/bin/python demo.py
