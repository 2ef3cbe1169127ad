#!/usr/bin/env bash
# scripts/stop.sh [all|postgres|nats|cassandra]... — stop the servers that start.sh started.
#
# Only servers with a pid file in .local/run are touched; reused servers are left alone.
# postgres: pg_ctl stop -m fast; the others: SIGTERM, up to 30 s, then SIGKILL.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_one() {
  local name=$1 file pid bin i
  file=$(pid_file "$name")
  if [[ ! -f "$file" ]]; then log "$name: no pid file, not ours to stop"; return 0; fi
  if ! pid=$(our_pid "$name"); then
    log "$name: not running (removing stale pid file)"
    rm -f "$file"
    return 0
  fi
  log "$name: stopping (pid $pid)"
  if [[ "$name" == postgres ]]; then
    bin=$(pg_bindir) || die "postgres: pg_ctl not found"
    as_pg "$bin/pg_ctl" -D "$LOCAL_DIR/postgres" -m fast -w -t 60 stop >/dev/null
  else
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "$name: still running after 30 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
  log "$name: stopped"
}

selected=$(services "$@")   # dies on an unknown name
for svc in $selected; do
  stop_one "$svc"
done
