"""Re-ranking overhead of the service over a direct engine query for the same recall.

Starts (or reuses) the dev servers and the demo catalog, starts ``bestmatch serve`` on a
free port, then for every query sends, alternately, the recall body straight to the
engine and the search request to the service (sequential, one connection each, after a
warm-up). Reports client-observed latency of both, the service's per-stage timings
(from its Server-Timing header) and the re-ranking overhead = features + score + blend
+ serialize, as p50 / p99 in milliseconds.

    .venv/bin/python benchmarks/bench_service.py --listings 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.recall import RecallParams, best_match_body  # noqa: E402
from app.schemas import Filters  # noqa: E402
from app.tokenizer import tokenize_query  # noqa: E402
from bestmatch.demo import build_demo  # noqa: E402
from devstack import free_port  # noqa: E402
from training.simulator.queries import generate_queries  # noqa: E402

OVERHEAD = ("features", "score", "blend", "serialize")


def queries(n: int, seed: int = 1) -> list[str]:
    return generate_queries(n, seed).texts


def pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 3)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("service exited during start-up")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("service not ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listings", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "service.json"))
    args = ap.parse_args()

    build_demo(args.listings, 0, REPO / "var" / "demo")
    engine_url = os.environ["BESTMATCH_ENGINE_URL"]
    alias = os.environ.get("BESTMATCH_INDEX_ALIAS", "listings")
    port = free_port()
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "bestmatch"), "serve", "--port", str(port)],
        env={**os.environ, "BESTMATCH_LOG_LEVEL": "WARNING"}, cwd=REPO,
    )
    service = f"http://127.0.0.1:{port}"
    try:
        wait_ready(service, proc)
        qs = queries(args.queries)
        engine_ms, service_ms, stages = [], [], {}
        with httpx.Client(base_url=engine_url) as eng, httpx.Client(base_url=service) as svc:
            for i, q in enumerate(qs * (args.rounds + 1)):
                body = best_match_body(tokenize_query(q)[0], Filters(), RecallParams(),
                                       int(time.time() * 1000))
                t0 = time.perf_counter()
                r = eng.post(f"/{alias}/_search", json=body)
                t1 = time.perf_counter()
                s = svc.post("/v1/search", json={"query": q, "size": 20})
                t2 = time.perf_counter()
                r.raise_for_status()
                s.raise_for_status()
                if i < len(qs):  # first pass warms caches, JIT and connections
                    continue
                engine_ms.append((t1 - t0) * 1000)
                service_ms.append((t2 - t1) * 1000)
                for part in s.headers["Server-Timing"].split(", "):
                    name, dur = part.split(";dur=")
                    stages.setdefault(name, []).append(float(dur))
    finally:
        proc.terminate()
        proc.wait(10)

    overhead = np.sum([stages[s] for s in OVERHEAD], axis=0)
    result = {
        "listings": args.listings,
        "requests": len(engine_ms),
        "candidates_k": RecallParams().candidates,
        "engine_direct_ms": {"p50": pct(engine_ms, 50), "p99": pct(engine_ms, 99)},
        "service_total_ms": {"p50": pct(service_ms, 50), "p99": pct(service_ms, 99)},
        "added_ms_p50": round(pct(service_ms, 50) - pct(engine_ms, 50), 3),
        "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        "rerank_overhead_ms": {"p50": pct(overhead, 50), "p99": pct(overhead, 99)},
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
