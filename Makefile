# Portcullis: every target creates .venv and installs exactly what uv.lock says; nothing is installed by hand.
#
# How installs stay reproducible: pip installs one tool, uv, into .tools from tools.lock (its version
# and hashes); uv then makes .venv match uv.lock exactly (hashes checked, extra packages removed).
# `--locked` refuses to run when pyproject.toml and uv.lock disagree: `make lock` re-resolves after
# an edit of pyproject.toml, `make lock-upgrade` moves every dependency to its newest compatible release.
PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
TOOLS      := .tools
UV         := $(TOOLS)/bin/uv
UV_VERSION := 0.13.8
SYNC       := $(UV) sync --locked --quiet --python $(PYTHON)
PEERS_VENV := .venv-peers
PEERS_LOCK := bench/peers/requirements.txt

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS    := never
export UV_NO_PROGRESS         := 1

.PHONY: run test lint typecheck bench bench-hostile bench-peers peers-lock lock lock-upgrade tools-lock test-tools clean

$(UV): tools.lock
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --require-hashes --no-deps -r tools.lock
	touch $@

## make run: the gateway on embedded defaults in front of the bundled demo backend.
run: $(UV)
	$(SYNC)
	$(BIN)/python -m portcullis.demo.run

## make test: lint, types, import layers, then the whole suite (nginx is a real upstream, wrk drives the soak,
## promtool checks the alert rules).
test: $(UV) test-tools
	$(SYNC) --extra test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src bench
	$(BIN)/lint-imports
	$(BIN)/pytest -q --durations=10

lint: $(UV)
	$(SYNC) --extra test
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(UV)
	$(SYNC) --extra test
	$(BIN)/mypy src bench

## make bench: nginx + wrk from Debian if missing, then every setup under load; writes bench/results/latest.{json,md}.
bench: $(UV) test-tools
	$(SYNC) --extra test --extra bench
	$(BIN)/python -m bench.run

## make bench-hostile: each attack on the front door in turn against the full setup; writes bench/results/hostile.{json,md}.
bench-hostile: $(UV) test-tools
	$(SYNC) --extra test --extra bench
	$(BIN)/python -m bench.hostile_suite

## make bench-peers: the egress door against LiteLLM's proxy on the same upstream, same run; LiteLLM lives in its
## own virtualenv ($(PEERS_VENV)), made to match $(PEERS_LOCK) exactly (hashes checked). Writes bench/results/peers.{json,md}.
bench-peers: $(UV) test-tools $(PEERS_VENV)/bin/litellm
	$(SYNC) --extra test --extra bench
	$(BIN)/python -m bench.run_peers

$(PEERS_VENV)/bin/litellm: $(UV) $(PEERS_LOCK)
	[ -x $(PEERS_VENV)/bin/python ] || $(UV) venv --quiet --python $(PYTHON) $(PEERS_VENV)
	$(UV) pip sync --quiet --python $(PEERS_VENV)/bin/python --require-hashes $(PEERS_LOCK)
	touch $@

## make peers-lock: re-resolve $(PEERS_LOCK) from bench/peers/requirements.in (with hashes).
peers-lock: $(UV)
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		bench/peers/requirements.in -o $(PEERS_LOCK)

## make lock: re-resolve uv.lock after pyproject.toml changed (keeps every pin that still fits).
lock: $(UV)
	$(UV) lock --python $(PYTHON)

## make lock-upgrade: every dependency to its newest release within pyproject.toml's ranges.
lock-upgrade: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

tools-lock: $(UV)
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --generate-hashes --universal --no-header -q - -o tools.lock.new
	{ head -n 2 tools.lock; grep -v '^ *# via' tools.lock.new; } > tools.lock.tmp && mv tools.lock.tmp tools.lock && rm tools.lock.new

# Debian's nginx (a real upstream in tests, never started as a service), wrk (load for the soak and the
# bench) and promtool (checks and unit-tests deploy/prometheus/alerts.yml). promtool comes in Debian's
# prometheus package; --no-install-recommends keeps its exporters out, and the server it ships is never
# started (policy-rc.d in containers, and nothing here starts it). The OpenID provider the OIDC tests run
# against (panva's oidc-provider) and undici (Node's fetch through the proxy door) come from npm, installed
# from tests/oidc_provider/ and tests/proxy_clients/package-lock.json, and only when node_modules is older
# than the lock (Node and npm from Debian where the machine has none).
test-tools:
	@command -v npm >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm)
	@[ tests/oidc_provider/node_modules/.package-lock.json -nt tests/oidc_provider/package-lock.json ] || \
		(cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error)
	@[ tests/proxy_clients/node_modules/.package-lock.json -nt tests/proxy_clients/package-lock.json ] || \
		(cd tests/proxy_clients && npm ci --no-audit --no-fund --loglevel=error)
	@{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk)
	@command -v promtool >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	@command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(TOOLS) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
