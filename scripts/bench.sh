#!/usr/bin/env bash
# scripts/bench.sh — `make bench`: the services against the local stack, next to
# the same work without the service in the way, in one markdown table.
#
#   inventory  per strategy (optimistic, pessimistic, guarded): a release-built
#              `inventory` on a spare port with a fresh database; `capctl
#              reserve-load` on one hot product and on 10,000 spread ones at each
#              concurrency; next to it pgbench running the service's own statements
#              (bench/pgbench/<strategy>.sql) at the same concurrency against a
#              database with the same schema and products.
#   timeline   `timeline` and `timeline-worker` on spare ports with their own
#              keyspace and stream; `capctl post-load` (accept rate, and the
#              worker's rows/s while it drains the backlog) next to `capctl
#              cql-insert-loop` (the same INSERTs straight to Cassandra, at the
#              worker's concurrency); `capctl fanout --rate` at half the peak
#              sustainable post rate (lag); `capctl read-load` at one and quorum.
#   memory     VmHWM of every service process.
#
# Writes bench/results/latest.md (and the raw outputs under bench/results/raw/),
# prints the table. Benchmarks report: a missed target never fails; only a broken
# bench does. Everything goes to 127.0.0.1; every loop is bounded in time.
#
# Knobs (environment): BENCH_SECS (measured seconds per cell, 10),
# BENCH_WARMUP_SECS (1), BENCH_STRATEGIES, BENCH_CONCURRENCY ("1 16 64"),
# BENCH_SPREAD_SKUS (10000), BENCH_USERS (1000), BENCH_FOLLOWS (30),
# BENCH_POST_SECS (5), BENCH_POST_CONCURRENCY (32), BENCH_READ_CONCURRENCY ("4 16"), BENCH_LAG_SECS (15),
# BENCH_SKIP_BUILD=1, BENCH_SKIP_STACK=1.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP_SECS="${BENCH_WARMUP_SECS:-1}"
BENCH_STRATEGIES="${BENCH_STRATEGIES:-optimistic pessimistic guarded}"
BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-1 16 64}"
BENCH_SPREAD_SKUS="${BENCH_SPREAD_SKUS:-10000}"
BENCH_USERS="${BENCH_USERS:-1000}"
BENCH_FOLLOWS="${BENCH_FOLLOWS:-30}"
BENCH_POST_SECS="${BENCH_POST_SECS:-5}"
BENCH_POST_CONCURRENCY="${BENCH_POST_CONCURRENCY:-32}"
BENCH_READ_CONCURRENCY="${BENCH_READ_CONCURRENCY:-4 16}"
BENCH_LAG_SECS="${BENCH_LAG_SECS:-15}"
# Must match the worker's defaults below (FANOUT_CONCURRENCY, FANOUT_WRITE_CONCURRENCY).
FANOUT_CONCURRENCY=16
FANOUT_WRITE_CONCURRENCY=32

BENCH_DIR="$ROOT/bench"
OUT_DIR="$BENCH_DIR/results"
RAW="$OUT_DIR/raw"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PG_BIN=$(pg_bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
export PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres
PSQL=("$PG_BIN/psql" -X -q -w -v ON_ERROR_STOP=1)
KEYSPACE=capbench

started_at=$(date +%s)
pids=()
service_dbs=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  for db in "${service_dbs[@]}"; do
    "$PG_BIN/dropdb" -w --if-exists "$db" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port — a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME LOG ENV=VALUE... — starts target/release/NAME with the given environment; sets $started_pid.
start() {
  local name=$1 logf=$2
  shift 2
  env "$@" "$BIN/$name" >"$logf" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
}

# stop PID — SIGTERM one service we started and wait for it.
stop() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# wait_ready URL PID — until URL/readyz answers 200 (60 s), or the process died.
wait_ready() {
  local url=$1 pid=$2 i
  for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "service behind $url exited; see $RAW/*.log"
    sleep 0.1
  done
  die "service behind $url not ready after 60 s"
}

# peak_rss_mb PID — VmHWM of a process, in MB.
peak_rss_mb() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# fresh_db NAME — drop and create a database.
fresh_db() {
  "$PG_BIN/dropdb" -w --if-exists "$1"
  "$PG_BIN/createdb" -w "$1"
}

# seed DB — the bench products, then fresh planner statistics.
seed() {
  "${PSQL[@]}" -d "$1" -f "$BENCH_DIR/seed.sql"
  # Only the seeded tables: ANALYZE on the still-empty ones would record them as
  # empty, and plans cached while they are (the foreign-key checks of long-lived
  # pooled connections) would scan them sequentially however large they grow.
  "${PSQL[@]}" -d "$1" -c 'VACUUM ANALYZE products, stock_ledger'
}

# capctl ARGS... — the release-built capctl, JSON out.
capctl() {
  "$BIN/capctl" --json "$@"
}

# json_get FILE KEY — a top-level field of a JSON file.
json_get() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# ---------------------------------------------------------------- set-up
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --workspace --release --bins)
fi
if [[ "${BENCH_SKIP_STACK:-0}" != 1 ]]; then
  "$SCRIPTS_DIR/up.sh"
fi
for tool in curl python3 "$PG_BIN/pgbench"; do
  command -v "$tool" >/dev/null || die "$tool is needed by the benchmarks"
done
rm -rf "$RAW"
mkdir -p "$RAW"
{
  echo "{\"started\": \"$(date -u +%FT%TZ)\", \"cpus\": $(nproc), \"secs\": $BENCH_SECS,"
  echo " \"cpu_model\": \"$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)\","
  echo " \"postgres\": \"$("${PSQL[@]}" -d postgres -Atc 'SHOW server_version')\"}"
} >"$RAW/meta.json"

# ---------------------------------------------------------------- inventory
for strategy in $BENCH_STRATEGIES; do
  service_db="capbench_inv_$strategy"
  pgbench_db="capbench_pgbench_$strategy"
  service_dbs+=("$service_db" "$pgbench_db")
  log "inventory ($strategy): fresh databases, service, products"
  fresh_db "$service_db"
  fresh_db "$pgbench_db"
  port=$(free_port)
  url="http://127.0.0.1:$port"
  start inventory "$RAW/inventory-$strategy.log" \
    RESERVATION_STRATEGY="$strategy" INVENTORY_ADDR="127.0.0.1:$port" \
    DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$service_db" RUST_LOG=warn
  inventory_pid=$started_pid
  wait_ready "$url" "$inventory_pid"
  seed "$service_db"
  for migration in "$ROOT"/migrations/postgres/*.sql; do
    "${PSQL[@]}" -d "$pgbench_db" -f "$migration"
  done
  "${PSQL[@]}" -d "$pgbench_db" -f "$BENCH_DIR/pgbench/setup.sql"
  seed "$pgbench_db"

  for workload in hot spread; do
    if [[ $workload == hot ]]; then prefix=hot- skus=1; else prefix=spread- skus=$BENCH_SPREAD_SKUS; fi
    for c in $BENCH_CONCURRENCY; do
      cell="$RAW/inventory-$strategy-$workload-c$c"
      log "inventory ($strategy, $workload, $c in flight): service"
      capctl --inventory-url "$url" reserve-load --sku-prefix "$prefix" --skus "$skus" \
        --concurrency "$c" --warmup-secs "$BENCH_WARMUP_SECS" --duration-secs "$BENCH_SECS" \
        >"$cell.service.json"
      "${PSQL[@]}" -d "$service_db" -Atc \
        "SELECT COALESCE(SUM(GREATEST(reserved + sold - received, 0)), 0) FROM products" >"$cell.oversold"

      log "inventory ($strategy, $workload, $c in flight): pgbench"
      before=$("${PSQL[@]}" -d "$pgbench_db" -Atc 'SELECT count(*) FROM reservations')
      threads=$((c < 2 ? c : 2))
      "$PG_BIN/pgbench" -n -M prepared -c "$c" -j "$threads" -T "$BENCH_SECS" \
        -f "$BENCH_DIR/pgbench/$strategy.sql" \
        -D prefix="$prefix" -D skus="$skus" -D ttl=3600 "$pgbench_db" >"$cell.pgbench.txt" 2>&1 \
        || { cat "$cell.pgbench.txt" >&2; die "pgbench failed"; }
      after=$("${PSQL[@]}" -d "$pgbench_db" -Atc 'SELECT count(*) FROM reservations')
      echo "$((after - before))" >"$cell.pgbench.holds"
    done
  done
  peak_rss_mb "$inventory_pid" >"$RAW/rss-inventory-$strategy"
  stop "$inventory_pid"
done

# ---------------------------------------------------------------- timeline
log "timeline: services on their own keyspace ($KEYSPACE) and stream"
api_port=$(free_port)
worker_port=$(free_port)
timeline_env=(
  CASSANDRA_NODES="127.0.0.1:$CASSANDRA_PORT" CASSANDRA_KEYSPACE="$KEYSPACE"
  NATS_URL="nats://127.0.0.1:$NATS_PORT" NATS_STREAM=CAPBENCH NATS_SUBJECT_PREFIX=capbench
  NATS_CONSUMER=capbench-fanout RUST_LOG=warn
)
start timeline "$RAW/timeline.log" "${timeline_env[@]}" TIMELINE_ADDR="127.0.0.1:$api_port"
timeline_pid=$started_pid
wait_ready "http://127.0.0.1:$api_port" "$timeline_pid"
start timeline-worker "$RAW/timeline-worker.log" "${timeline_env[@]}" \
  TIMELINE_WORKER_ADDR="127.0.0.1:$worker_port" \
  FANOUT_CONCURRENCY=$FANOUT_CONCURRENCY FANOUT_WRITE_CONCURRENCY=$FANOUT_WRITE_CONCURRENCY
worker_pid=$started_pid
wait_ready "http://127.0.0.1:$worker_port" "$worker_pid"
export CAPCTL_TIMELINE_URL="http://127.0.0.1:$api_port" CAPCTL_WORKER_URL="http://127.0.0.1:$worker_port"

log "timeline: graph of $BENCH_USERS users x $BENCH_FOLLOWS follows, then posts for ${BENCH_POST_SECS} s at $BENCH_POST_CONCURRENCY in flight, then the fan-out drains"
capctl post-load --users "$BENCH_USERS" --follows "$BENCH_FOLLOWS" \
  --concurrency "$BENCH_POST_CONCURRENCY" --warmup-secs "$BENCH_WARMUP_SECS" \
  --duration-secs "$BENCH_POST_SECS" >"$RAW/timeline-post.json"
user_prefix=$(json_get "$RAW/timeline-post.json" user_prefix)

# The worker has FANOUT_CONCURRENCY messages in hand, each writing up to
# FANOUT_WRITE_CONCURRENCY rows at once: that many rows in flight at most.
per_message=$((BENCH_FOLLOWS < FANOUT_WRITE_CONCURRENCY ? BENCH_FOLLOWS : FANOUT_WRITE_CONCURRENCY))
raw_concurrency=$((FANOUT_CONCURRENCY * per_message))
log "timeline: raw-driver timeline inserts at $raw_concurrency in flight"
capctl cql-insert-loop --cassandra-nodes "127.0.0.1:$CASSANDRA_PORT" --cassandra-keyspace "$KEYSPACE" \
  --users "$BENCH_USERS" --user-prefix "raw-$user_prefix" --concurrency "$raw_concurrency" \
  --warmup-secs "$BENCH_WARMUP_SECS" --duration-secs "$BENCH_SECS" >"$RAW/timeline-raw.json"

# Peak sustainable post rate: what the API accepts, or what the worker can fan out.
rate=$(python3 -c '
import json, sys
post = json.load(open(sys.argv[1]))
peak = min(post["posts_per_sec"], post["deliveries_per_sec"] / int(sys.argv[2]))
print(max(1, int(peak / 2)))' "$RAW/timeline-post.json" "$BENCH_FOLLOWS")
posts=$(awk -v r="$rate" -v s="$BENCH_LAG_SECS" 'BEGIN { printf "%d", r * s }')
log "timeline: fan-out lag at $rate posts/s (half the peak), $posts posts"
capctl fanout --users 200 --follows "$BENCH_FOLLOWS" --posts "$posts" --rate "$rate" \
  --timeout-secs 120 >"$RAW/timeline-lag.json" || true

for c in $BENCH_READ_CONCURRENCY; do
  for consistency in one quorum; do
    log "timeline: reads at $consistency, $c in flight"
    capctl read-load --user-prefix "$user_prefix" --users "$BENCH_USERS" --consistency "$consistency" \
      --concurrency "$c" --warmup-secs "$BENCH_WARMUP_SECS" \
      --duration-secs "$BENCH_SECS" >"$RAW/timeline-read-$consistency-c$c.json"
  done
done
peak_rss_mb "$timeline_pid" >"$RAW/rss-timeline"
peak_rss_mb "$worker_pid" >"$RAW/rss-timeline-worker"
stop "$worker_pid"
stop "$timeline_pid"

# ---------------------------------------------------------------- report
elapsed=$(($(date +%s) - started_at))
python3 "$BENCH_DIR/report.py" "$RAW" "$elapsed" >"$OUT_DIR/latest.md"
cat "$OUT_DIR/latest.md"
log "written to bench/results/latest.md (raw outputs in bench/results/raw/) in ${elapsed} s"
