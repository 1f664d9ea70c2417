"""Re-ranking overhead of the service over a direct engine query for the same recall.

Starts (or reuses) the dev servers and the demo catalog, starts ``bestmatch serve`` on a
free port, then for every query sends, alternately, the recall body straight to the
engine and the search request to the service (sequential, one connection each, after a
warm-up). Reports client-observed latency of both, the service's per-stage timings
(from its Server-Timing header) and the re-ranking overhead = features + score + blend
+ serialize, as p50 / p99 in milliseconds. With ``--feature-log`` a second service, which
writes the served-feature log, gets the same query right after, so both are measured
in one run; with ``--embedded`` a service on the embedded engine and snapshot feature
store, built from the same simulated marketplace, does the same.

    .venv/bin/python benchmarks/bench_service.py --listings 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.recall import RecallParams, best_match_query, to_engine_json  # noqa: E402
from app.schemas import Filters  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.tokenizer import tokenize_query  # noqa: E402
from benchmarks.report import publish  # noqa: E402
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


def start_service(extra_env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "bestmatch"), "serve", "--port", str(port)],
        env={**os.environ, "BESTMATCH_LOG_LEVEL": "WARNING", **extra_env}, cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except BaseException:
        proc.terminate()
        raise
    return url, proc


def summary(service_ms: list[float], stages: dict[str, list[float]],
            overhead: list[float]) -> dict:
    return {
        "total_ms": {"p50": pct(service_ms, 50), "p99": pct(service_ms, 99)},
        "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        "rerank_overhead_ms": {"p50": pct(overhead, 50), "p99": pct(overhead, 99)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listings", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--feature-log", action="store_true",
                    help="also run a second service that writes the served-feature log "
                         "(to var/bench-feature-log) and compare the two in one run")
    ap.add_argument("--embedded", action="store_true",
                    help="also build the same demo into the embedded backends and run a "
                         "service on them (tantivy + snapshot files) in the same run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "service.json"))
    args = ap.parse_args()

    # The measured service runs on the real engine and Redis (the dev servers).
    os.environ.update(BESTMATCH_ENGINE="opensearch", BESTMATCH_FEATURE_STORE="redis")
    build_demo(args.listings, 0, REPO / "var" / "demo")
    engine_url = os.environ["BESTMATCH_ENGINE_URL"]
    alias = os.environ.get("BESTMATCH_INDEX_ALIAS", "listings")
    variants = {"service": {}}
    if args.feature_log:
        variants["service_with_feature_log"] = {
            "BESTMATCH_FEATURE_LOG_DIR": str(REPO / "var" / "bench-feature-log")}
    if args.embedded:
        embedded = Settings(engine="embedded", feature_store="snapshot")
        build_demo(args.listings, 0, REPO / "var" / "demo", settings=embedded)
        variants["service_embedded"] = {"BESTMATCH_ENGINE": "embedded",
                                        "BESTMATCH_FEATURE_STORE": "snapshot"}
    running: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        for name, env in variants.items():
            running[name] = start_service(env)
        qs = queries(args.queries)
        engine_ms: list[float] = []
        service_ms: dict[str, list[float]] = {name: [] for name in variants}
        stages: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
        overhead: dict[str, list[float]] = {name: [] for name in variants}
        clients = {name: httpx.Client(base_url=url) for name, (url, _) in running.items()}
        with httpx.Client(base_url=engine_url) as eng:
            for i, q in enumerate(qs * (args.rounds + 1)):
                body = to_engine_json(best_match_query(
                    tokenize_query(q)[0], Filters(), RecallParams(), int(time.time() * 1000)))
                t0 = time.perf_counter()
                eng.post(f"/{alias}/_search", json=body).raise_for_status()
                t1 = time.perf_counter()
                if i >= len(qs):  # the first pass warms caches, JIT and connections
                    engine_ms.append((t1 - t0) * 1000)
                for name, client in clients.items():  # alternately, same query
                    t1 = time.perf_counter()
                    s = client.post("/v1/search", json={"query": q, "size": 20})
                    t2 = time.perf_counter()
                    s.raise_for_status()
                    if i < len(qs):
                        continue
                    service_ms[name].append((t2 - t1) * 1000)
                    timings = dict(part.split(";dur=")
                                   for part in s.headers["Server-Timing"].split(", "))
                    for stage, dur in timings.items():
                        stages[name].setdefault(stage, []).append(float(dur))
                    overhead[name].append(sum(float(timings.get(k, 0)) for k in OVERHEAD))
        for client in clients.values():
            client.close()
    finally:
        for _, proc in running.values():
            proc.terminate()
            proc.wait(10)

    result = {
        "listings": args.listings,
        "requests": len(engine_ms),
        "candidates_k": RecallParams().candidates,
        "engine_direct_ms": {"p50": pct(engine_ms, 50), "p99": pct(engine_ms, 99)},
        **{name: summary(service_ms[name], stages[name], overhead[name]) for name in variants},
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
