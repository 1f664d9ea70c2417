"""The real `bestmatch serve` process, configured only by environment, over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from devstack import free_port

pytestmark = pytest.mark.integration


def test_bestmatch_serve_answers_over_http(engine_url, redis_url, alias, models_dir):
    port = free_port()
    env = {**os.environ, "BESTMATCH_ENGINE": "opensearch", "BESTMATCH_ENGINE_URL": engine_url,
           "BESTMATCH_FEATURE_STORE": "redis", "BESTMATCH_REDIS_URL": redis_url,
           "BESTMATCH_INDEX_ALIAS": alias, "BESTMATCH_MODELS_DIR": str(models_dir),
           "BESTMATCH_MODEL_NAME": "baseline", "BESTMATCH_ONNX_DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "bestmatch.cli", "serve", "--port", str(port)],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "service exited"
            try:
                if httpx.get(f"{url}/readyz").status_code in (200, 503):
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").json()["status"] in ("ready", "degraded")
        resp = httpx.get(f"{url}/v1/search", params={"query": "Nintendo Switch"})
        assert resp.status_code == 200
        assert {i["id"] for i in resp.json()["items"][:2]} == {"g1", "g2"}
        assert "score;dur=" in resp.headers["Server-Timing"]
        bad = httpx.post(f"{url}/v1/search", json={"query": "x", "size": 1000})
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "size"
    finally:
        proc.terminate()
        proc.wait(10)
