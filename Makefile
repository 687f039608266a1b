# sluicegate dev loop. `make serve` and `make test` are the two commands the README gives.
PYTHON ?= python3
PORT ?= 8080
CONFIG ?= examples/sluicegate.yaml

.PHONY: install serve test lint fmt services bench

# Build the Rust extension and install the package with its test tools (idempotent).
install:
	bash scripts/build-deps.sh
	$(PYTHON) -m pip install -q -e '.[test]'

serve: install
	sluicegate serve --config $(CONFIG) --port $(PORT)

# Every check: formatting and lints, types, Rust unit tests, then the pytest suite
# (which starts real Granian servers, Redis and PostgreSQL on loopback).
test: install services
	ruff format --check python tests loadtests
	ruff check python tests loadtests
	mypy
	$(PYTHON) -m mypy.stubtest sluicegate._native
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --quiet
	$(PYTHON) -m pytest -q

fmt:
	ruff format python tests loadtests
	ruff check --fix python tests loadtests
	cargo fmt

# Redis and PostgreSQL servers for the tests (Debian packages; installed when missing).
services:
	bash scripts/services.sh

bench: install
	bash scripts/bench-deps.sh
	$(PYTHON) loadtests/bench.py
