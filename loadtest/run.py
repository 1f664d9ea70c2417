"""Run the locust load test headless against a running service, optionally also against
the engine alone with the same traffic, and write locust's CSV and HTML reports plus a
comparison.

    .venv/bin/python loadtest/run.py --host http://127.0.0.1:8000 --users 16 \\
        --run-time 60s --engine http://127.0.0.1:9201 --out var/loadtest

Exit code 1 when the service run passes ``--max-p99-ms`` or ``--max-error-ratio``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_locust(target: str, host: str, args: argparse.Namespace, thresholds: bool) -> int:
    prefix = Path(args.out) / target
    cmd = [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
        "--host", host, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", args.run_time, "--csv", str(prefix), "--html", f"{prefix}.html",
        "--json-file", str(prefix),
        "--only-summary", "--target", target, "--index-alias", args.index_alias,
        "--seed", str(args.seed),
    ]
    if args.queries:
        cmd += ["--queries", args.queries]
    if thresholds:
        cmd += ["--max-p99-ms", str(args.max_p99_ms),
                "--max-error-ratio", str(args.max_error_ratio)]
    print(f"[loadtest] {target}: {args.users} users for {args.run_time} against {host}",
          file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode


def percentile(histogram: dict[str, int], q: float) -> float:
    """The q-quantile of locust's response-time histogram (ms, as locust rounds them)."""
    times = sorted((float(ms), n) for ms, n in histogram.items())
    need, seen = q * sum(n for _, n in times), 0
    for ms, n in times:
        seen += n
        if seen >= need:
            return ms
    return times[-1][0] if times else 0.0


def summary(prefix: Path) -> dict:
    """Totals of a run from locust's ``--json-file`` (its CSV misses the last seconds)."""
    entries = json.loads(Path(f"{prefix}.json").read_text())
    histogram: dict[str, int] = {}
    for entry in entries:
        for ms, n in entry["response_times"].items():
            histogram[ms] = histogram.get(ms, 0) + n
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    seconds = (max(e["last_request_timestamp"] for e in entries)
               - min(e["start_time"] for e in entries)) if entries else 0.0
    return {"requests": requests, "failures": failures,
            "error_ratio": round(failures / requests, 4) if requests else 0.0,
            "rps": round(requests / seconds, 1) if seconds else 0.0,
            **{f"p{q}_ms": percentile(histogram, q / 100) for q in (50, 95, 99)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="the service, e.g. http://127.0.0.1:8000")
    ap.add_argument("--engine", default="", help="also run the same traffic on this engine")
    ap.add_argument("--index-alias", default="listings")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--spawn-rate", type=float, default=8)
    ap.add_argument("--run-time", default="60s")
    ap.add_argument("--queries", default="", help="one query per line (default: simulator)")
    ap.add_argument("--max-p99-ms", type=float, default=500.0)
    ap.add_argument("--max-error-ratio", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="var/loadtest")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    code = run_locust("service", args.host, args, thresholds=True)
    result = {"users": args.users, "run_time": args.run_time,
              "service": summary(out / "service")}
    if args.engine:
        run_locust("engine", args.engine, args, thresholds=False)
        service, engine = result["service"], summary(out / "engine")
        result["engine"] = engine
        result["throughput_ratio"] = round(service["rps"] / engine["rps"], 3)
        result["p99_overhead_ms"] = round(service["p99_ms"] - engine["p99_ms"], 1)
        result["p50_overhead_ms"] = round(service["p50_ms"] - engine["p50_ms"], 1)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
