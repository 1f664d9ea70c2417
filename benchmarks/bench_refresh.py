"""The nightly feature refresh at marketplace scale: aggregate 10M events, publish ~1M items.

Generates a synthetic event log (cached in ``var/bench-refresh``): ``--events`` rows over
the 7 days before ``END``, 5% clicks, items drawn half uniformly from ``--items`` ids and
half from a power-law popularity. Runs ``bestmatch features refresh`` on it under
``/usr/bin/time -v`` against the dev Redis (devstack), reporting each step's time and the
peak memory, then ``redis-benchmark``'s pipelined SET rate on the same Redis as the
ceiling for publishing. The benchmark's keys are deleted afterwards.

    .venv/bin/python benchmarks/bench_refresh.py --events 10000000 --items 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import devstack  # noqa: E402
from benchmarks.report import publish  # noqa: E402

END = datetime(2026, 11, 20, tzinfo=UTC)
PREFIX = "bench:feat"


def make_events(path: Path, n: int, items: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    half = n // 2
    item = np.concatenate([rng.integers(0, items, half),
                           (items * rng.random(n - half) ** 3).astype(np.int64)])
    start_ms = int((END - timedelta(days=7)).timestamp() * 1000)
    ts_ms = start_ms + rng.integers(0, 7 * 86_400_000, n)
    df = pl.DataFrame({
        "request_id": (np.arange(n) // 40).astype(np.int64),
        "ts": ts_ms,
        "event": np.where(rng.random(n) < 0.05, "click", "impression"),
        "item_id": item,
        "position": (np.arange(n) % 40 + 1).astype(np.int16),
    }).with_columns(
        pl.format("r{}", "request_id").alias("request_id"),
        pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"),
        pl.format("m{}", "item_id").alias("item_id"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)


def redis_benchmark_set(url: str, n: int) -> float:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    out = subprocess.run(
        ["redis-benchmark", "-h", host, "-p", port, "-t", "set", "-n", str(n), "-P", "16",
         "-d", "12", "-r", str(n), "-q"], capture_output=True, text=True, check=True).stdout
    return float(re.findall(r"SET: ([\d.]+) requests per second", out)[-1])


def delete_keys(url: str, *patterns: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in patterns:
        batch = []
        for key in client.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "refresh.json"))
    args = ap.parse_args()

    work = REPO / "var" / "bench-refresh"
    events = work / f"events-{args.events}-{args.items}.parquet"
    if not events.exists():
        t = time.perf_counter()
        make_events(events, args.events, args.items)
        print(f"generated {events} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    url = devstack.up()["redis"].url
    version = time.strftime("bench-%Y%m%d-%H%M%S", time.gmtime())
    try:
        run = subprocess.run(
            ["/usr/bin/time", "-v", str(REPO / ".venv" / "bin" / "bestmatch"), "features",
             "refresh", "--events", str(events), "--end", END.isoformat(), "--snapshot-dir",
             str(work / "snapshots"), "--version", version],
            env={**os.environ, "BESTMATCH_FEATURE_STORE": "redis", "BESTMATCH_REDIS_URL": url,
                 "BESTMATCH_FEATURE_PREFIX": PREFIX},
            capture_output=True, text=True, cwd=REPO)
        if run.returncode != 0:
            raise SystemExit(f"refresh failed ({run.returncode}):\n{run.stderr[-3000:]}")
        job = json.loads(run.stdout)
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                                run.stderr).group(1))
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr).group(1)
        ceiling = redis_benchmark_set(url, job["items"])
    finally:
        delete_keys(url, f"{PREFIX}:*", "key:*")
    publish_s = job["step_seconds"]["publish"]
    result = {
        "events": job["events"]["rows"], "events_in_window": job["events"]["in_window"],
        "items": job["items"],
        "job_wall": wall, "job_peak_rss_mb": round(peak_kb / 1024),
        "step_seconds": job["step_seconds"],
        "aggregate_events_per_s": round(job["events"]["rows"] /
                                        (job["step_seconds"]["read"]
                                         + job["step_seconds"]["aggregate"])),
        "publish_items_per_s": round(job["items"] / publish_s),
        "redis_benchmark_set_P16_per_s": ceiling,
        "publish_vs_ceiling": round(job["items"] / publish_s / ceiling, 3),
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
