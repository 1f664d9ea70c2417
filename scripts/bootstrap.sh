#!/usr/bin/env bash
# Set up everything bestmatch needs on a fresh Debian machine; quick when already done.
#   - system packages: redis-server, maven (fetches the OpenSearch jars), a JDK if none
#   - uv, then .venv with the project and its dev extras (re-synced when pyproject changes)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[bootstrap] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v mvn >/dev/null || missing+=(maven)
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

extras="dev"
command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] || extras="dev,jdk"
stamp="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
if [ "$(cat .venv/.bootstrap-stamp 2>/dev/null)" != "$stamp" ]; then
  say "creating .venv (extras: $extras)"
  [ -x .venv/bin/python ] || "$PY" -m uv venv -q --python "$PY" .venv
  "$PY" -m uv pip install -q --python .venv/bin/python -e ".[$extras]"
  echo "$stamp" > .venv/.bootstrap-stamp
fi
