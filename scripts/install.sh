#!/usr/bin/env bash
# scripts/install.sh [--lab] — install what the local stack (and, with --lab, the CAP lab)
# needs; only what is missing.
#
# apt (Debian): postgresql, maven, curl, python3 (and nats-server when there is no Go). Java 17+
# must already be there.
# nats-server $NATS_VERSION: built with `go install` from the Go module proxy into
# $CAP_CACHE_DIR/nats-server-<version> (Debian's 2.9 cannot sync every JetStream write
# before acknowledging it, `sync_interval: always`, which needs 2.10 or newer).
# Cassandra $CASSANDRA_VERSION: Maven Central has no binary distribution for 5.0, so we fetch
# cassandra-all and its runtime dependencies into $CAP_CACHE_DIR/cassandra-<version>/lib
# (outside the clone, reused by every clone on this machine). Idempotent and quiet on re-runs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export DEBIAN_FRONTEND=noninteractive

install_packages() {
  local missing=()
  pg_bindir >/dev/null || missing+=(postgresql)
  [[ -x "$NATS_SERVER" ]] || command -v go >/dev/null || missing+=(nats-server)
  command -v mvn >/dev/null || missing+=(maven)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  [[ ${#missing[@]} -gt 0 ]] || return 0
  [[ $EUID -eq 0 ]] || die "missing ${missing[*]}: run as root or install them yourself"
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # No system-wide "main" cluster on 5432: start.sh runs a private one under .local/.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/cap-services.conf
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
  NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
}

fetch_nats() {
  local tmp
  [[ -x "$NATS_HOME/bin/nats-server" ]] && return 0
  if ! command -v go >/dev/null; then
    warn "nats: no go to build nats-server $NATS_VERSION; start.sh will run $NATS_SERVER, which may not sync each write"
    return 0
  fi
  log "nats: building nats-server $NATS_VERSION (go install) into $NATS_HOME"
  mkdir -p "$CAP_CACHE_DIR"
  tmp=$(mktemp -d "$CAP_CACHE_DIR/.nats-server-$NATS_VERSION.XXXXXX")
  chmod 755 "$tmp"
  if ! GOBIN="$tmp/bin" go install "github.com/nats-io/nats-server/v2@v$NATS_VERSION" >"$tmp/go.log" 2>&1; then
    tail -n 30 "$tmp/go.log" >&2
    rm -rf "$tmp"
    die "nats: go install nats-server $NATS_VERSION failed"
  fi
  rm -f "$tmp/go.log"
  rm -rf "$NATS_HOME"
  mv "$tmp" "$NATS_HOME"
  log "nats: $("$NATS_HOME/bin/nats-server" --version) in $NATS_HOME"
}

check_java() {
  local version major
  command -v "$JAVA" >/dev/null || die "Java 17+ is required (for Cassandra) but '$JAVA' was not found; install a JDK 17 (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
  version=$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)
  major=${version%%.*}
  [[ "$major" == 1 ]] && major=$(cut -d. -f2 <<<"$version")   # 1.8.0_x -> 8
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "Java 17+ is required, '$JAVA' is version '${version:-unknown}'; set JAVA_HOME to a JDK 17"
  [[ "$major" -eq 17 ]] || warn "Cassandra $CASSANDRA_VERSION supports Java 11 and 17; '$JAVA' is $version"
}

fetch_cassandra() {
  [[ -f "$CASSANDRA_HOME/.complete" ]] && return 0
  log "fetching cassandra-all $CASSANDRA_VERSION + runtime dependencies from Maven Central into $CASSANDRA_HOME"
  mkdir -p "$CAP_CACHE_DIR"
  FETCH_TMP=$(mktemp -d "$CAP_CACHE_DIR/.cassandra-$CASSANDRA_VERSION.XXXXXX")
  trap 'rm -rf "$FETCH_TMP"' EXIT
  chmod 755 "$FETCH_TMP"
  cat >"$FETCH_TMP/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.capservices</groupId>
  <artifactId>cassandra-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  if ! (cd "$FETCH_TMP" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies \
          -DoutputDirectory="$FETCH_TMP/lib" -DincludeScope=runtime >"$FETCH_TMP/mvn.log" 2>&1); then
    tail -n 30 "$FETCH_TMP/mvn.log" >&2
    die "mvn could not fetch cassandra-all $CASSANDRA_VERSION"
  fi
  [[ -f "$FETCH_TMP/lib/cassandra-all-$CASSANDRA_VERSION.jar" ]] || die "cassandra-all-$CASSANDRA_VERSION.jar missing after mvn"
  rm -f "$FETCH_TMP/mvn.log"
  rm -rf "$CASSANDRA_HOME"
  mv "$FETCH_TMP" "$CASSANDRA_HOME"
  trap - EXIT
  echo "cassandra-all $CASSANDRA_VERSION: $(find "$CASSANDRA_HOME/lib" -name '*.jar' | wc -l) jars, fetched $(date -u +%FT%TZ)" \
    >"$CASSANDRA_HOME/.complete"
  log "cassandra $CASSANDRA_VERSION ready: $(cat "$CASSANDRA_HOME/.complete")"
}

# The lab (scripts/lab.sh) also needs nft (partitions), unshare/setpriv (util-linux, always
# there on Debian), ip (iproute2), Go (its linearizability checker, porcupine), and for its
# highly available PostgreSQL: etcd, HAProxy (Debian) and Patroni (PyPI, in a venv of its own).
install_lab_packages() {
  local missing=() guard=
  command -v nft >/dev/null || [[ -x /usr/sbin/nft ]] || missing+=(nftables)
  command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
  command -v go >/dev/null || missing+=(golang-go)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  [[ ${#missing[@]} -gt 0 ]] || return 0
  [[ $EUID -eq 0 ]] || die "the lab needs ${missing[*]}: run as root or install them yourself"
  # The packages' own services (etcd, haproxy) must not start on the host: the lab runs its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  log "apt-get install ${missing[*]} (for the lab)"
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
  if [[ -n "$guard" ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

# Patroni $PATRONI_VERSION (etcd v3 API, psycopg 3) in $PATRONI_HOME, built aside and moved in place.
fetch_patroni() {
  local tmp
  [[ -x "$PATRONI_HOME/bin/patroni" ]] && return 0
  log "lab: installing patroni $PATRONI_VERSION from PyPI into $PATRONI_HOME"
  mkdir -p "$(dirname "$PATRONI_HOME")"
  tmp=$(mktemp -d "$(dirname "$PATRONI_HOME")/.patroni.XXXXXX")
  chmod 755 "$tmp"
  # The system's Python: one under root's home (pyenv) is out of the postgres user's reach.
  local python=/usr/bin/python3
  [[ -x "$python" ]] || python=$(command -v python3)
  "$python" -m venv "$tmp" >/dev/null 2>&1 || die "$python -m venv failed (apt-get install python3-venv)"
  if ! "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check \
      "patroni[etcd3,psycopg3]==$PATRONI_VERSION" >"$tmp/pip.log" 2>&1; then
    tail -n 30 "$tmp/pip.log" >&2
    rm -rf "$tmp"
    die "pip install patroni $PATRONI_VERSION failed"
  fi
  rm -rf "$PATRONI_HOME"
  mv "$tmp" "$PATRONI_HOME"
  # The venv's scripts name the temporary directory in their shebang: call them through python.
  log "lab: $("$PATRONI_HOME/bin/python" -m patroni --version 2>&1 | tail -n1)"
}

install_packages
if [[ " $* " == *" --lab "* ]]; then install_lab_packages; fetch_patroni; fi
fetch_nats
check_java
fetch_cassandra
