#!/usr/bin/env bash
# scripts/start.sh [all|postgres|nats|cassandra]... — start the local servers, loopback only.
#
# A server that already answers on its port is reused (no pid file: stop.sh leaves it alone).
# Otherwise it is started in the background with data under .local/<name>, its log under
# .local/log/ and a pid file under .local/run/. Does not wait for readiness: see wait.sh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# running NAME PORT [ADDRESS] — true (and says why) if NAME needs no start.
running() {
  local pid address=${3:-127.0.0.1}
  if pid=$(our_pid "$1"); then log "$1: already running (started by us, pid $pid)"; return 0; fi
  rm -f "$(pid_file "$1")"   # stale
  if port_open "$address" "$2"; then log "$1: something already answers on $address:$2, reusing it"; return 0; fi
  return 1
}

# The postgres user must be able to reach its data directory: add o+x where it cannot.
make_traversable() {
  local dir=$1
  while [[ "$dir" != / ]]; do
    dir=$(dirname "$dir")
    if ! runuser -u postgres -- test -x "$dir"; then
      log "postgres: chmod o+x $dir (so the postgres user can reach .local)"
      chmod o+x "$dir"
    fi
  done
}

ensure_database() {
  local bin=$1 psql
  psql=("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -w -X -qAt)
  if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != 1 ]]; then
    "${psql[@]}" -c "CREATE DATABASE \"$PG_DATABASE\"" >/dev/null
    log "postgres: created database $PG_DATABASE"
  fi
}

start_postgres() {
  local bin data="$LOCAL_DIR/postgres" sock="$LOCAL_DIR/pgsock" logf="$LOG_DIR/postgres.log"
  bin=$(pg_bindir) || die "postgres: server binaries not found; run scripts/install.sh"
  if running postgres "$PG_PORT"; then
    ensure_database "$bin" || warn "postgres: could not ensure database $PG_DATABASE as user postgres (trust) on port $PG_PORT"
    return 0
  fi
  mkdir -p "$data" "$sock"
  touch "$logf"
  if [[ $EUID -eq 0 ]]; then
    chown postgres:postgres "$data" "$sock" "$logf"
    make_traversable "$data"
  fi
  chmod 700 "$data"
  if [[ ! -s "$data/PG_VERSION" ]]; then
    log "postgres: initdb $data"
    as_pg "$bin/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >>"$logf" 2>&1 \
      || { show_log_tail postgres; die "postgres: initdb failed"; }
  fi
  log "postgres: starting on 127.0.0.1:$PG_PORT"
  as_pg "$bin/pg_ctl" -D "$data" -l "$logf" -w -t "$PG_WAIT_TIMEOUT" \
    -o "-p $PG_PORT -k '$sock' -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
    || { show_log_tail postgres; die "postgres: pg_ctl start failed"; }
  head -n1 "$data/postmaster.pid" >"$(pid_file postgres)"
  ensure_database "$bin"
}

# nats_syncs_always VERSION — true if nats-server VERSION can sync every JetStream write.
nats_syncs_always() {
  [[ -n "$1" && "$(printf '%s\n' "$NATS_SYNC_MIN_VERSION" "$1" | sort -V | head -n1)" == "$NATS_SYNC_MIN_VERSION" ]]
}

start_nats() {
  local dir="$LOCAL_DIR/nats" conf="$LOCAL_DIR/nats/nats.conf" version drop=()
  running nats "$NATS_PORT" && return 0
  [[ -x "$NATS_SERVER" ]] || die "nats: nats-server not found; run scripts/install.sh"
  mkdir -p "$dir"
  version=$("$NATS_SERVER" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
  if ! nats_syncs_always "$version"; then
    warn "nats: nats-server ${version:-of unknown version} ($NATS_SERVER) cannot sync each JetStream write before acknowledging it (needs $NATS_SYNC_MIN_VERSION+): a host crash can lose messages acknowledged in the last minute; scripts/install.sh builds $NATS_VERSION"
    drop=(-e '/sync_interval:/d')
  fi
  sed -e "s|@PORT@|$NATS_PORT|g" -e "s|@MONITOR_PORT@|$NATS_MONITOR_PORT|g" \
    -e "s|@LOG_FILE@|$LOG_DIR/nats.log|g" -e "s|@STORE_DIR@|$dir|g" "${drop[@]}" \
    "$SCRIPTS_DIR/nats.conf.in" >"$conf"
  log "nats: starting ${version:-?} on 127.0.0.1:$NATS_PORT (monitor 127.0.0.1:$NATS_MONITOR_PORT, JetStream, config $conf)"
  # Both nats-server (log_file) and the redirect append to the same log.
  # shellcheck disable=SC2094
  setsid "$NATS_SERVER" -c "$conf" </dev/null >>"$LOG_DIR/nats.log" 2>&1 &
  echo $! >"$(pid_file nats)"
}

start_cassandra() {
  local dir="$LOCAL_DIR/cassandra" conf="$LOCAL_DIR/cassandra/conf" opts
  running cassandra "$CASSANDRA_PORT" "$CASSANDRA_ADDRESS" && return 0
  [[ -f "$CASSANDRA_HOME/.complete" ]] || die "cassandra: $CASSANDRA_VERSION not fetched; run scripts/install.sh"
  mkdir -p "$conf"
  sed -e "s|@DIR@|$dir|g" -e "s|@CQL_PORT@|$CASSANDRA_PORT|g" -e "s|@STORAGE_PORT@|$CASSANDRA_STORAGE_PORT|g" \
    -e "s|@LISTEN_ADDRESS@|$CASSANDRA_ADDRESS|g" -e "s|@SEEDS@|$CASSANDRA_SEEDS|g" \
    -e "s|@NUM_TOKENS@|$CASSANDRA_NUM_TOKENS|g" -e "s|@SNITCH@|$CASSANDRA_SNITCH|g" \
    "$SCRIPTS_DIR/cassandra.yaml.in" >"$conf/cassandra.yaml"
  if [[ -n "$CASSANDRA_EXTRA_YAML" ]]; then cat "$CASSANDRA_EXTRA_YAML" >>"$conf/cassandra.yaml"; fi
  # GossipingPropertyFileSnitch reads the node's place from here (one data centre, one rack).
  printf 'dc=datacenter1\nrack=rack1\n' >"$conf/cassandra-rackdc.properties"
  cp "$SCRIPTS_DIR/cassandra-logback.xml" "$conf/logback.xml"
  mapfile -t opts < <(grep -Ev '^[[:space:]]*(#|$)' "$SCRIPTS_DIR/cassandra-jvm17.options")
  opts+=(
    "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP"
    "-Dcassandra.config=file://$conf/cassandra.yaml"
    "-Dlogback.configurationFile=$conf/logback.xml"
    "-Dcassandra.storagedir=$dir"
    "-Dcassandra.logdir=$LOG_DIR"
    "-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT"   # JMX on loopback only (for nodetool)
    "-Dcassandra.skip_wait_for_gossip_to_settle=0"
    "-Dcassandra-foreground=yes"                       # keep stdout/stderr (-> cassandra.stdout.log)
  )
  local as_group=()
  if [[ -n "$CASSANDRA_GROUP" ]]; then as_group=(setpriv "--regid=$CASSANDRA_GROUP" --clear-groups); fi
  log "cassandra: starting $CASSANDRA_VERSION on $CASSANDRA_ADDRESS:$CASSANDRA_PORT (heap $CASSANDRA_HEAP)"
  setsid "${as_group[@]}" "$JAVA" "${opts[@]}" -cp "$conf:$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >>"$LOG_DIR/cassandra.stdout.log" 2>&1 &
  echo $! >"$(pid_file cassandra)"
}

mkdir -p "$RUN_DIR" "$LOG_DIR"
selected=$(services "$@")   # dies on an unknown name
for svc in $selected; do
  "start_$svc"
done
