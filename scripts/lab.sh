#!/usr/bin/env bash
# scripts/lab.sh [cap-lab args...] — the CAP lab (`make lab`): a 3-node Cassandra cluster, a
# 3-node PostgreSQL (Patroni, etcd, HAProxy), PostgreSQL, NATS and the services in a private
# network namespace, real faults, evidence.
#
# Installs what the lab needs (scripts/install.sh --lab: nftables, Go for the checker, etcd,
# HAProxy, Patroni), builds the linearizability checker (crates/lab/checker, porcupine), then
# runs `cap-lab` in new network + pid namespaces: its ports and nftables rules are its own (a
# running `make run` on the host is not touched), and when it exits — normally, on Ctrl-C or by
# a crash — the kernel kills every process it started and drops the namespace with its rules.
# Data and logs: .local/lab (wiped at the start of each run). `--scenario name[,name]` (make lab
# SCENARIO=...) runs some scenarios; `--list` names them. cap-lab makes its own development key
# pair (.local/lab/auth): its services verify bearer tokens with it, its clients mint with it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $EUID -eq 0 ]] || die "the lab needs root (network namespaces and nftables rules)"
"$SCRIPTS_DIR/install.sh" --lab

bin_dir="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
[[ -x "$bin_dir/cap-lab" ]] || die "$bin_dir/cap-lab is missing; run 'cargo build --workspace --bins' first"
lab_dir="$LOCAL_DIR/lab"
checker="$CAP_CACHE_DIR/lab/linearizability"
mkdir -p "$(dirname "$checker")"
log "lab: building the linearizability checker (porcupine) into $checker"
(cd "$ROOT/crates/lab/checker" && go build -o "$checker" .) || die "lab: building the checker failed"

export CAP_LAB_DIR="$lab_dir" CAP_LAB_BIN_DIR="$bin_dir" CAP_LAB_CHECKER="$checker"
export CAP_LAB_ROOT="$ROOT" CAP_LAB_CASSANDRA_HOME="$CASSANDRA_HOME" CAP_LAB_JAVA="$JAVA"
export CAP_LAB_PATRONI_HOME="$PATRONI_HOME"
# One lab at a time: they would share .local/lab. Every process of the lab inherits the lock.
mkdir -p "$LOCAL_DIR"
exec 9>"$LOCAL_DIR/lab.lock"
flock -n 9 || die "another lab is running (it holds $LOCAL_DIR/lab.lock)"

# bash is the namespace's first process (its init): it reaps the servers that start.sh leaves
# behind as orphans, so a stopped node does not linger as a zombie. --kill-child: when unshare
# dies, so does that init, and with it every process of the namespace.
unshare --net --pid --mount-proc --fork --kill-child -- \
  bash -c 'ip link set lo up || exit 1; "$CAP_LAB_BIN_DIR/cap-lab" "$@"; status=$?; exit "$status"' cap-lab "$@" &
lab_pid=$!
# unshare ignores SIGINT and SIGTERM while it waits for its child: on Ctrl-C, SIGTERM or a
# hang-up, kill it, which ends the whole lab.
trap 'kill -KILL "$lab_pid" 2>/dev/null; log "lab: stopped, every process of its namespace killed"; exit 130' INT TERM HUP
wait "$lab_pid"
