"""Chaos under bounded load on loopback: what the service answers while its parts fail.

Starts its own OpenSearch and Redis (state in ``var/chaos``, never the dev servers the
tests use), builds a small simulated marketplace into them, starts ``bestmatch serve``
and keeps ``--clients`` concurrent searchers busy while, one phase after another, it:

1. runs a calm baseline;
2. stops Redis, then starts it again on the same port (its append-only file keeps the
   features);
3. freezes the engine (SIGSTOP), then lets it go (SIGCONT);
4. kills the engine (SIGKILL) and starts it again on the same port;
5. reloads models through the admin API, good and refused ones alternating, and
   compares the service's memory and open files before and after;
6. kills ``bestmatch features refresh`` at random points, checks after every kill that
   the served version is complete, and times how long the killed run's lock blocks the
   next (a short ``--refresh-lock-ttl-s`` for the random kills, the default TTL for one);
7. empties Redis (FLUSHALL, as a restart without persistence or a failover to an empty
   replica would) and restores it with one ``bestmatch features republish``.

Answers are counted per phase by status; documented 503s (engine or index unavailable)
are expected where a dependency is really absent, anything else 5xx or a dropped
connection is a failure. Recovery = from the dependency coming back to the first
complete (2xx, not degraded) answer.

    .venv/bin/python benchmarks/chaos.py --listings 3000 --clients 4 --phase-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "var" / "chaos"
# Its own devstack state, so the OpenSearch cluster name differs from the dev servers'.
os.environ["BESTMATCH_DEVSTACK_DIR"] = str(WORK / "devstack")
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import redis  # noqa: E402

import devstack  # noqa: E402
from app.settings import Settings  # noqa: E402
from benchmarks.bench_service import queries, start_service  # noqa: E402
from benchmarks.report import publish  # noqa: E402
from bestmatch.demo import build_demo  # noqa: E402

ADMIN = {"X-Admin-Token": "chaos"}
EXPECTED_503 = {"engine_unavailable", "index_unavailable"}
BESTMATCH = str(REPO / ".venv" / "bin" / "bestmatch")


@dataclass
class Answer:
    t: float
    status: int  # 0: no HTTP answer (connection refused or reset)
    code: str = ""  # error code, "degraded:REASONS" or "ok"
    seconds: float = 0.0


@dataclass
class Phase:
    name: str
    started: float
    ended: float = 0.0
    recovery_s: float | None = None
    notes: dict = field(default_factory=dict)


class Load:
    """``clients`` searchers sending the simulated query mix until stopped."""

    def __init__(self, url: str, clients: int, texts: list[str]):
        self.url, self.clients, self.texts = url, clients, texts
        self.answers: list[Answer] = []
        self.running = True

    async def client(self, k: int) -> None:
        rng = random.Random(k)
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            while self.running:
                body = {"query": rng.choice(self.texts), "user_id": f"u{rng.randrange(10**6)}"}
                t = time.monotonic()
                try:
                    resp = await http.post("/v1/search", json=body)
                except httpx.TransportError:
                    self.answers.append(Answer(t, 0, "no_answer", time.monotonic() - t))
                    await asyncio.sleep(0.05)
                    continue
                data = resp.json()
                degraded = data.get("degraded")
                code = data.get("error") or (
                    "degraded:" + ",".join(degraded) if degraded else "ok")
                self.answers.append(Answer(t, resp.status_code, code, time.monotonic() - t))

    def first_clean_after(self, t: float) -> float | None:
        clean = [a.t + a.seconds for a in self.answers if a.t >= t and a.code == "ok"]
        return round(min(clean) - t, 2) if clean else None

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.t < end]


class Chaos:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.phases: list[Phase] = []
        self.servers: dict[str, devstack.Server] = {}
        self.run_id = time.strftime("%Y%m%d%H%M%S")

    # --- servers ---------------------------------------------------------------------
    def start_servers(self) -> None:
        for name in ("opensearch", "redis"):
            (WORK / "devstack" / name).mkdir(parents=True, exist_ok=True)
        self.servers["opensearch"] = devstack.start_opensearch(WORK / "devstack" / "opensearch")
        self.servers["redis"] = devstack.start_redis(WORK / "devstack" / "redis")

    def port(self, name: str) -> int:
        return int(self.servers[name].url.rsplit(":", 1)[1].split("/")[0])

    def restart(self, name: str) -> None:
        start = devstack.start_opensearch if name == "opensearch" else devstack.start_redis
        self.servers[name] = start(WORK / "devstack" / name, port=self.port(name))

    def stop_servers(self) -> None:
        for server in self.servers.values():
            devstack.stop(server.pid)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.servers["redis"].url)

    # --- the marketplace and the service ----------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "BESTMATCH_ENGINE": "opensearch", "BESTMATCH_FEATURE_STORE": "redis",
            "BESTMATCH_ENGINE_URL": self.servers["opensearch"].url,
            "BESTMATCH_REDIS_URL": self.servers["redis"].url,
            "BESTMATCH_INDEX_ALIAS": "chaos-listings", "BESTMATCH_FEATURE_PREFIX": "chaos",
            "BESTMATCH_SNAPSHOT_DIR": str(WORK / "features"),
            "BESTMATCH_ADMIN_TOKEN": ADMIN["X-Admin-Token"],
        }

    def build(self) -> dict:
        os.environ.update(self.env())
        build_demo(self.args.listings, 0, WORK / "demo", settings=Settings())
        sim = WORK / "demo" / f"sim-{self.args.listings}-seed0"
        return {"events": sim / "events.parquet",
                "end": json.loads((sim / "summary.json").read_text())["now"],
                "catalog": sim / "listings.jsonl"}

    def job(self, *argv: str) -> subprocess.Popen:
        """A ``bestmatch`` command; its output is appended to ``var/chaos/jobs.log``."""
        with open(WORK / "jobs.log", "ab") as log:
            log.write(f"--- bestmatch {' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen([BESTMATCH, *argv], env={**os.environ, **self.env()},
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    # --- phases ------------------------------------------------------------------------
    def phase(self, name: str) -> Phase:
        print(f"[chaos] {name}", file=sys.stderr, flush=True)
        self.phases.append(Phase(name, time.monotonic()))
        return self.phases[-1]

    async def settle(self, load: Load, phase: Phase, since: float) -> None:
        """Wait (bounded) for a complete answer after ``since``; the phase's recovery."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and load.first_clean_after(since) is None:
            await asyncio.sleep(0.1)
        phase.recovery_s = load.first_clean_after(since)
        await asyncio.sleep(1.0)
        phase.ended = time.monotonic()

    async def run(self, load: Load, data: dict, service: subprocess.Popen) -> None:
        s = self.args.phase_s
        p = self.phase("baseline")
        await asyncio.sleep(s)
        p.ended = time.monotonic()

        p = self.phase("redis stopped")
        devstack.stop(self.servers["redis"].pid)
        await asyncio.sleep(s)
        back = time.monotonic()
        await asyncio.to_thread(self.restart, "redis")
        await self.settle(load, p, back)

        p = self.phase("engine frozen (SIGSTOP)")
        os.killpg(self.servers["opensearch"].pid, signal.SIGSTOP)
        await asyncio.sleep(s / 2)
        os.killpg(self.servers["opensearch"].pid, signal.SIGCONT)
        await self.settle(load, p, time.monotonic())

        p = self.phase("engine killed (SIGKILL)")
        os.killpg(self.servers["opensearch"].pid, signal.SIGKILL)
        await asyncio.sleep(s / 2)
        back = time.monotonic()
        await asyncio.to_thread(self.restart, "opensearch")
        p.notes["engine_restart_s"] = round(time.monotonic() - back, 1)
        if not await self.alias_exists():  # a node that lost its data: index again
            p.notes["reindexed"] = await asyncio.to_thread(
                lambda: self.job("index", "--input", str(data["catalog"])).wait())
        await self.settle(load, p, back)

        p = self.phase("model reloads")
        p.notes.update(await self.reloads(load.url, service.pid, self.args.reloads))
        p.ended = time.monotonic()

        p = self.phase("refresh killed at random points")
        p.notes.update(await asyncio.to_thread(self.kill_refreshes, data))
        p.ended = time.monotonic()

        p = self.phase("Redis emptied, then republished")
        self.redis().flushall()
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient(base_url=load.url) as http:
            ready = (await http.get("/readyz", headers=ADMIN)).json()
        p.notes["readyz_while_empty"] = {"status": ready["status"],
                                         "feature_store": ready["checks"]["feature_store"]}
        t = time.monotonic()
        job = await asyncio.to_thread(lambda: self.job("features", "republish").wait())
        p.notes["republish_exit"] = job
        p.notes["republish_s"] = round(time.monotonic() - t, 2)
        await self.settle(load, p, t)

    async def alias_exists(self) -> bool:
        async with httpx.AsyncClient(base_url=self.servers["opensearch"].url) as http:
            return (await http.get("/_alias/chaos-listings")).status_code == 200

    async def reloads(self, url: str, pid: int, n: int) -> dict:
        def usage() -> tuple[int, int]:
            rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                       if line.startswith("VmRSS"))
            return rss, len(os.listdir(f"/proc/{pid}/fd"))

        outcomes: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            for _ in range(3):  # warm: the first loads allocate ONNX Runtime's arenas
                await http.post("/admin/model/reload", json={}, headers=ADMIN)
            rss0, fds0 = usage()
            for k in range(n):
                body = {"version": "latest"} if k % 2 == 0 else {"version": "no-such-version"}
                resp = await http.post("/admin/model/reload", json=body, headers=ADMIN)
                expected = 200 if k % 2 == 0 else 409
                outcomes["as expected" if resp.status_code == expected else
                         f"unexpected {resp.status_code}"] += 1
        rss1, fds1 = usage()
        return {"reloads": dict(outcomes), "rss_mb_before_after": [rss0 // 1024, rss1 // 1024],
                "open_files_before_after": [fds0, fds1]}

    def served_version_complete(self) -> bool | None:
        """Every item of the version the pointer names is there (None: no pointer)."""
        r = self.redis()
        version = r.get("chaos:current")
        if version is None:
            return None
        meta = r.get(f"chaos:{version.decode()}:meta")
        if meta is None:
            return False
        items = sum(1 for _ in r.scan_iter(f"chaos:{version.decode()}:*", count=5000)) - 1
        return items == json.loads(meta)["items"]

    def lock_free_after(self, kill_t: float, limit_s: float = 120) -> float | None:
        r = self.redis()
        while time.monotonic() - kill_t < limit_s:
            if not r.exists("chaos:refresh-lock"):
                return round(time.monotonic() - kill_t, 2)
            time.sleep(0.1)
        return None

    def refresh(self, data: dict, name: str, *extra: str, watch: bool = False,
                ) -> subprocess.Popen:
        """A refresh publishing version ``chaos-RUN-name`` (new in every run: Redis keeps
        its data between runs, and a version is never written twice); with ``watch``
        its progress lines can be read from ``stderr``."""
        argv = ["features", "refresh", "--events", str(data["events"]), "--end", data["end"],
                "--version", f"chaos-{self.run_id}-{name}", *extra]
        if not watch:
            return self.job(*argv)
        return subprocess.Popen([BESTMATCH, *argv], env={**os.environ, **self.env()},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)

    def kill_at(self, job: subprocess.Popen, stage: str, max_delay_s: float) -> bool:
        """SIGKILL ``job`` a random moment (up to ``max_delay_s``) after it printed
        ``stage`` ("" = after it started); whether it was still running then."""
        if stage:
            for line in iter(job.stderr.readline, b""):
                if line.decode(errors="replace").startswith(stage):
                    break
        time.sleep(self.rng.uniform(0.0, max_delay_s))
        running = job.poll() is None
        job.kill()
        job.wait()
        job.stderr.close()
        return running

    def kill_refreshes(self, data: dict) -> dict:
        """Kill refresh runs at random points of each stage, in turn: start-up (before the
        lock), aggregation, writing and verifying (lock held); the last one, with the
        default lock TTL, right after it took the lock."""
        t = time.monotonic()
        full = self.refresh(data, "full").wait()
        full_s = time.monotonic() - t
        short = ("--lock-ttl-s", str(self.args.refresh_lock_ttl_s))
        stages = [("", full_s), ("reading and aggregating", 0.1), ("publishing", 0.05)]
        kills: Counter[str] = Counter()
        finished_first, complete = 0, 0
        lock_free: dict[str, list[float | None]] = {"short": [], "default": []}
        for k in range(self.args.refresh_kills + 1):
            default_ttl = k == self.args.refresh_kills
            stage, delay = ("reading and aggregating", 0.0) if default_ttl else \
                stages[k % len(stages)]
            job = self.refresh(data, f"kill-{k}", *(() if default_ttl else short), watch=True)
            if not self.kill_at(job, stage, delay):
                finished_first += 1  # it published before the random moment came
                continue
            kill_t = time.monotonic()
            had_lock = bool(self.redis().exists("chaos:refresh-lock"))
            kills[stage or "start-up"] += 1
            complete += self.served_version_complete() is True
            if had_lock:
                lock_free["default" if default_ttl else "short"].append(
                    self.lock_free_after(kill_t))
        retry = self.refresh(data, "after").wait()
        n = sum(kills.values())
        return {"full_refresh_s": round(full_s, 2), "full_refresh_exit": full,
                "kills_by_stage": dict(kills), "finished_before_the_kill": finished_first,
                "served_version_complete_after_kill": f"{complete}/{n}",
                "lock_ttl_s": self.args.refresh_lock_ttl_s,
                "lock_free_s_after_kill": lock_free["short"],
                "lock_free_s_after_kill_default_ttl": lock_free["default"],
                "retry_exit": retry}


def summarise(load: Load, phases: list[Phase]) -> list[dict]:
    rows = []
    for p in phases:
        answers = load.between(p.started, p.ended)
        statuses = Counter(a.status for a in answers)
        codes = Counter(a.code for a in answers if a.code != "ok")
        unexpected = sum(1 for a in answers if a.status == 0 or (
            a.status >= 500 and not (a.status == 503 and a.code in EXPECTED_503)))
        slow_503 = max((a.seconds for a in answers if a.status == 503), default=0.0)
        rows.append({
            "phase": p.name, "seconds": round(p.ended - p.started, 1),
            "answers": len(answers), "by_status": dict(sorted(statuses.items())),
            "not_ok_by_code": dict(codes),
            "degraded": sum(a.code.startswith("degraded") for a in answers),
            "unexpected_failures": unexpected,
            "slowest_503_s": round(slow_503, 2), "recovery_s": p.recovery_s, **p.notes,
        })
    return rows


def table(rows: list[dict]) -> str:
    head = "| phase | s | answers | 2xx | degraded | 503 | other 5xx / no answer | recovery s |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        ok = sum(n for s, n in r["by_status"].items() if 200 <= s < 300)
        lines.append(f"| {r['phase']} | {r['seconds']} | {r['answers']} | {ok} | "
                     f"{r['degraded']} | {r['by_status'].get(503, 0)} | "
                     f"{r['unexpected_failures']} | {r['recovery_s']} |")
    return "\n".join(lines)


async def under_load(chaos: Chaos, url: str, data: dict,
                     service: subprocess.Popen) -> tuple[Load, bool]:
    """The phases while the searchers run; the answers and whether the service lived."""
    load = Load(url, chaos.args.clients, queries(300))
    clients = [asyncio.create_task(load.client(k)) for k in range(chaos.args.clients)]
    try:
        await chaos.run(load, data, service)
    finally:
        load.running = False
        await asyncio.gather(*clients)
    return load, service.poll() is None


def run_chaos(args: argparse.Namespace) -> None:
    chaos = Chaos(args)
    chaos.start_servers()
    service = None
    try:
        data = chaos.build()
        url, service = start_service(chaos.env())
        load, alive = asyncio.run(under_load(chaos, url, data, service))
        rows = summarise(load, chaos.phases)
        print(table(rows), file=sys.stderr)
        publish({"command": " ".join(["benchmarks/chaos.py", *sys.argv[1:]]),
                 "clients": args.clients, "listings": args.listings,
                 "service_alive_at_end": alive, "phases": rows,
                 "unexpected_failures": sum(r["unexpected_failures"] for r in rows)},
                args.out)
    finally:
        if service is not None:
            service.terminate()
            service.wait()
        chaos.stop_servers()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listings", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4, help="concurrent searchers")
    ap.add_argument("--phase-s", type=float, default=10.0,
                    help="how long Redis stays down (the engine: half of it)")
    ap.add_argument("--reloads", type=int, default=300, help="model reloads (half refused)")
    ap.add_argument("--refresh-kills", type=int, default=20,
                    help="refresh runs to kill (one that finishes first is not counted)")
    ap.add_argument("--refresh-lock-ttl-s", type=float, default=4.0,
                    help="lock TTL of the randomly killed refresh runs (one more is killed "
                         "with the default TTL)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chaos.json"))
    run_chaos(ap.parse_args())


if __name__ == "__main__":
    main()
