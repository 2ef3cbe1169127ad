#!/usr/bin/env bash
# scripts/wait.sh [all|postgres|nats|cassandra]... — wait until the servers really answer.
#
# postgres: a query over TCP; nats: the /healthz?js-enabled-only=true monitoring endpoint (a
# reused server without monitoring: its client port); cassandra: a CQL query (cql_ping.py).
# Timeouts: PG_WAIT_TIMEOUT=60, NATS_WAIT_TIMEOUT=30, CASSANDRA_WAIT_TIMEOUT=180 seconds.
# On timeout, or if a server we started dies: names it, shows its log tail, exits 1.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_postgres() {
  local bin
  bin=$(pg_bindir) || return 1
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -w -X -qAt -c 'SELECT 1' >/dev/null 2>&1
}

check_nats() {
  if our_pid nats >/dev/null || port_open 127.0.0.1 "$NATS_MONITOR_PORT"; then
    curl -fsS --max-time 2 "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true" >/dev/null 2>&1
  else
    port_open 127.0.0.1 "$NATS_PORT"
  fi
}

check_cassandra() {
  python3 "$SCRIPTS_DIR/cql_ping.py" "$CASSANDRA_ADDRESS" "$CASSANDRA_PORT" --timeout 5 >/dev/null 2>&1
}

# wait_for NAME TIMEOUT
wait_for() {
  local name=$1 timeout=$2 start=$SECONDS start_us=${EPOCHREALTIME/./} ms started_by_us=0
  [[ -f "$(pid_file "$name")" ]] && started_by_us=1
  until "check_$name"; do
    if [[ $started_by_us -eq 1 ]] && ! our_pid "$name" >/dev/null; then
      show_log_tail "$name"
      die "$name: the server we started has exited (see the log above)"
    fi
    if (( SECONDS - start >= timeout )); then
      show_log_tail "$name"
      die "$name: not ready after $timeout s"
    fi
    sleep 1
  done
  ms=$(( (${EPOCHREALTIME/./} - start_us) / 1000 ))
  log "$name: ready ($((ms / 1000)).$(printf '%03d' $((ms % 1000))) s)"
}

selected=" $(services "$@" | tr '\n' ' ')"
# Quickest first, so a broken PostgreSQL or NATS is reported before Cassandra is waited for.
if [[ "$selected" == *" postgres "* ]]; then wait_for postgres "$PG_WAIT_TIMEOUT"; fi
if [[ "$selected" == *" nats "* ]]; then wait_for nats "$NATS_WAIT_TIMEOUT"; fi
if [[ "$selected" == *" cassandra "* ]]; then wait_for cassandra "$CASSANDRA_WAIT_TIMEOUT"; fi
