# One entry point per task a newcomer needs. `make help` lists them.
.PHONY: help build run test lint demo release static clean

CARGO ?= cargo

help:
	@echo "make run      build and serve on the embedded defaults (127.0.0.1:3000, real Discord)"
	@echo "make test     every test: unit, contract, hostile clients, fake-Discord fidelity"
	@echo "make lint     clippy with warnings as errors, and rustfmt --check"
	@echo "make demo     the service plus the bundled fake Discord, with curl commands that work offline"
	@echo "make release  optimised binaries in target/release"

build:
	$(CARGO) build --workspace

run:
	$(CARGO) run --release --bin discord-bot-backend

# --workspace builds fake-discord too: the contract tests start it.
test:
	$(CARGO) test --workspace

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all --check

demo:
	$(CARGO) build --release --workspace
	bash scripts/demo.sh target/release

release:
	$(CARGO) build --release --workspace

clean:
	$(CARGO) clean
