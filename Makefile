# Amai developer entry points. `make help` lists the targets.
#
# Every target that needs NATS runs scripts/ensure-deps.sh first, which installs
# nats-server (>= 2.10) when it is missing (or says exactly what to install).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Share one build directory between the working tree and CI clones.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/amai/target

CARGO      ?= cargo
ENSURE     := scripts/ensure-deps.sh
AMAI_BIN   := $(CARGO_TARGET_DIR)/release/amai
DATA_DIR   ?= ./data
BENCH_ARGS ?=
TEST_ARGS  ?=

# Resolves nats-server (installing it if needed) and exports its path, so tests and
# `amai up` find it even when /usr/sbin is not on PATH.
WITH_NATS = AMAI_NATS_SERVER="$$($(ENSURE) --print-nats-server)"; export AMAI_NATS_SERVER;

.PHONY: help up test bench build fmt lint clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-8s %s\n", $$1, $$2 }'

up: ## Run everything in one process (local nats-server under ./data); Ctrl-C stops it
	@$(WITH_NATS) \
	$(CARGO) build --release --bin amai; \
	exec $(AMAI_BIN) up --data-dir $(DATA_DIR)

test: ## Unit + integration + end-to-end tests against a real nats-server, Docker Engine and the Python SDKs
	@$(WITH_NATS) \
	$(ENSURE) docker jail-images browser; \
	AMAI_PYTHON="$$($(ENSURE) --print-python)"; export AMAI_PYTHON; \
	echo "make: using nats-server $$AMAI_NATS_SERVER ($$("$$AMAI_NATS_SERVER" --version))" >&2; \
	$(CARGO) test --workspace $(TEST_ARGS)

bench: ## Build release and run `amai bench $(BENCH_ARGS)`
	@$(WITH_NATS) \
	$(CARGO) build --release --bin amai; \
	$(AMAI_BIN) bench $(BENCH_ARGS)

build: ## Build the workspace (debug) and the release binary
	$(CARGO) build --workspace --all-targets
	$(CARGO) build --release --bin amai

fmt: ## Format all code
	$(CARGO) fmt --all

lint: ## Check formatting and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean: ## Remove build artefacts (keeps $(DATA_DIR): it holds the dev trust root)
	$(CARGO) clean
