#!/usr/bin/env bash
# scripts/run-services.sh — run the services in the foreground against the local stack.
#
# Used by `make run` after the stores are up. Ctrl-C (or SIGTERM) is passed on to
# every service, which drains in-flight work before exiting.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bin_dir="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
services=(inventory timeline timeline-worker)

pids=()
stop_all() {
  trap - INT TERM
  log "stopping services"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_all INT TERM

for service in "${services[@]}"; do
  [[ -x "$bin_dir/$service" ]] || die "$bin_dir/$service is missing; run 'cargo build --workspace' first"
  "$bin_dir/$service" &
  pids+=("$!")
done
log "inventory on http://${INVENTORY_ADDR:-127.0.0.1:8081}, timeline on http://${TIMELINE_ADDR:-127.0.0.1:8082} (Ctrl-C stops)"

# Exit when any service exits, stopping the others.
status=0
wait -n "${pids[@]}" || status=$?
stop_all
exit "$status"
