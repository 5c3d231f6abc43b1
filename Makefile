# One command to run the daemon, one to run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
VENV_PB7 ?= .venv-protobuf7
VENV_EXAMPLES ?= .venv-examples
EXAMPLE_PROMPT := examples/stigmer-kind-prompt
EXAMPLE_PUBLISHED := examples/stigmer-published-api
EXAMPLE_MCP := examples/stigmer-kind-mcpserver
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHECK_WORKERS ?= auto

.PHONY: setup serve test check check-fast lint check-proto test-examples test-protobuf7 proto bench bench-cli clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

## setup: create .venv with the package, its plugins and the dev tools
setup: $(STAMP)

## serve: run the daemon on 127.0.0.1:50051 with its LMDB store in ~/.stigmer/data
serve: $(STAMP)
	$(BIN)/stigmer serve

## test: generated-code drift check, lint, types, tests on protobuf 6, the example packages, then protobuf 7;
## both runs of the main suite are spread over every core (in one process they took 41 minutes of
## CI's 90 on two fast cores, and `make check` took twice as long on slower ones) and name their
## slowest tests
test: check-proto lint
	$(BIN)/python -m pytest -n $(CHECK_WORKERS) --durations=15
	$(MAKE) --no-print-directory test-examples
	$(MAKE) --no-print-directory test-protobuf7

## check: drift check, lint, types, then the main suite spread over every core with pytest-xdist
## (protobuf 6 only; no example venvs). `make test` stays what CI runs.
check: check-proto lint
	$(BIN)/python -m pytest -q -n $(CHECK_WORKERS) -p no:cacheprovider

## check-fast: the loop while developing (about 4 minutes on two cores): as `check`, on LMDB only,
## without the CLI's suite (each test runs `stigmer` processes) and the bench's smoke runs
check-fast: check-proto lint
	STIGMER_TEST_ENGINES=lmdb $(BIN)/python -m pytest -q -n $(CHECK_WORKERS) -p no:cacheprovider \
		--ignore=tests/cli --deselect tests/test_bench_smoke.py --deselect tests/test_bench_postgres_smoke.py

check-proto: $(STAMP)
	$(BIN)/python -m stigmer_core.protogen --check
	$(BIN)/python -m stigmer_core.protogen --proto-path $(EXAMPLE_PROMPT)/proto --out $(EXAMPLE_PROMPT) --check
	$(BIN)/python -m stigmer_core.protogen --proto-path $(EXAMPLE_MCP)/proto --out $(EXAMPLE_MCP) --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## test-examples: the example kind packages, installed from examples/ into a venv of their own
## (stigmer-apis pins protobuf 6 and installs its own copies of google/protobuf/*_pb2.py)
test-examples:
	$(PYTHON) -m venv $(VENV_EXAMPLES)
	$(VENV_EXAMPLES)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_EXAMPLES)/bin/python -m pip install --quiet -e ".[dev]" -e "./$(EXAMPLE_PROMPT)[test]" -e "./$(EXAMPLE_PUBLISHED)[test]" -e "./$(EXAMPLE_MCP)[test]"
	$(VENV_EXAMPLES)/bin/python -c "import google.protobuf as p; assert p.__version__.startswith('6.'), p.__version__"
	cd $(EXAMPLE_PROMPT) && $(abspath $(VENV_EXAMPLES))/bin/mypy
	cd $(EXAMPLE_PUBLISHED) && $(abspath $(VENV_EXAMPLES))/bin/mypy
	cd $(EXAMPLE_MCP) && $(abspath $(VENV_EXAMPLES))/bin/mypy
	$(VENV_EXAMPLES)/bin/python -m pytest -q $(EXAMPLE_PROMPT)/tests
	$(VENV_EXAMPLES)/bin/python -m pytest -q $(EXAMPLE_PUBLISHED)/tests
	$(VENV_EXAMPLES)/bin/python -m pytest -q $(EXAMPLE_MCP)/tests
	$(VENV_EXAMPLES)/bin/python -m pytest -q tests/test_third_party_registry.py tests/test_plugin_guide.py

## test-protobuf7: the same suite on the newest protobuf 7 runtime (generated code targets both),
## over LMDB only: the store engines see bytes, so PostgreSQL adds nothing the first pass did not test
test-protobuf7:
	$(PYTHON) -m venv $(VENV_PB7)
	$(VENV_PB7)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_PB7)/bin/python -m pip install --quiet -e ".[test]" "protobuf>=7.35,<8"
	$(VENV_PB7)/bin/python -c "import google.protobuf as p; print(\"protobuf runtime\", p.__version__)"
	STIGMER_TEST_ENGINES=lmdb $(VENV_PB7)/bin/python -m pytest -q -n $(CHECK_WORKERS) --durations=10

## proto: regenerate stigmer_core/api from proto/
proto: $(STAMP)
	$(BIN)/python -m stigmer_core.protogen

## bench: print throughput and latency figures with ratios to a bare grpcio baseline
bench: $(STAMP)
	$(BIN)/python -m bench

## bench-cli: how fast the `stigmer` command starts (medians of 5 cold runs per command)
bench-cli: $(STAMP)
	$(BIN)/python -m bench.cli_startup

clean:
	rm -rf $(VENV) $(VENV_PB7) $(VENV_EXAMPLES) .pytest_cache .mypy_cache .ruff_cache .hypothesis
