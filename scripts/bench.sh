#!/usr/bin/env bash
# scripts/bench.sh — `make bench`: the services against the local stack, next to
# the same work without the service in the way, in one markdown table.
#
#   inventory  per strategy (optimistic, pessimistic, guarded): a release-built
#              `inventory` on a spare port with a fresh database; `capctl
#              reserve-load` on one hot product and on 10,000 spread ones at each
#              concurrency; next to it pgbench running the service's own statements
#              (bench/pgbench/<strategy>.sql) at the same concurrency against a
#              database with the same schema and products. First, the
#              single-statement ceiling: pgbench running only the guarded
#              `UPDATE … WHERE sku = $1 AND available >= 1` (bench/pgbench/ceiling.sql,
#              autocommit, prepared), hot and spread, at each concurrency.
#   flash_sale `capctl flash-sale` (BENCH_FLASH_STOCK units, BENCH_FLASH_BUYERS
#              buyers, BENCH_FLASH_CONCURRENCY in flight) per strategy, with
#              RESERVATION_COALESCING on and off (an inventory started for each
#              cell on a fresh database), then BENCH_FLASH_REPLICAS inventories on
#              one database with the buyers spread over them; oversold checked in
#              the database after each.
#   timeline   `timeline` and `timeline-worker` on spare ports with their own
#              keyspace and stream; `capctl post-load` (accept rate, and the
#              worker's rows/s while it drains the backlog) next to `capctl
#              cql-insert-loop` (the same INSERTs straight to Cassandra, at the
#              worker's concurrency); `capctl fanout --rate` at half the peak
#              sustainable post rate (lag); `capctl read-load` at one and quorum.
#   relay      `timeline` and `timeline-worker` on a nats-server of their own
#              (spare port, temporary store): one author and its followers
#              (`capctl relay-catchup graph`), nats-server stopped, posts that
#              all wait in the outbox (`relay-catchup post`), nats-server started
#              again while `relay-catchup measure` times the relay re-publishing
#              them and every follower converging.
#   celebrity  an author with BENCH_CELEBRITY_FOLLOWERS followers written
#              straight to Cassandra (`capctl follower-load`) in a keyspace of
#              its own; `capctl celebrity-reads` (post → seen by sampled
#              followers, rows the worker wrote) and `capctl read-load` on them.
#   memory     VmHWM of every service process.
#   charts     `bench-charts` draws SVG charts from the raw results into
#              docs/charts/ (BENCH_CHARTS_DIR): throughput against requests in
#              flight with the ceiling, the flash sale's latency percentiles and
#              holds/s, the fan-out lag distribution.
#
# Bearer tokens: the services verify them with the development key pair in .local/auth
# (created if missing, `capctl dev-keys`), and capctl mints its simulated users' tokens with
# its signing key (CAPCTL_SIGNING_KEY); each buyer, author or reader is a subject of its own,
# under the per-subject write limit. The relay section's single author posting as fast as it
# can is the one exception: that API gets RATE_LIMIT_WRITES_PER_SECOND/BURST of 1,000,000.
#
# Writes bench/results/latest.md (and the raw outputs under bench/results/raw/),
# prints the table. Benchmarks report: a missed target never fails; only a broken
# bench does. Everything goes to 127.0.0.1; every loop is bounded in time.
#
# Knobs (environment): BENCH_SECS (measured seconds per cell, 10),
# BENCH_WARMUP_SECS (1), BENCH_STRATEGIES, BENCH_CONCURRENCY ("1 16 64"),
# BENCH_SPREAD_SKUS (10000), BENCH_USERS (1000), BENCH_FOLLOWS (30),
# BENCH_POST_SECS (5), BENCH_POST_CONCURRENCY (32), BENCH_READ_CONCURRENCY ("4 16"), BENCH_LAG_SECS (15),
# BENCH_RELAY_POSTS (3000), BENCH_RELAY_FOLLOWERS (50), BENCH_CELEBRITY_FOLLOWERS (1000000),
# BENCH_CELEBRITY_SAMPLE (200), BENCH_CELEBRITY_POSTS (5), BENCH_CELEBRITY_READ_CONCURRENCY (16),
# BENCH_FLASH_STOCK (10000), BENCH_FLASH_BUYERS (100000), BENCH_FLASH_CONCURRENCY (64),
# BENCH_FLASH_STRATEGIES (BENCH_STRATEGIES), BENCH_FLASH_COALESCING ("on off"),
# BENCH_FLASH_REPLICAS (2; below 2 skips the replicated cell), BENCH_FLASH_REPLICA_STRATEGY
# (optimistic), BENCH_CHARTS_DIR (docs/charts),
# BENCH_ONLY (the sections to run, in this order: "inventory flash_sale timeline relay celebrity
# replication"; replication runs the CAP lab's pg-sync-cost scenario and needs root),
# BENCH_SKIP_BUILD=1, BENCH_SKIP_STACK=1. The relay section's API takes OUTBOX_RELAY_AFTER_SECS,
# OUTBOX_RELAY_INTERVAL_MS and OUTBOX_SHARDS from the environment (the service's defaults otherwise).
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
BENCH_RELAY_POSTS="${BENCH_RELAY_POSTS:-3000}"
BENCH_RELAY_FOLLOWERS="${BENCH_RELAY_FOLLOWERS:-50}"
BENCH_CELEBRITY_FOLLOWERS="${BENCH_CELEBRITY_FOLLOWERS:-1000000}"
BENCH_CELEBRITY_SAMPLE="${BENCH_CELEBRITY_SAMPLE:-200}"
BENCH_CELEBRITY_POSTS="${BENCH_CELEBRITY_POSTS:-5}"
BENCH_CELEBRITY_READ_CONCURRENCY="${BENCH_CELEBRITY_READ_CONCURRENCY:-16}"
BENCH_FLASH_STOCK="${BENCH_FLASH_STOCK:-10000}"
BENCH_FLASH_BUYERS="${BENCH_FLASH_BUYERS:-100000}"
BENCH_FLASH_CONCURRENCY="${BENCH_FLASH_CONCURRENCY:-64}"
BENCH_FLASH_STRATEGIES="${BENCH_FLASH_STRATEGIES:-$BENCH_STRATEGIES}"
BENCH_FLASH_COALESCING="${BENCH_FLASH_COALESCING:-on off}"
BENCH_FLASH_REPLICAS="${BENCH_FLASH_REPLICAS:-2}"
BENCH_FLASH_REPLICA_STRATEGY="${BENCH_FLASH_REPLICA_STRATEGY:-optimistic}"
BENCH_SECTIONS=(inventory flash_sale timeline relay celebrity replication)
BENCH_ONLY="${BENCH_ONLY:-${BENCH_SECTIONS[*]}}"
for section in $BENCH_ONLY; do
  [[ " ${BENCH_SECTIONS[*]} " == *" $section "* ]] || die "unknown BENCH_ONLY section '$section' (expected: ${BENCH_SECTIONS[*]})"
done
# The relay section's outbox settings: the service's defaults unless set.
OUTBOX_RELAY_AFTER_SECS="${OUTBOX_RELAY_AFTER_SECS:-5}"
OUTBOX_RELAY_INTERVAL_MS="${OUTBOX_RELAY_INTERVAL_MS:-1000}"
OUTBOX_SHARDS="${OUTBOX_SHARDS:-8}"
# Must match the worker's defaults below (FANOUT_CONCURRENCY, FANOUT_WRITE_CONCURRENCY).
FANOUT_CONCURRENCY=16
FANOUT_WRITE_CONCURRENCY=32

BENCH_DIR="$ROOT/bench"
OUT_DIR="$BENCH_DIR/results"
RAW="$OUT_DIR/raw"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CHARTS_DIR="${BENCH_CHARTS_DIR:-$ROOT/docs/charts}"
PG_BIN=$(pg_bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
export PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres
PSQL=("$PG_BIN/psql" -X -q -w -v ON_ERROR_STOP=1)
KEYSPACE=capbench
# The celebrity's graph lives in a keyspace of its own: its celebrity set must
# not add work to the other timeline benches' reads.
CELEBRITY_KEYSPACE=capbench_celebrity

started_at=$(date +%s)
pids=()
service_dbs=()
temp_dirs=()

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
  for dir in "${temp_dirs[@]}"; do
    rm -rf "$dir"
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
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget "$1"
}

# forget PID — a process we started that has ended: no longer one to stop at exit.
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
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

# start_timeline LOG_PREFIX ENV=VALUE... — starts a release `timeline` and `timeline-worker`
# on spare ports with that environment (the API also gets "${api_extra[@]}"), and waits until
# both are ready; sets api, worker (base URLs), api_pid and worker_pid.
start_timeline() {
  local prefix=$1 api_port worker_port
  shift
  api_port=$(free_port)
  worker_port=$(free_port)
  start timeline "$RAW/${prefix}timeline.log" "$@" "${api_extra[@]}" TIMELINE_ADDR="127.0.0.1:$api_port"
  api_pid=$started_pid
  api="http://127.0.0.1:$api_port"
  wait_ready "$api" "$api_pid"
  start timeline-worker "$RAW/${prefix}timeline-worker.log" "$@" \
    TIMELINE_WORKER_ADDR="127.0.0.1:$worker_port" \
    FANOUT_CONCURRENCY=$FANOUT_CONCURRENCY FANOUT_WRITE_CONCURRENCY=$FANOUT_WRITE_CONCURRENCY
  worker_pid=$started_pid
  worker="http://127.0.0.1:$worker_port"
  wait_ready "$worker" "$worker_pid"
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
# The key pair every service verifies with and capctl mints with (exported: every process
# started below inherits it).
"$BIN/capctl" dev-keys --dir "$LOCAL_DIR/auth" >/dev/null
export AUTH_VERIFYING_KEY_FILE="$LOCAL_DIR/auth/verifying-key.pem"
export CAPCTL_SIGNING_KEY="$LOCAL_DIR/auth/signing-key.pem"
tools=(curl python3)
[[ " $BENCH_ONLY " == *" inventory "* ]] && tools+=("$PG_BIN/pgbench")
[[ " $BENCH_ONLY " == *" flash_sale "* ]] && tools+=("$BIN/inventory")
[[ " $BENCH_ONLY " == *" relay "* ]] && tools+=("$NATS_SERVER")
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is needed by the benchmarks"
done
rm -rf "$RAW"
mkdir -p "$RAW"
{
  echo "{\"started\": \"$(date -u +%FT%TZ)\", \"cpus\": $(nproc), \"secs\": $BENCH_SECS,"
  echo " \"sections\": \"$BENCH_ONLY\","
  echo " \"cpu_model\": \"$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)\","
  echo " \"postgres\": \"$("${PSQL[@]}" -d postgres -Atc 'SHOW server_version')\"}"
} >"$RAW/meta.json"

# ---------------------------------------------------------------- inventory
# migrated_db NAME — a fresh database with the service's schema and the bench products.
migrated_db() {
  local migration
  fresh_db "$1"
  for migration in "$ROOT"/migrations/postgres/*.sql; do
    "${PSQL[@]}" -d "$1" -f "$migration"
  done
  seed "$1"
}

# bench_ceiling — the single-statement ceiling: pgbench running only the guarded UPDATE
# (bench/pgbench/ceiling.sql), hot and spread, at each concurrency; one JSON per cell.
bench_ceiling() {
  local db=capbench_ceiling workload prefix skus c cell threads
  service_dbs+=("$db")
  log "inventory ceiling: a fresh database with the products"
  migrated_db "$db"
  for workload in hot spread; do
    if [[ $workload == hot ]]; then prefix=hot- skus=1; else prefix=spread- skus=$BENCH_SPREAD_SKUS; fi
    for c in $BENCH_CONCURRENCY; do
      cell="$RAW/ceiling-$workload-c$c"
      log "inventory ceiling ($workload, $c clients): pgbench, the guarded UPDATE alone"
      threads=$((c < 2 ? c : 2))
      "$PG_BIN/pgbench" -n -M prepared -c "$c" -j "$threads" -T "$BENCH_SECS" \
        -f "$BENCH_DIR/pgbench/ceiling.sql" -D prefix="$prefix" -D skus="$skus" "$db" \
        >"$cell.pgbench.txt" 2>&1 || { cat "$cell.pgbench.txt" >&2; die "pgbench failed"; }
      python3 - "$cell.pgbench.txt" "$workload" "$c" >"$cell.json" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
tps = re.search(r"tps = ([\d.]+)", text)
done = re.search(r"number of transactions actually processed: (\d+)", text)
latency = re.search(r"latency average = ([\d.]+) ms", text)
print(json.dumps({
    "workload": sys.argv[2], "clients": int(sys.argv[3]),
    "tps": float(tps.group(1)) if tps else None,
    "transactions": int(done.group(1)) if done else None,
    "latency_avg_ms": float(latency.group(1)) if latency else None,
}))
PY
    done
  done
  "$PG_BIN/dropdb" -w --if-exists "$db"
}

# bench_inventory — the ceiling, then per strategy: the service next to pgbench, hot and
# spread, at each concurrency.
bench_inventory() {
  bench_ceiling
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
    migrated_db "$pgbench_db"
    "${PSQL[@]}" -d "$pgbench_db" -f "$BENCH_DIR/pgbench/setup.sql"

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
}

# ---------------------------------------------------------------- flash sale
# flash_sale_cell STRATEGY COALESCING REPLICAS — that many inventories with that strategy
# and RESERVATION_COALESCING on a fresh database, `capctl flash-sale` spread over them,
# then the database's own count of what was taken; writes $RAW/flash-sale-<cell>.json.
flash_sale_cell() {
  local strategy=$1 coalescing=$2 replicas=$3 i port url db name
  local urls=() replica_pids=()
  name="flash-sale-$strategy-$coalescing-r$replicas"
  db="capbench_flash_$strategy"
  service_dbs+=("$db")
  fresh_db "$db"
  for ((i = 0; i < replicas; i++)); do
    port=$(free_port)
    url="http://127.0.0.1:$port"
    start inventory "$RAW/$name-$i.log" \
      RESERVATION_STRATEGY="$strategy" RESERVATION_COALESCING="$coalescing" \
      INVENTORY_ADDR="127.0.0.1:$port" DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db" \
      RUST_LOG=warn
    replica_pids+=("$started_pid")
    urls+=(--inventory-url "$url")
    wait_ready "$url" "$started_pid"
  done
  log "flash sale ($strategy, coalescing $coalescing, $replicas replica(s)): $BENCH_FLASH_BUYERS buyers, $BENCH_FLASH_STOCK units, $BENCH_FLASH_CONCURRENCY in flight"
  # It exits 1 when its invariant does not hold: recorded and reported, not fatal.
  capctl "${urls[@]}" flash-sale --stock "$BENCH_FLASH_STOCK" --buyers "$BENCH_FLASH_BUYERS" \
    --concurrency "$BENCH_FLASH_CONCURRENCY" >"$RAW/$name.capctl.json" \
    || warn "flash sale ($strategy, $coalescing, $replicas): capctl reported a violated invariant or failed"
  python3 - "$RAW/$name.capctl.json" "$strategy" "$coalescing" "$replicas" "$db" "$PG_BIN/psql" \
    "${RESERVATION_BATCH_MAX_SIZE:-}" "${RESERVATION_BATCH_WAIT_US:-}" >"$RAW/$name.json" <<'PY'
import json, subprocess, sys
path, strategy, coalescing, replicas, db, psql, batch_max, batch_wait = sys.argv[1:9]
try:
    report = json.load(open(path))
except (OSError, ValueError):
    report = None
cell = {"strategy": strategy, "coalescing": coalescing, "replicas": int(replicas),
        "batch_max_size": batch_max or None, "batch_wait_us": batch_wait or None,
        "report": report}
if report:
    # The database's word, not the service's: units taken beyond the stock received.
    skus = ",".join("'" + sku + "'" for sku in report["skus"])
    row = subprocess.run(
        [psql, "-X", "-w", "-At", "-F", " ", "-d", db, "-c",
         "SELECT COALESCE(SUM(GREATEST(reserved + sold - received, 0)), 0), "
         "COALESCE(SUM(reserved + sold), 0), count(*) FILTER (WHERE available < 0) "
         f"FROM products WHERE sku IN ({skus})"],
        check=True, capture_output=True, text=True).stdout.split()
    cell.update(oversold_db=int(row[0]), taken_db=int(row[1]), negative_available_db=int(row[2]))
print(json.dumps(cell))
PY
  for ((i = 0; i < ${#replica_pids[@]}; i++)); do
    peak_rss_mb "${replica_pids[$i]}" >"$RAW/rss-inventory-flash-$strategy-$coalescing-r$replicas-$i"
    stop "${replica_pids[$i]}"
  done
  "$PG_BIN/dropdb" -w --if-exists "$db"
}

# bench_flash_sale — every strategy with coalescing on and off, then the replicated cell.
bench_flash_sale() {
  local strategy coalescing
  for strategy in $BENCH_FLASH_STRATEGIES; do
    for coalescing in $BENCH_FLASH_COALESCING; do
      flash_sale_cell "$strategy" "$coalescing" 1
    done
  done
  if ((BENCH_FLASH_REPLICAS >= 2)); then
    flash_sale_cell "$BENCH_FLASH_REPLICA_STRATEGY" on "$BENCH_FLASH_REPLICAS"
  fi
}

# ---------------------------------------------------------------- timeline
# bench_timeline — post accept rate, fan-out vs the raw-driver loop, lag, reads.
bench_timeline() {
  log "timeline: services on their own keyspace ($KEYSPACE) and stream"
  local api worker api_pid worker_pid api_extra=()
  timeline_env=(
    CASSANDRA_NODES="127.0.0.1:$CASSANDRA_PORT" CASSANDRA_KEYSPACE="$KEYSPACE"
    NATS_URL="nats://127.0.0.1:$NATS_PORT" NATS_STREAM=CAPBENCH NATS_SUBJECT_PREFIX=capbench
    NATS_CONSUMER=capbench-fanout RUST_LOG=warn
  )
  start_timeline "" "${timeline_env[@]}"
  export CAPCTL_TIMELINE_URL="$api" CAPCTL_WORKER_URL="$worker"

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
  peak_rss_mb "$api_pid" >"$RAW/rss-timeline"
  peak_rss_mb "$worker_pid" >"$RAW/rss-timeline-worker"
  stop "$worker_pid"
  stop "$api_pid"
}

# ---------------------------------------------------------------- relay
# start_bench_nats PORT STORE LOG — a nats-server of the bench's own on 127.0.0.1:PORT,
# JetStream in STORE, syncing every write before its ack where the server can (as the
# local stack's does); waits until it listens and sets $started_pid.
start_bench_nats() {
  local port=$1 store=$2 logf=$3 version min="${NATS_SYNC_MIN_VERSION:-2.10.0}" i
  version=$("$NATS_SERVER" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
  {
    echo "listen: \"127.0.0.1:$port\""
    echo "jetstream {"
    echo "  store_dir: \"$store\""
    if [[ -n "$version" && "$(printf '%s\n' "$min" "$version" | sort -V | head -n1)" == "$min" ]]; then
      echo "  sync_interval: always"
    fi
    echo "}"
  } >"$store/nats.conf"
  "$NATS_SERVER" -c "$store/nats.conf" >>"$logf" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  for ((i = 0; i < 100; i++)); do
    port_open 127.0.0.1 "$port" && return 0
    kill -0 "$started_pid" 2>/dev/null || die "nats-server exited; see $logf"
    sleep 0.1
  done
  die "nats-server not listening on 127.0.0.1:$port after 10 s"
}

# bench_relay — posts accepted while NATS is down, then the outbox relay's catch-up.
bench_relay() {
  local nats_port store topic api worker relay_env api_extra
  local nats_pid api_pid worker_pid measure_pid graph post measure_args
  nats_port=$(free_port)
  store=$(mktemp -d "${TMPDIR:-/tmp}/capbench-nats.XXXXXX")
  temp_dirs+=("$store")
  log "relay: a nats-server of its own on 127.0.0.1:$nats_port, services on keyspace $KEYSPACE"
  start_bench_nats "$nats_port" "$store" "$RAW/relay-nats.log"
  nats_pid=$started_pid
  # The outbox is partitioned by subject prefix: a prefix of this run's own, so
  # rows an interrupted earlier run left behind are not relayed (and counted) now.
  topic="capbenchrelay$(date +%s)"
  relay_env=(
    CASSANDRA_NODES="127.0.0.1:$CASSANDRA_PORT" CASSANDRA_KEYSPACE="$KEYSPACE"
    NATS_URL="nats://127.0.0.1:$nats_port" NATS_STREAM=CAPBENCH_RELAY NATS_SUBJECT_PREFIX="$topic"
    NATS_CONSUMER=capbench-relay-fanout RUST_LOG=warn
  )
  # One author posts as fast as it can (what the section measures): no per-subject write limit
  # in its way.
  api_extra=(
    OUTBOX_RELAY_AFTER_SECS="$OUTBOX_RELAY_AFTER_SECS" OUTBOX_RELAY_INTERVAL_MS="$OUTBOX_RELAY_INTERVAL_MS"
    OUTBOX_SHARDS="$OUTBOX_SHARDS" RATE_LIMIT_WRITES_PER_SECOND=1000000 RATE_LIMIT_BURST=1000000
  )
  start_timeline relay- "${relay_env[@]}"
  echo "{\"relay_after_secs\": $OUTBOX_RELAY_AFTER_SECS, \"relay_interval_ms\": $OUTBOX_RELAY_INTERVAL_MS, \"shards\": $OUTBOX_SHARDS}" \
    >"$RAW/relay-config.json"

  log "relay: one author, $BENCH_RELAY_FOLLOWERS followers"
  graph="$RAW/relay-graph.json"
  capctl --timeline-url "$api" relay-catchup graph --followers "$BENCH_RELAY_FOLLOWERS" \
    --worker-url "$worker" >"$graph"
  log "relay: nats-server stopped; $BENCH_RELAY_POSTS posts at $BENCH_POST_CONCURRENCY in flight"
  stop "$nats_pid"
  post="$RAW/relay-post.json"
  capctl --timeline-url "$api" relay-catchup post --author "$(json_get "$graph" author)" \
    --posts "$BENCH_RELAY_POSTS" --concurrency "$BENCH_POST_CONCURRENCY" --worker-url "$worker" >"$post"
  # Every row is due for the relay when NATS returns: the figure is the
  # catch-up, not the rows ageing.
  sleep "$((OUTBOX_RELAY_AFTER_SECS + 1))"

  log "relay: nats-server started again; timing the catch-up"
  measure_args=(
    --user-prefix "$(json_get "$graph" user_prefix)" --followers "$BENCH_RELAY_FOLLOWERS"
    --posts "$(json_get "$post" accepted)" --relayed-before="$(json_get "$post" relayed_before)"
    --rows-before="$(json_get "$post" rows_before)" --nats-url "nats://127.0.0.1:$nats_port"
    --worker-url "$worker" --timeout-secs 300
  )
  capctl --timeline-url "$api" relay-catchup measure "${measure_args[@]}" >"$RAW/relay-measure.json" &
  measure_pid=$!
  pids+=("$measure_pid")
  # Let it start watching the port, so that its clock starts when NATS listens
  # (the report says so if it did not).
  sleep 0.3
  start_bench_nats "$nats_port" "$store" "$RAW/relay-nats.log"
  nats_pid=$started_pid
  wait "$measure_pid" || die "relay-catchup measure failed; see $RAW/relay-*.log"
  forget "$measure_pid"

  peak_rss_mb "$api_pid" >"$RAW/rss-timeline-relay"
  peak_rss_mb "$worker_pid" >"$RAW/rss-timeline-worker-relay"
  stop "$worker_pid"
  stop "$api_pid"
  stop "$nats_pid"
  rm -rf "$store"
}

# ---------------------------------------------------------------- celebrity
# bench_celebrity — an author with BENCH_CELEBRITY_FOLLOWERS followers: load, post → seen, reads.
bench_celebrity() {
  local n=$BENCH_CELEBRITY_FOLLOWERS threshold api worker celebrity_env api_extra=()
  local api_pid worker_pid author prefix c=$BENCH_CELEBRITY_READ_CONCURRENCY
  ((n >= 2)) || die "BENCH_CELEBRITY_FOLLOWERS must be at least 2"
  # The worker marks an author with more than FANOUT_CELEBRITY_THRESHOLD
  # followers (10,000 by default) on its first post; a smaller graph gets a
  # lower threshold so that its author is one too.
  threshold=$((n > 10000 ? 10000 : n / 2))
  celebrity_env=(
    CASSANDRA_NODES="127.0.0.1:$CASSANDRA_PORT" CASSANDRA_KEYSPACE="$CELEBRITY_KEYSPACE"
    NATS_URL="nats://127.0.0.1:$NATS_PORT" NATS_STREAM=CAPBENCH_CELEBRITY
    NATS_SUBJECT_PREFIX=capbenchceleb NATS_CONSUMER=capbench-celebrity-fanout
    FANOUT_CELEBRITY_THRESHOLD="$threshold" RUST_LOG=warn
  )
  log "celebrity: services on their own keyspace ($CELEBRITY_KEYSPACE) and stream"
  start_timeline celebrity- "${celebrity_env[@]}"
  echo "{\"threshold\": $threshold, \"refresh_ms\": ${TIMELINE_CELEBRITY_REFRESH_MS:-10000}}" \
    >"$RAW/celebrity-config.json"

  # Ids depend only on the size, so a second run of the same size rewrites the
  # same rows instead of adding a million more.
  author="star$n"
  prefix="fan$n-"
  log "celebrity: $n followers of $author, straight to Cassandra"
  capctl follower-load --cassandra-nodes "127.0.0.1:$CASSANDRA_PORT" \
    --cassandra-keyspace "$CELEBRITY_KEYSPACE" --author "$author" --follower-prefix "$prefix" \
    --followers "$n" >"$RAW/celebrity-load.json"
  log "celebrity: $BENCH_CELEBRITY_POSTS posts, each looked for by $BENCH_CELEBRITY_SAMPLE followers"
  capctl --timeline-url "$api" celebrity-reads --author "$author" --follower-prefix "$prefix" \
    --followers "$n" --sample "$BENCH_CELEBRITY_SAMPLE" --posts "$BENCH_CELEBRITY_POSTS" \
    --concurrency "$c" --worker-url "$worker" >"$RAW/celebrity-reads.json"
  log "celebrity: followers' timeline reads at $c in flight"
  capctl --timeline-url "$api" read-load --user-prefix "$prefix" --users "$n" --concurrency "$c" \
    --warmup-secs "$BENCH_WARMUP_SECS" --duration-secs "$BENCH_SECS" >"$RAW/celebrity-read.json"

  peak_rss_mb "$api_pid" >"$RAW/rss-timeline-celebrity"
  peak_rss_mb "$worker_pid" >"$RAW/rss-timeline-worker-celebrity"
  stop "$worker_pid"
  stop "$api_pid"
}

# The cost of synchronous replication: the same flash sale and spread workload on one
# PostgreSQL server and on the lab's 3-node Patroni cluster, in one run (the CAP lab's
# pg-sync-cost scenario: it needs root, for the lab's network namespace).
bench_replication() {
  if [[ $EUID -ne 0 ]]; then
    warn "replication: skipped (the CAP lab needs root)"
    return 0
  fi
  log "replication: the CAP lab's pg-sync-cost scenario (one server vs 3 nodes, synchronous)"
  "$SCRIPTS_DIR/lab.sh" --scenario pg-sync-cost >"$RAW/replication.md" 2>"$RAW/replication.log" \
    || warn "replication: the lab failed (see bench/results/raw/replication.*)"
}

# ---------------------------------------------------------------- run
for section in "${BENCH_SECTIONS[@]}"; do
  if [[ " $BENCH_ONLY " == *" $section "* ]]; then "bench_$section"; fi
done

# ---------------------------------------------------------------- report
elapsed=$(($(date +%s) - started_at))
python3 "$BENCH_DIR/report.py" "$RAW" "$elapsed" >"$OUT_DIR/latest.md"
cat "$OUT_DIR/latest.md"
log "charts from the raw results into ${CHARTS_DIR#"$ROOT"/}/"
"$BIN/bench-charts" "$RAW" "$CHARTS_DIR" || warn "bench-charts failed: no charts"
log "written to bench/results/latest.md (raw outputs in bench/results/raw/) in ${elapsed} s"
