# Portcullis: every target creates .venv and installs what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit bench clean nginx

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $(VENV)/.installed $(VENV)/.installed-test $@

## make run: the gateway on examples/quickstart.yaml in front of the bundled demo backend.
run: $(VENV)/.installed
	$(BIN)/python -m portcullis.demo.run

## make test: lint, types, import layers, then the whole suite (nginx is a real upstream in some tests).
test: $(VENV)/.installed-test nginx
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src bench
	$(BIN)/lint-imports
	$(BIN)/pytest -q --durations=10

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy src bench

## make bench: nginx + wrk from Debian if missing, then every setup under load; writes bench/results/latest.{json,md}.
bench: $(VENV)/.installed-bench
	command -v nginx >/dev/null && command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk)
	$(BIN)/python -m bench.run

# Debian's nginx, for the upstream-client tests and the benchmark; never started as a service.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
