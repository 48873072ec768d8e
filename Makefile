# One entry point per task a newcomer needs. `make help` lists them.
.PHONY: help build run test lint demo release static bench fuzz-api clean

CARGO ?= cargo

help:
	@echo "make run      build and serve on 127.0.0.1:3000 against real Discord, sessions kept in ./data"
	@echo "make test     every test: unit, contract, hostile clients, fake-Discord fidelity"
	@echo "make lint     clippy with warnings as errors, and rustfmt --check"
	@echo "make demo     the service plus the bundled fake Discord, with curl commands that work offline"
	@echo "make release  optimised binaries in target/release"
	@echo "make static   a fully static musl binary"
	@echo "make bench    the benchmark table of benches/RESULTS.md, measured on this machine"
	@echo "make bench-micro  micro-benchmarks of the hot paths (divan); also run by make bench"
	@echo "make bench-compare BASE=old-binary  scenario A, an older build against this one, in one sitting"
	@echo "make bench-durable  logins with and without --data-dir, RSS of 10,000 restored sessions"
	@echo "make bench-writes   message sends beside reads, RSS of 100,000 idempotency keys"
	@echo "make bench-curve  the 50 ms scenario at 64/256/1024 connections, RSS at 1k/10k/100k sessions"
	@echo "make bench-events  events (issue #13): Gateway-to-SSE latency, fan-out CPU per frame, RSS per Gateway connection and per stream"
	@echo "make fuzz-api schemathesis against the API, driven by its own OpenAPI document (FUZZ_MAX_EXAMPLES=n)"

build:
	$(CARGO) build --workspace

# Sessions survive a restart: the embedded database lives in ./data.
run:
	$(CARGO) run --release --bin discord-bot-backend -- --data-dir ./data

# --workspace builds fake-discord too: the contract tests start it.
# tests/cluster.rs runs against a real redis-server: installed here when
# this is root with apt-get; otherwise those tests say loudly they skip.
# tests/library_compat.rs runs @discordjs/rest (pinned in tests/compat) under
# Node.js against the passthrough: npm ci installs it first.
test:
	@command -v redis-server >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq redis-server; } || \
	  echo "!!!!! redis-server is missing and cannot be installed here: the Redis tests will be SKIPPED (apt-get install redis-server) !!!!!"
	@command -v npm >/dev/null || \
	  { echo "npm is missing: tests/library_compat.rs runs @discordjs/rest under Node.js >= 18 (apt-get install nodejs npm)"; exit 1; }
	npm ci --prefix tests/compat --no-audit --no-fund
	$(CARGO) test --workspace

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all --check

demo:
	$(CARGO) build --release --workspace
	bash scripts/demo.sh target/release

release:
	$(CARGO) build --release --workspace

MUSL := x86_64-unknown-linux-musl

static:
	rustup target list --installed | grep -q $(MUSL) || rustup target add $(MUSL)
	command -v musl-gcc >/dev/null || apt-get install -y -qq musl-tools
	$(CARGO) build --release --target $(MUSL) --bin discord-bot-backend
	@ls -l target/$(MUSL)/release/discord-bot-backend

# The upstream stand-in is its own crate (hyper): only this target builds it.
bench:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --workspace
	cd benches/upstream && $(CARGO) build --release
	python3 benches/bench.py
	$(MAKE) bench-events
	$(CARGO) bench --bench micro

# How throughput and memory grow: the 50 ms scenario at 64, 256 and 1024
# connections, and RSS at 1k, 10k and 100k sessions (benches/RESULTS.md).
.PHONY: bench-curve
bench-curve:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --bin discord-bot-backend
	cd benches/upstream && $(CARGO) build --release
	python3 benches/bench.py curve

# Scenario A for an older build against this one, alternated in one sitting
# (BASE=path to the older binary; ROUNDS runs of each, default 3).
.PHONY: bench-compare
bench-compare:
	@test -x "$(BASE)" || { echo "usage: make bench-compare BASE=path/to/an/older/discord-bot-backend [ROUNDS=3]"; exit 2; }
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --bin discord-bot-backend
	cd benches/upstream && $(CARGO) build --release
	python3 benches/bench.py compare $(BASE) target/release/discord-bot-backend $(or $(ROUNDS),3)

# What --data-dir costs: logins with and without it, RSS and start-up with
# 10,000 sessions restored (scenario A with it: make bench-compare).
.PHONY: bench-durable
bench-durable:
	$(CARGO) build --release --bin discord-bot-backend
	cd benches/upstream && $(CARGO) build --release
	python3 benches/bench.py durable

# Writes: message sends beside scenario A (CPU per send / per read), and
# what 100,000 idempotency keys weigh in memory.
.PHONY: bench-writes
bench-writes:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --bin discord-bot-backend
	cd benches/upstream && $(CARGO) build --release
	python3 benches/bench.py writes

# Events (issue #13, "Performance"), in one run: latency from the fake
# Gateway's send (its packet, seen by tcpdump) to an SSE client's read, with
# 1 stream and with 1,000 over 100 bots; service CPU per delivered frame at
# 10,000 events/s; RSS per idle Gateway connection (TLS on loopback with a
# throwaway CA from openssl, zlib-stream) and per idle stream. The client
# is its own crate (benches/events), like the upstream.
.PHONY: bench-events
bench-events:
	command -v tcpdump >/dev/null || (apt-get update -qq && apt-get install -y -qq tcpdump)
	command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq openssl)
	$(CARGO) build --release --bin discord-bot-backend
	$(CARGO) build --release -p fake-discord
	cd benches/events && $(CARGO) build --release
	python3 benches/bench.py events

# Sessions, rate limiter, request front and query parsing in isolation, no
# network (benches/micro.rs); the numbers are in benches/RESULTS.md.
.PHONY: bench-micro
bench-micro:
	$(CARGO) bench --bench micro

# schemathesis (pinned, in target/fuzz-venv) against the release binaries and
# the fake Discord; fails on any 5xx or any answer the document does not allow.
fuzz-api:
	CARGO=$(CARGO) bash scripts/fuzz-api.sh

clean:
	$(CARGO) clean
