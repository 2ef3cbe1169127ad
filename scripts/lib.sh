# shellcheck shell=bash
# scripts/lib.sh — shared defaults and helpers for the local-stack scripts.
#
# Sourced by install.sh, start.sh, wait.sh, stop.sh and up.sh. Every default below can be
# overridden from the environment (e.g. `PG_PORT=5433 scripts/up.sh`).
# shellcheck disable=SC2034  # the defaults are used by the scripts that source this file

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
SCRIPTS_DIR="$ROOT/scripts"
LOCAL_DIR="${LOCAL_DIR:-$ROOT/.local}"   # data of the servers we start (git-ignored)
RUN_DIR="$LOCAL_DIR/run"                 # pid files: only for servers WE started
LOG_DIR="$LOCAL_DIR/log"
# Downloads live outside the clone, so a fresh clone on the same machine does not re-fetch.
CAP_CACHE_DIR="${CAP_CACHE_DIR:-$HOME/.cache/cap-services}"

PG_PORT="${PG_PORT:-5432}"
PG_DATABASE="${PG_DATABASE:-inventory}"
NATS_PORT="${NATS_PORT:-4222}"
NATS_MONITOR_PORT="${NATS_MONITOR_PORT:-8222}"
CASSANDRA_PORT="${CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
CASSANDRA_JMX_PORT="${CASSANDRA_JMX_PORT:-7199}"
CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
CASSANDRA_HEAP="${CASSANDRA_HEAP:-1G}"
# A node of a cluster (the lab, scripts/lab.sh) overrides these; the defaults make a single node.
CASSANDRA_ADDRESS="${CASSANDRA_ADDRESS:-127.0.0.1}"          # listen, rpc and CQL address
CASSANDRA_SEEDS="${CASSANDRA_SEEDS:-$CASSANDRA_ADDRESS:$CASSANDRA_STORAGE_PORT}"
CASSANDRA_NUM_TOKENS="${CASSANDRA_NUM_TOKENS:-16}"
CASSANDRA_SNITCH="${CASSANDRA_SNITCH:-SimpleSnitch}"
CASSANDRA_EXTRA_YAML="${CASSANDRA_EXTRA_YAML:-}"   # a file appended to cassandra.yaml (keys the template lacks)
CASSANDRA_GROUP="${CASSANDRA_GROUP:-}"             # run the JVM under this group id (the lab's nftables match it)
CASSANDRA_HOME="$CAP_CACHE_DIR/cassandra-$CASSANDRA_VERSION"   # lib/ holds the jars

# Readiness timeouts in seconds (wait.sh).
PG_WAIT_TIMEOUT="${PG_WAIT_TIMEOUT:-60}"
NATS_WAIT_TIMEOUT="${NATS_WAIT_TIMEOUT:-30}"
CASSANDRA_WAIT_TIMEOUT="${CASSANDRA_WAIT_TIMEOUT:-180}"

# nats-server: the $NATS_VERSION that install.sh builds into $NATS_HOME with `go install` if it is
# there, else the one on PATH (Debian's package: /usr/sbin, 2.9.10 on bookworm). JetStream syncs
# every write before acknowledging it only from 2.10 on (`sync_interval: always`, see nats.conf.in).
NATS_VERSION="${NATS_VERSION:-2.12.15}"
NATS_HOME="$CAP_CACHE_DIR/nats-server-$NATS_VERSION"   # bin/nats-server
if [[ -z "${NATS_SERVER:-}" && -x "$NATS_HOME/bin/nats-server" ]]; then NATS_SERVER="$NATS_HOME/bin/nats-server"; fi
NATS_SERVER="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
NATS_SYNC_MIN_VERSION=2.10.0   # the first nats-server with `sync_interval: always`
# Patroni (the lab's highly available PostgreSQL), from PyPI into a venv of its own. It runs as
# the postgres user, who cannot enter root's home: outside it (the lab runs as root).
PATRONI_VERSION="${PATRONI_VERSION:-4.1.5}"
PATRONI_HOME="${PATRONI_HOME:-/opt/cap-services/patroni-$PATRONI_VERSION}"
if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="${JAVA:-$JAVA_HOME/bin/java}"; else JAVA="${JAVA:-java}"; fi

ALL_SERVICES=(cassandra postgres nats)   # start order: slowest first

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "WARNING: $*"; }
die()  { log "ERROR: $*"; exit 1; }

# port_open HOST PORT — true if a TCP connection succeeds within 1 s.
port_open() {
  # shellcheck disable=SC2016  # $0 and $1 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# services ARGS... — prints the selected service names (in start order); "all" or nothing = all.
services() {
  local arg svc
  if [[ $# -eq 0 || " $* " == *" all "* ]]; then printf '%s\n' "${ALL_SERVICES[@]}"; return; fi
  for arg in "$@"; do
    [[ " ${ALL_SERVICES[*]} " == *" $arg "* ]] || die "unknown service '$arg' (expected: all ${ALL_SERVICES[*]})"
  done
  for svc in "${ALL_SERVICES[@]}"; do
    [[ " $* " == *" $svc "* ]] && echo "$svc"
  done
  return 0
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# our_pid NAME — prints the pid from NAME's pid file if that process is alive and is really
# NAME (guards against a recycled pid); fails otherwise.
our_pid() {
  local file pid pattern
  file=$(pid_file "$1")
  [[ -s "$file" ]] || return 1
  pid=$(head -n1 "$file")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  case "$1" in
    postgres)  pattern=postgres ;;
    nats)      pattern=nats-server ;;
    cassandra) pattern=CassandraDaemon ;;
  esac
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$pattern" || return 1
  echo "$pid"
}

# log_files NAME — the log files of a server we start, one per line.
log_files() {
  case "$1" in
    cassandra) printf '%s\n' "$LOG_DIR/cassandra.log" "$LOG_DIR/cassandra.stdout.log" ;;
    *)         echo "$LOG_DIR/$1.log" ;;
  esac
}

# show_log_tail NAME — last 30 lines of NAME's log(s), on stderr.
show_log_tail() {
  local f files shown=0
  mapfile -t files < <(log_files "$1")
  for f in "${files[@]}"; do
    [[ -s "$f" ]] || continue
    printf -- '--- last 30 lines of %s ---\n' "$f" >&2
    tail -n 30 "$f" >&2
    shown=1
  done
  [[ $shown -eq 1 ]] || printf -- '--- no log for %s (not started by these scripts?) ---\n' "$1" >&2
}

# pg_bindir — directory of the PostgreSQL server binaries (newest installed version).
pg_bindir() {
  local dir
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  [[ -x "$dir/pg_ctl" ]] || return 1
  echo "$dir"
}

# as_pg CMD... — run CMD as the postgres user when we are root (the server refuses root).
as_pg() {
  if [[ $EUID -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
