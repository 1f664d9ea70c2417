#!/usr/bin/env bash
# The run command: sets everything up, starts (or reuses) OpenSearch and Redis, builds a
# demo catalog, features and the baseline model, then serves on http://127.0.0.1:8000.
# Extra arguments go to `bestmatch demo` (e.g. --listings 100000 --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/bestmatch demo --serve "$@"
