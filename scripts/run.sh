#!/usr/bin/env bash
# The run command: sets up what is missing, builds the demo marketplace (simulated
# Japanese/English listings and search logs, the embedded index, item features from
# the logs, the shipped ranking model) and serves it on http://127.0.0.1:8000 with no
# server to install. A second run reuses what is built. Extra arguments go to
# `bestmatch demo` (e.g. --listings 100000 --port 8080). With BESTMATCH_ENGINE /
# BESTMATCH_FEATURE_STORE set to real backends it starts the dev OpenSearch and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BESTMATCH_ENGINE:-embedded}" = embedded ] && [ "${BESTMATCH_FEATURE_STORE:-snapshot}" = snapshot ]; then
  bash scripts/bootstrap.sh demo
else
  bash scripts/bootstrap.sh
fi
exec .venv/bin/bestmatch demo --serve "$@"
