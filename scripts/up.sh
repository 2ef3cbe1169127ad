#!/usr/bin/env bash
# scripts/up.sh [all|postgres|nats|cassandra]... — install what is missing, start, wait until ready.
#
# What `make run` / `make test` call. Fast when everything already runs. Stop with scripts/stop.sh.
set -euo pipefail
dir=$(dirname "${BASH_SOURCE[0]}")
"$dir/install.sh"
"$dir/start.sh" "${@:-all}"
"$dir/wait.sh" "${@:-all}"
