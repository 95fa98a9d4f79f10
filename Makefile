# Everything a fresh clone needs goes through these targets; nothing is installed by hand.
# `make setup` is idempotent: each step reruns only when its inputs change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
STAMPS := $(VENV)/.stamps

CODEC_SOURCES := $(wildcard native/lakehouse_codec/src/*.rs) native/lakehouse_codec/Cargo.toml native/lakehouse_codec/pyproject.toml
JVM_INPUTS := $(wildcard local_stack/maven/*/pom.xml) local_stack/java/MongoStandIn.java local_stack/fetch.py

.PHONY: setup lint test bench stack-up stack-down stack-status clean

HELM_VERSION := v3.22.0
HELM := $(CACHE)/bin/helm
# Prometheus 3.16's promtool (its Go module is tagged v0.316.0, like the prom/prometheus:v3.16.0
# image of docker-compose.yml): tests/deploy checks the alerts and the dashboard's queries with it.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := $(CACHE)/bin/promtool
# Debian's Chromium: the demo's report screenshot and its headless-browser test.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# SeaweedFS, the local stack's S3-compatible object store (local_stack/object_store.py). Its
# releases are not semver tags, so the module proxy serves it by pseudo-version (the commit).
WEED_VERSION := v0.0.0-20261109003541-7506e5f91cd6
WEED := $(CACHE)/bin/weed
WEED_STAMP := $(CACHE)/bin/.weed-$(WEED_VERSION)

setup: $(STAMPS)/jvm $(HELM) $(PROMTOOL) $(CHROMIUM) $(WEED_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The native codec first: the project's own dependencies name it.
$(STAMPS)/codec: $(BIN)/python $(CODEC_SOURCES)
	@mkdir -p $(STAMPS)
	$(BIN)/pip install --disable-pip-version-check -q maturin==1.16.0
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pip install --disable-pip-version-check -q --no-build-isolation ./native/lakehouse_codec
	@touch $@

$(STAMPS)/python: $(STAMPS)/codec pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

$(STAMPS)/jvm: $(STAMPS)/python $(JVM_INPUTS)
	$(BIN)/python -m local_stack.fetch
	@touch $@

# Helm from source through the Go module proxy (no binary downloads), cached in .cache/bin.
$(HELM):
	GOBIN=$(abspath $(CACHE)/bin) GOFLAGS=-buildvcs=false go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# remove_all_sd leaves out the service-discovery plugins (cloud SDKs, client-go): less than
# half the compile time; the compose configuration uses static targets only.
$(PROMTOOL):
	GOBIN=$(abspath $(CACHE)/bin) GOFLAGS=-buildvcs=false go install -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

# From Debian's packages when missing (the CI machine starts without it). Another apt run
# (a second checkout's setup, unattended upgrades) may hold apt's locks: wait for them.
$(CHROMIUM):
	for attempt in $$(seq 30); do $(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -q && break; sleep 10; done
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium

# SeaweedFS from source through the Go module proxy. Its go.mod has a replace directive, which
# `go install pkg@version` refuses, so the module is downloaded and built as the main module.
$(WEED_STAMP):
	@mkdir -p $(CACHE)/bin
	@rm -f $(CACHE)/bin/.weed-*
	cd "$$(go mod download -json github.com/seaweedfs/seaweedfs@$(WEED_VERSION) | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
	  && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o $(abspath $(WEED)) ./weed
	@touch $@

# The code-health gate, before the (slow) suite: ruff's lint rules and formatting, then mypy over
# the packages (all configured in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers (pytest-xdist): whole files each, the files of one expensive session fixture together,
# the longest scopes first (tests/conftest.py); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: setup lint
	@mkdir -p build/test-results
	$(BIN)/pytest --junitxml=build/test-results/junit.xml -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# Benchmarks; results in build/bench/. BENCH="cdc bronze" runs a subset.
bench: setup
	$(BIN)/python -m bench.run $(BENCH)

stack-up: setup
	$(BIN)/lakehouse-stack up $(ARGS)

stack-down:
	$(BIN)/lakehouse-stack down

stack-status:
	$(BIN)/lakehouse-stack status

# The demo (docs/runbook.md): the whole pipeline on this machine, a summary, then everything
# stopped. DEMO_* variables (or ARGS="--duration 300") tune it; MONGO_URI uses a real replica set.
.PHONY: demo demo-live chaos
demo: setup
	$(BIN)/lakehouse-demo $(ARGS)

demo-live: setup
	$(BIN)/lakehouse-demo --keep-running $(ARGS)

# The chaos harness (docs/chaos.md): the workload under SIGKILLs of both services and the
# broker and broker pauses, 50 cycles per delivery mode, then proof that bronze holds every
# write exactly once and bronze and silver equal MongoDB; build/chaos/result.json.
# CHAOS_* variables (or ARGS="--cycles 10 --seed 7") tune it.
chaos: setup
	$(BIN)/lakehouse-chaos $(ARGS)

clean:
	rm -rf build $(CACHE) $(VENV)
