# CAP Services — the commands a newcomer needs.
#
#   make run    install what is missing, start PostgreSQL, NATS and Cassandra on
#               loopback, then run both services in the foreground (Ctrl-C stops them)
#   make test   the same set-up, then every test against the real stores
#   make down   stop the servers `make run`/`make test` started (others are left alone)
#   make lint   rustfmt --check, clippy -D warnings, hadolint and the Compose schema
#   make stack  only install and start the stores

CARGO ?= cargo

.PHONY: run test down lint stack build

stack:
	scripts/up.sh

build:
	$(CARGO) build --workspace --bins

run: stack build
	scripts/run-services.sh

# The end-to-end tests run the real binaries (capctl, timeline-worker): build them first.
test: stack
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

down:
	scripts/stop.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/lint-containers.sh
