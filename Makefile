# llmroute — every command installs what it needs.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test lint unit crds bench

## Run every test (lint included).
test: lint unit

## Format and clippy gates.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Rust unit, property and integration tests.
unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi

## Regenerate crds/*.yaml from the Rust types.
crds:
	$(CARGO) run --locked -q -p llmroute-api --bin crdgen -- crds

## Criterion benchmarks (numbers go in the README).
bench:
	$(CARGO) bench --locked -p llmroute-snapshot --bench compile
	$(CARGO) bench --locked -p llmroute-router --bench decision
