#!/usr/bin/env bash
# The test command: sets everything up, starts (or reuses) the real OpenSearch and Redis
# on loopback, runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -n "${CI:-}" ]; then
  # On CI leave nothing running behind; locally the servers stay up for the next run.
  trap '.venv/bin/bestmatch devstack down || true' EXIT
fi
.venv/bin/mypy  # the type check ([tool.mypy] in pyproject.toml: app, feature_jobs, bestmatch)
.venv/bin/python -m pytest "$@"
