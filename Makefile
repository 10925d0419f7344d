# Two commands on a fresh machine with rustup, Node 20 and python3 (venv): `make dev` and `make test`.
# Every target installs what it needs first (idempotent, quick when already there).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

WORKER_BUILD_VERSION := 0.8.7
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
TEST_CONFIG := tests/fixtures/litellm_config.yaml

# worker-build would download these three tools; point it at local ones instead.
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/.bin/esbuild
export WRANGLER_SEND_METRICS := false

# worker-build's own wasm-opt step is off (Cargo.toml, package.metadata.wasm-pack): it always
# adds --debuginfo, which keeps the names section (about 58 KB of the gzipped module). We run
# wasm-opt on the output instead, with the feature set worker-build enables (workerd supports
# these; no newer encodings). --one-caller-inline-max-function-size: binaryen by default inlines
# every function that has one caller, which here shrinks the raw module a little but grows the
# gzipped one by about 28 KB; small ones only. --low-memory-unused lets binaryen fold a
# pointer's added constant into the load's offset (about 0.7 KB gzipped): sound when no address
# below 1024 is ever used, and Rust lays the 1 MB stack first, growing down to 0, so those are
# its last KB (a stack that deep is overflowing anyway). WASM_NAMES=1 keeps the names (readable
# wasm stack traces, twiggy), at that size.
WASM_OPT_FLAGS := -O --one-caller-inline-max-function-size=10 --low-memory-unused \
	--enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int --enable-bulk-memory \
	--enable-multivalue --enable-reference-types --enable-exception-handling \
	$(if $(WASM_NAMES),--debuginfo)
# $(call worker-build,ENV,OUT_DIR,CARGO_ARGS): the release worker into OUT_DIR, built with the
# environment ENV (GATEWAY_CONFIG=...), its default export made a plain object
# (tools/plain_entry.mjs). Its index.js is dated to the build's start, so that a
# source saved during the build is newer and rebuilds next time.
define worker-build
start=$$(date +%s.%N) && $(1) worker-build --release --out-dir $(2) $(3) \
	&& $(WASM_OPT_BIN) $(2)/index_bg.wasm -o $(2)/index_bg.opt.wasm $(WASM_OPT_FLAGS) \
	&& mv $(2)/index_bg.opt.wasm $(2)/index_bg.wasm && node tools/plain_entry.mjs $(2) \
	&& touch -d @$$start $(2)/index.js
@ls -l $(2)/index_bg.wasm | awk '{printf "$(2)/index_bg.wasm: %d bytes", $$5}'; \
	gzip -9c $(2)/index_bg.wasm | wc -c | awk '{printf ", %d gzipped\n", $$1}'
endef
export PATH := $(CARGO_BIN):$(PATH)

.PHONY: help tools assets build build-test FORCE build-baseline dev test test-rust test-e2e test-ui chromium test-clients test-agents check-deploy bench soak profile profile-runtime lint clean

help:
	@echo "make dev     start the gateway on :4000 (fake Databricks unless DATABRICKS_API_BASE is set)"
	@echo "make test    unit tests, lint, end-to-end tests under workerd, the admin page in chromium, deploy dry run"
	@echo "make bench   load the fake directly, through a trivial worker and through the gateway; print a table, write build-test/bench.json"
	@echo "make soak    minutes of mixed load with faults and a restart; check every key's ledger (SOAK_SECONDS=180)"
	@echo "make profile instructions per request of each pure step (valgrind's callgrind; native timings without it)"
	@echo "make profile-runtime  workerd CPU per request on each path (PROFILE_DIRS=a,b compares builds; PROFILE_CPU=1 adds a V8 profile)"

tools: node_modules/.package-lock.json
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@cargo install --list | grep -qx "worker-build v$(WORKER_BUILD_VERSION):" \
		|| cargo install worker-build --version $(WORKER_BUILD_VERSION) --locked
	@cargo install --list | grep -qx "wasm-bindgen-cli v$(WASM_BINDGEN_VERSION):" \
		|| cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The worker's static assets (wrangler.toml [assets]): the cl100k decode table for embeddings
# sent as token ids, generated from the pinned npm js-tiktoken, never built into the wasm.
ASSETS_DIR := build-assets
# The admin page (/ui): plain files from ui/, copied as they are (no bundler, nothing from npm),
# and its headers (ui/_headers, which the assets read from the directory's root).
UI_ASSETS := $(patsubst ui/%,$(ASSETS_DIR)/ui/%,$(wildcard ui/*.html ui/*.js ui/*.css)) $(ASSETS_DIR)/_headers
assets: $(ASSETS_DIR)/cl100k_base.tokens $(UI_ASSETS)

$(ASSETS_DIR)/ui/%: ui/%
	@mkdir -p $(@D) && cp $< $@

$(ASSETS_DIR)/_headers: ui/_headers
	@mkdir -p $(@D) && cp $< $@

$(ASSETS_DIR)/cl100k_base.tokens: tools/cl100k_table.mjs node_modules/.package-lock.json
	node tools/cl100k_table.mjs $(ASSETS_DIR)

# A worker build reads these besides its config. `build/` and `build-test/` are remade when one
# of them, the config or the build's settings changed, and only then: worker-build and wasm-opt
# take a minute or more even when cargo has nothing to do, so a warm `make test` would otherwise
# spend minutes rebuilding what it has.
WORKER_INPUTS := $(shell find src -name '*.rs') build.rs Cargo.toml Cargo.lock node_modules/.package-lock.json \
	tools/plain_entry.mjs

# What a build is made with besides its input files: the config's path, the worker-build pin and
# the wasm-opt flags (WASM_NAMES). $(call record,TEXT) writes TEXT to the target only when it
# differs from what the file holds, so the file is newer than the build exactly when one changed.
record = @mkdir -p $(@D); [ "$$(cat $@ 2>/dev/null)" = '$(1)' ] || echo '$(1)' > $@
BUILD_SETTINGS = worker-build $(WORKER_BUILD_VERSION); wasm-opt $(strip $(WASM_OPT_FLAGS))

# The worker with the shipped config (what `wrangler dev` and `wrangler deploy` run).
SHIPPED_CONFIG := $(or $(GATEWAY_CONFIG),config/litellm_config.yaml)
build: build/index.js assets

build/index.js: $(WORKER_INPUTS) $(SHIPPED_CONFIG) build/.settings | tools
	$(call worker-build,GATEWAY_CONFIG=$(SHIPPED_CONFIG),build)

build/.settings: FORCE
	$(call record,config $(SHIPPED_CONFIG); $(BUILD_SETTINGS))

# The worker with the test config, for the end-to-end tests, the client and agent tests and the
# benchmark. It also embeds these configs (feature test-configs; never in `build`), each of which
# a test selects by its file stem with the worker var GATEWAY_TEST_CONFIG
# (tests/support/gateway.mjs): one per routing strategy that learns from traffic, one for router
# settings that would change every other test, one without a master key. One release build
# serves every end-to-end test, where each config had its own.
TEST_EXTRA_CONFIGS := tests/fixtures/least_busy.yaml tests/fixtures/latency.yaml tests/fixtures/router.yaml \
	tests/fixtures/no_master.yaml
build-test: build-test/index.js assets

build-test/index.js: $(WORKER_INPUTS) $(TEST_CONFIG) $(TEST_EXTRA_CONFIGS) build-test/.settings | tools
	$(call worker-build,GATEWAY_CONFIG=$(TEST_CONFIG) GATEWAY_TEST_CONFIGS='$(TEST_EXTRA_CONFIGS)',build-test,--features test-configs)

build-test/.settings: FORCE
	$(call record,config $(TEST_CONFIG) $(TEST_EXTRA_CONFIGS); $(BUILD_SETTINGS))

FORCE:

dev: tools
	node tests/dev.mjs

# In two rounds, each target's output printed whole when it ends. First the builds and the
# CPU-bound checks, two at a time: the test build beside the unit tests and clippy (cargo locks
# each profile's target directory, and these use different ones) and the installs. Then the
# tests that run the worker, three targets at a time: the end-to-end suite is the long one and
# mostly waits on the clock (tests/run.mjs), so it starts first, and the shipped build with its
# deploy dry run, the browser, the clients and the agents run on the cores it leaves idle.
TEST_FIRST = build-test test-rust lint chromium $(CLIENTS_VENV)/.installed \
	tests/clients/node_modules/.package-lock.json tests/agents/node_modules/.package-lock.json
TEST_THEN = test-e2e check-deploy test-ui test-clients test-agents

test:
	$(MAKE) --no-print-directory -j2 --output-sync=target $(TEST_FIRST)
	$(MAKE) --no-print-directory -j3 --output-sync=target $(TEST_THEN)

test-rust:
	cargo test --locked

# The wasm pass lints the test build's code too (--all-features): the shipped build's code is the
# same but for what feature test-configs adds.
lint: tools
	cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --locked --target wasm32-unknown-unknown --all-features -- -D warnings
	cargo fmt --check

# Four test files at a time: each starts its own workerd and fake Databricks on free ports, with
# in-memory or temporary storage, so files share nothing; and most of the suite's time is spent
# waiting (a rate-limit window, retry-afters, cooldowns, timeouts), not computing. tests/run.mjs
# starts the files that took longest last time (build-test/e2e-times.json) first, so that the
# longest (rate-window.test.mjs, a minute) does not start last.
test-e2e: build-test
	node tests/run.mjs --concurrency 4 --times build-test/e2e-times.json tests/e2e/

# The admin page (/ui) in Debian's chromium, driven by playwright-core (pinned in package.json;
# it downloads no browser), against the built worker under workerd. Screenshots of every page go
# to build-test/screenshots/.
test-ui: build-test chromium
	node --test tests/ui/

# Debian's chromium, installed with apt when missing (as root, else through sudo).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

# The client libraries users run (OpenAI Python with its helpers, LangChain, the LiteLLM SDK,
# the Vercel AI SDK), installed pinned from the registries into build-clients/ and
# tests/clients/node_modules, each against the built worker under workerd.
CLIENTS_DIR := build-clients
CLIENTS_VENV := $(CLIENTS_DIR)/venv

$(CLIENTS_VENV)/.installed: tests/clients/requirements.txt
	python3 -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@touch $@

tests/clients/node_modules/.package-lock.json: tests/clients/package.json tests/clients/package-lock.json
	npm ci --prefix tests/clients --no-audit --no-fund
	@touch $@

test-clients: build-test $(CLIENTS_VENV)/.installed tests/clients/node_modules/.package-lock.json
	node tools/cl100k_table.mjs $(ASSETS_DIR) --tiktoken-cache $(CLIENTS_DIR)/tiktoken
	node --test --test-concurrency=1 tests/clients/

# Coding agents (Claude Code, Codex CLI), pinned in tests/agents/package.json (their native
# binaries ship in the npm packages), each run non-interactively against the built worker.
tests/agents/node_modules/.package-lock.json: tests/agents/package.json tests/agents/package-lock.json
	npm ci --prefix tests/agents --no-audit --no-fund
	@touch $@

test-agents: build-test tests/agents/node_modules/.package-lock.json
	node --test --test-concurrency=1 tests/agents/

# The deploy bundle builds and validates offline.
# wrangler runs `make build` (wrangler.toml [build]); MAKEFLAGS is cleared so that, under `make -j`,
# that make does not look for the jobserver wrangler cannot hand down.
check-deploy: tools
	rm -rf dist && MAKEFLAGS= npx wrangler deploy --dry-run --outdir dist

# `make bench BASELINE=<commit>` also builds that commit's worker with the test config into
# build-baseline/ and runs its rows beside this build's, in the same rounds.
bench: build-test $(if $(BASELINE),build-baseline)
	BENCH_BASELINE=$(if $(BASELINE),build-baseline) node tests/bench.mjs

# The baseline gets the same wasm-opt pass as this build, so that the rows compare the code, not
# the optimiser (a commit's own worker-build leaves wasm-opt off; see WASM_OPT_FLAGS).
build-baseline: tools assets
	rm -rf build-baseline-src && git worktree prune
	git worktree add --detach build-baseline-src $(BASELINE)
	cd build-baseline-src && CARGO_TARGET_DIR=$(CURDIR)/target/baseline \
		GATEWAY_CONFIG=tests/fixtures/litellm_config.yaml worker-build --release --out-dir $(CURDIR)/build-baseline
	$(WASM_OPT_BIN) build-baseline/index_bg.wasm -o build-baseline/index_bg.opt.wasm $(WASM_OPT_FLAGS) \
		&& mv build-baseline/index_bg.opt.wasm build-baseline/index_bg.wasm
	# ... and its own entry rewrite, when that commit has one.
	if [ -f build-baseline-src/tools/plain_entry.mjs ]; then node build-baseline-src/tools/plain_entry.mjs build-baseline; fi
	git worktree remove --force build-baseline-src

# Not part of `make test`: the pure steps of a request (parse, translate, normalise, stream, hash,
# log line, ledger) run natively on realistic inputs, counted by callgrind when valgrind is installed.
profile:
	cargo run --locked --release --example profile_steps

# Not part of `make test`: workerd's CPU time per request on each path of the built worker (all
# its threads, until idle again), several builds side by side (tools/runtime_profile.mjs).
profile-runtime: build-test
	node tools/runtime_profile.mjs

# Not part of `make test`: several minutes (SOAK_SECONDS of load, then about a minute of probes).
soak: build-test
	node tests/soak.mjs

clean:
	rm -rf build build-baseline build-test build-assets build-clients dist \
		target node_modules tests/clients/node_modules tests/agents/node_modules
