#!/usr/bin/env bash
# scripts/run-services.sh — run the services in the foreground against the local stack.
#
# Used by `make run` after the stores are up. Ctrl-C (or SIGTERM) is passed on to
# every service, which drains in-flight work before exiting.
#
# Bearer tokens: the services only start with a key to verify them. Unless
# AUTH_VERIFYING_KEY_FILE or AUTH_JWKS_FILE is set, the development key pair in
# .local/auth (created here by `capctl dev-keys` if missing, never overwritten)
# is used; `capctl token SUBJECT [--scope inventory:admin]` mints tokens with it.
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

for binary in "${services[@]}" capctl; do
  [[ -x "$bin_dir/$binary" ]] || die "$bin_dir/$binary is missing; run 'cargo build --workspace' first"
done
if [[ -z "${AUTH_VERIFYING_KEY_FILE:-}" && -z "${AUTH_JWKS_FILE:-}" ]]; then
  "$bin_dir/capctl" dev-keys --dir "$LOCAL_DIR/auth" >/dev/null
  export AUTH_VERIFYING_KEY_FILE="$LOCAL_DIR/auth/verifying-key.pem"
  log "bearer tokens verified with the development key $AUTH_VERIFYING_KEY_FILE; mint one with:"
  log "  TOKEN=\$($bin_dir/capctl --signing-key $LOCAL_DIR/auth/signing-key.pem token alice --scope inventory:admin)"
fi

for service in "${services[@]}"; do
  "$bin_dir/$service" &
  pids+=("$!")
done
log "inventory on http://${INVENTORY_ADDR:-127.0.0.1:8081}, timeline on http://${TIMELINE_ADDR:-127.0.0.1:8082} (Ctrl-C stops)"

# Exit when any service exits, stopping the others.
status=0
wait -n "${pids[@]}" || status=$?
stop_all
exit "$status"
