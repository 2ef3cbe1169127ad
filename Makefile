# CAP Services — the commands a newcomer needs.
#
#   make run    install what is missing, start PostgreSQL, NATS and Cassandra on
#               loopback, then run both services in the foreground (Ctrl-C stops them)
#   make test   the same set-up, then every test against the real stores
#   make down   stop the servers `make run`/`make test` started (others are left alone)
#   make api-check  start both services on fresh stores and fuzz them against their own
#               OpenAPI documents with schemathesis (every check and phase; 0 failures to pass)
#   make lint   rustfmt --check, no module cycles, clippy -D warnings, hadolint and the Compose schema
#   make stack  only install and start the stores
#   make sqlx-prepare  regenerate .sqlx/ (compile-checked SQL) after changing a query or migration
#   make bench  release build, then the benchmarks against the local stack: prints a
#               table of ratios and writes bench/results/latest.md (never fails on a target)
#   make lab    the CAP lab (root): a 3-node Cassandra cluster, PostgreSQL, NATS and the
#               services in a private network namespace, real partitions and crashes, every
#               scenario's evidence and verdict; SCENARIO=name[,name] runs some (docs/cap-lab.md)

CARGO ?= cargo

.PHONY: run test down lint stack build sqlx-prepare bench lab api-check

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
	cd crates/lab/checker && go test ./...

down:
	scripts/stop.sh

# The services on spare ports, each on a fresh database / keyspace / stream (scripts/api-check.sh).
api-check: stack build
	scripts/api-check.sh

lint:
	$(CARGO) fmt --all -- --check
	scripts/module-cycles.py
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/lint-containers.sh
	test -z "$$(gofmt -l crates/lab/checker)" || { gofmt -l crates/lab/checker; exit 1; }
	cd crates/lab/checker && go vet ./...

# Its own network and pid namespaces: never touches `make run`'s stores; everything it started
# dies with it (Ctrl-C included). Data and logs in .local/lab, the evidence in .local/lab/report.md.
lab: build
	scripts/lab.sh $(if $(SCENARIO),--scenario $(SCENARIO))

# Builds the release binaries and brings the stack up itself (see scripts/bench.sh).
bench:
	scripts/bench.sh

# A fresh scratch database with the migrations applied, then the query data for offline builds.
SQLX_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/inventory_sqlx
sqlx-prepare: stack
	command -v cargo-sqlx >/dev/null || $(CARGO) install sqlx-cli --version 0.9.0 --locked --no-default-features --features postgres,rustls
	psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS inventory_sqlx" -c "CREATE DATABASE inventory_sqlx"
	DATABASE_URL=$(SQLX_DATABASE_URL) sqlx migrate run --source migrations/postgres
	DATABASE_URL=$(SQLX_DATABASE_URL) SQLX_OFFLINE=false $(CARGO) sqlx prepare --workspace
