#!/usr/bin/env bash
# scripts/api-check.sh — fuzz both services against their own OpenAPI documents.
#
# Called by `make api-check` (after `make build`). Brings the local stack up (scripts/up.sh),
# starts the inventory and the timeline on spare loopback ports, each on fresh stores (a new
# PostgreSQL database, a new Cassandra keyspace, a new NATS stream), and runs schemathesis
# against each service's /openapi.json with every check and every phase (examples, coverage,
# fuzzing, stateful: the OpenAPI links lead from a created reservation or post to the
# operations on it). Any failure or error fails the run; everything it made is removed after.
#
# Bearer tokens: the services verify them with the development key pair in .local/auth (created
# if missing, `capctl dev-keys`), and every request carries one token, for the subject `ann` (the
# user the documents' examples name) with the `inventory:admin` scope. schemathesis thus acts as
# one user: a generated post by another author_id, a follow for another user or another user's
# home timeline is rightly 403 (documented on those operations); its writes get a per-subject
# limit high enough that one fuzzer is never rate-limited (RATE_LIMIT_WRITES_PER_SECOND).
#
# schemathesis comes from PyPI into the cached tool virtualenv scripts/lint-containers.sh
# keeps under $CAP_CACHE_DIR, with a stamp of its own, so only the first run needs the network.
#
# Knobs (environment): API_CHECK_MAX_EXAMPLES (per operation and phase, default 30),
# API_CHECK_MAX_TIME (seconds per service, default 90), API_CHECK_SEED (reproduce a run).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned, so every machine fuzzes with the same generators and checks; bump deliberately.
REQUIREMENTS=(
  "schemathesis==4.32.5"
)
VENV="$CAP_CACHE_DIR/venv"
STAMP="$VENV/.cap-api-check-requirements"

MAX_EXAMPLES="${API_CHECK_MAX_EXAMPLES:-30}"
MAX_TIME="${API_CHECK_MAX_TIME:-90}"
SEED="${API_CHECK_SEED:-}"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
WORK_DIR="$LOCAL_DIR/api-check"

# The token's subject: the user the documents' examples name, so that the examples act as
# themselves.
SUBJECT=ann
# Headers every request of the run carries, one entry per `-H NAME:VALUE` (main adds the
# bearer token).
HEADERS=()

# ensure_tools — installs the pinned requirements into $VENV (created if missing) unless
# its stamp says they are there already.
ensure_tools() {
  local wanted
  wanted=$(printf '%s\n' "${REQUIREMENTS[@]}")
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" && -x "$VENV/bin/python" ]] && return 0

  command -v python3 >/dev/null || die "python3 is needed to install schemathesis"
  mkdir -p "$CAP_CACHE_DIR"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV" >/dev/null 2>&1 || {
      # Debian's python3 without python3-venv: a venv without pip, the system pip installs into it.
      rm -rf "$VENV"
      python3 -m venv --without-pip "$VENV" || die "python3 -m venv failed"
    }
  fi
  log "installing ${REQUIREMENTS[*]} into $VENV (first run only)"
  if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  else
    python3 -m pip --python "$VENV/bin/python" install --quiet --disable-pip-version-check \
      "${REQUIREMENTS[@]}"
  fi || die "could not install ${REQUIREMENTS[*]} from PyPI"
  printf '%s\n' "$wanted" >"$STAMP"
}

# spare_port — a TCP port nothing listens on now (the kernel's pick).
spare_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready URL NAME PID — waits until URL/readyz answers 200, or fails if the process died.
wait_ready() {
  local url=$1 name=$2 pid=$3 deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$WORK_DIR/$name.log" >&2; die "$name exited during start-up"; }
    ((SECONDS < deadline)) || { tail -n 30 "$WORK_DIR/$name.log" >&2; die "$name not ready within 120 s"; }
    sleep 0.5
  done
}

# cql QUERY — runs one CQL statement on the local node (scripts/cql_ping.py's protocol code).
cql() {
  PYTHONPATH="$SCRIPTS_DIR" python3 - "$CASSANDRA_PORT" "$1" <<'EOF'
import socket, struct, sys
import cql_ping as c
port, query = int(sys.argv[1]), sys.argv[2]
with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
    sock.settimeout(60)
    c.send_frame(sock, 1, c.OP_STARTUP, struct.pack(">H", 1) + c.pack_string("CQL_VERSION") + c.pack_string("3.0.0"))
    c.recv_frame(sock)
    c.send_frame(sock, 2, c.OP_QUERY, c.pack_string(query, ">i") + struct.pack(">HB", 0x0006, 0))
    c.recv_frame(sock)
EOF
}

# nats_delete_stream NAME — deletes a JetStream stream over the NATS protocol (best effort).
nats_delete_stream() {
  python3 - "$NATS_PORT" "$1" <<'EOF' || true
import socket, sys
port, stream = int(sys.argv[1]), sys.argv[2]
with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
    sock.recv(4096)  # INFO
    sock.sendall(f'CONNECT {{"verbose":false}}\r\nSUB _apicheck.reply 1\r\nPUB $JS.API.STREAM.DELETE.{stream} _apicheck.reply 0\r\n\r\nPING\r\n'.encode())
    sock.recv(4096)
EOF
}

PIDS=()
DATABASE=""
KEYSPACE=""
STREAM=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$DATABASE" ]]; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [[ -n "$STREAM" ]]; then
    nats_delete_stream "$STREAM"
    nats_delete_stream "${STREAM}_DEAD"
  fi
  if [[ -n "$KEYSPACE" ]]; then cql "DROP KEYSPACE IF EXISTS $KEYSPACE" 2>/dev/null || true; fi
}

# write_config FILE — the schemathesis configuration: where a check's default expectation is
# wrong for a documented rule that no JSON Schema can express, the operation's expected statuses
# say so (each with its reason). Nothing else is excluded.
write_config() {
  local accepted='"2xx", "3xx", "401", "403", "404", "409", "429", "5xx"'   # schemathesis' default
  cat >"$1" <<EOF
# Generated by scripts/api-check.sh.

# The stateful phase follows the documents' links and Location headers. Its guessing of links
# from field names is off: it took a ledger entry's reservation_id for a reservation even when
# it is null, and sent the text "None" as an id.
[phases.stateful]
inference.algorithms = ["location-headers"]

# PATCH needs If-Match: without it the answer is 428 Precondition Required (RFC 6585, made for
# exactly this); a well-formed If-Match that names another version is 412, which says the data
# was read, not refused.
[[operations]]
include-operation-id = "update_product"
checks.positive_data_acceptance.expected-statuses = [$accepted, "412"]
checks.missing_required_header.expected-statuses = ["400", "401", "403", "406", "415", "422", "428"]

# Following or unfollowing oneself is 422: two path parameters that must differ.
[[operations]]
include-operation-id = ["follow_user", "unfollow_user"]
checks.positive_data_acceptance.expected-statuses = [$accepted, "422"]

# An Idempotency-Key reused with another body is 422 (IETF httpapi draft), and the fuzzer reuses
# keys across bodies; a reservation's items must name each sku once (JSON Schema's uniqueItems
# compares whole items, not one member of them).
[[operations]]
include-operation-id = ["create_post", "create_reservation"]
checks.positive_data_acceptance.expected-statuses = [$accepted, "422"]

# Page cursors are opaque: only a next_cursor the service issued is one (a cursor names its list
# and owner), so a generated one is 400. The stateful phase follows the real ones.
[[operations]]
include-operation-id = ["list_following", "list_followers", "list_user_posts", "read_timeline"]
checks.positive_data_acceptance.expected-statuses = [$accepted, "400"]
EOF
}

# fuzz NAME BASE_URL — schemathesis against one service; returns its exit status.
fuzz() {
  local name=$1 base=$2 args=() header
  for header in "${HEADERS[@]}"; do args+=(-H "$header"); done
  [[ -n "$SEED" ]] && args+=(--seed "$SEED")
  log "schemathesis: $name ($base/openapi.json), every check, every phase"
  # One worker: Python 3.11's compiler is not safe for schemathesis' concurrent pattern
  # compilation (SystemError: AST constructor recursion depth mismatch, fixed in 3.12).
  # --checks all includes the authorization checks: ignored_auth sends each operation that
  # declares the bearer scheme without the token and expects 401.
  # From the work directory: schemathesis keeps its cache (.schemathesis/) in the current one.
  (cd "$WORK_DIR" && "$VENV/bin/schemathesis" --config-file "$WORK_DIR/schemathesis.toml" run "$base/openapi.json" \
    --url "$base" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --request-timeout 15 \
    --workers 1 \
    --generation-database none \
    --no-color \
    --report junit --report-dir "$WORK_DIR/$name-report" \
    "${args[@]}")
}

main() {
  ensure_tools
  "$SCRIPTS_DIR/up.sh"
  local service
  for service in inventory timeline capctl; do
    [[ -x "$BIN_DIR/$service" ]] || die "$BIN_DIR/$service is missing; run 'make build' first"
  done
  mkdir -p "$WORK_DIR"
  write_config "$WORK_DIR/schemathesis.toml"
  "$BIN_DIR/capctl" dev-keys --dir "$LOCAL_DIR/auth" >/dev/null
  local token
  token=$("$BIN_DIR/capctl" --signing-key "$LOCAL_DIR/auth/signing-key.pem" \
    token "$SUBJECT" --scope inventory:admin --ttl 2h) || die "could not mint a token"
  HEADERS+=("Authorization: Bearer $token")
  export AUTH_VERIFYING_KEY_FILE="$LOCAL_DIR/auth/verifying-key.pem"
  export RATE_LIMIT_WRITES_PER_SECOND=100000 RATE_LIMIT_BURST=100000
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  local tag inventory_port timeline_port
  tag="$(date +%s)_$$"
  DATABASE="inventory_api_check_$tag"
  KEYSPACE="timeline_api_check_$tag"
  STREAM="API_CHECK_$tag"
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $DATABASE" ||
    die "could not create database $DATABASE"

  inventory_port=$(spare_port)
  timeline_port=$(spare_port)
  RUST_LOG="${RUST_LOG:-warn}" \
    "$BIN_DIR/inventory" --addr "127.0.0.1:$inventory_port" \
    --database-url "postgres://postgres@127.0.0.1:$PG_PORT/$DATABASE" \
    >"$WORK_DIR/inventory.log" 2>&1 &
  PIDS+=("$!")
  RUST_LOG="${RUST_LOG:-warn}" \
    "$BIN_DIR/timeline" --addr "127.0.0.1:$timeline_port" \
    --cassandra-nodes "127.0.0.1:$CASSANDRA_PORT" --cassandra-keyspace "$KEYSPACE" \
    --nats-url "nats://127.0.0.1:$NATS_PORT" --nats-stream "$STREAM" \
    --nats-subject-prefix "apicheck$tag" --nats-consumer "api-check-$tag" \
    >"$WORK_DIR/timeline.log" 2>&1 &
  PIDS+=("$!")
  wait_ready "http://127.0.0.1:$inventory_port" inventory "${PIDS[0]}"
  wait_ready "http://127.0.0.1:$timeline_port" timeline "${PIDS[1]}"

  local started=$SECONDS inventory_status=0 timeline_status=0
  fuzz inventory "http://127.0.0.1:$inventory_port" || inventory_status=$?
  fuzz timeline "http://127.0.0.1:$timeline_port" || timeline_status=$?

  local verdict="passed"
  [[ $inventory_status -eq 0 && $timeline_status -eq 0 ]] || verdict="FAILED"
  printf 'api-check: %s (inventory %s, timeline %s; %d s; reports in %s)\n' "$verdict" \
    "$([[ $inventory_status -eq 0 ]] && echo ok || echo failed)" \
    "$([[ $timeline_status -eq 0 ]] && echo ok || echo failed)" \
    $((SECONDS - started)) "$WORK_DIR"
  [[ $verdict == "passed" ]]
}

main "$@"
