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
# (which starts real gateways under the default server, the native front, and Redis and
# PostgreSQL on loopback), then the end-to-end modules that exercise the HTTP layer once more
# under Granian (--server granian, what --http 2 runs on).
GRANIAN_E2E = tests/test_gateway_anthropic.py tests/test_chat_passthrough.py \
	tests/test_chat_translate.py tests/test_translate_anthropic_sdk.py tests/test_bad_input_fuzz.py \
	tests/test_routing_failover.py tests/test_routing_timeouts.py tests/test_lifecycle.py \
	tests/test_body_limit.py tests/test_body_release.py tests/test_streams_in_flight.py \
	tests/test_perf_smoke.py tests/test_request_id.py tests/test_access_log.py \
	tests/test_claude_cli_gateway.py tests/test_upstream_pool.py

test: install services
	ruff format --check python tests loadtests
	ruff check python tests loadtests
	mypy
	$(PYTHON) -m mypy.stubtest sluicegate._native
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --quiet
	cargo fmt --check --manifest-path loadtests/native/Cargo.toml
	cargo clippy --manifest-path loadtests/native/Cargo.toml --all-targets -- -D warnings
	cargo test --quiet --manifest-path loadtests/native/Cargo.toml
	$(PYTHON) -m pytest -q
	SLUICEGATE_SERVER=granian $(PYTHON) -m pytest -q $(GRANIAN_E2E)

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
