#!/usr/bin/env bash
# Set up what bestmatch needs on a fresh Debian machine; quick when already done.
#   bootstrap.sh        everything for the tests and real servers: redis-server, maven (for
#                       the OpenSearch jars), a JDK if none; uv; .venv with the dev extras
#   bootstrap.sh demo   the embedded demo only: uv; .venv with the demo extra (no servers,
#                       no torch)
# .venv is re-synced when pyproject.toml changes; a dev .venv also serves the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[bootstrap] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mode=${1:-dev}
missing=()
if [ "$mode" = dev ]; then
  command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  command -v mvn >/dev/null || missing+=(maven)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt)"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -m uv --version >/dev/null 2>&1; then
  say "installing uv"
  "$PY" -m pip install -q uv 2>/dev/null || "$PY" -m pip install -q --user uv
fi

extras="$mode"
[ "$mode" = dev ] && { command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] || extras="dev,jdk"; }
hash="$(cat pyproject.toml | sha256sum | cut -c1-16)"
stamp="$hash-$extras"
have="$(cat .venv/.bootstrap-stamp 2>/dev/null || true)"
if [ "$mode" = demo ] && [[ "$have" == "$hash-dev"* ]]; then
  stamp="$have"  # the dev extras include the demo's
fi
if [ "$have" != "$stamp" ]; then
  say "creating .venv (extras: $extras)"
  [ -x .venv/bin/python ] || "$PY" -m uv venv -q --python "$PY" .venv
  "$PY" -m uv pip install -q --python .venv/bin/python -e ".[$extras]"
  echo "$stamp" > .venv/.bootstrap-stamp
fi
