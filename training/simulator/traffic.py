"""Live traffic: the simulator's users search a running bestmatch service over HTTP.

Each session is one user typing one query (the simulator's users and query mix) and
acting on the page the service answers, in its order, with the simulator's user model
(:func:`training.simulator.sessions.user_actions`: position-biased examination, click,
like, comment, purchase driven by true relevance). The world (catalog and queries) is
rebuilt from the simulation the service's catalog came from (``--sim-dir``: its
``summary.json``), so true relevance is known for every listing the service can answer.

Files written to ``out_dir``:

- ``events.parquet``: the event log in the simulator's format (``request_id``,
  ``session_id``, ``user_id``, ``query``, ``ts``, ``event``, ``item_id``, ``position``)
  plus ``experiment`` and ``arm`` as the service answered them, and ``team`` (the ranker
  that contributed the item, for interleaved answers; else null). The request id is the
  driver's (sent as ``X-Request-ID``), so it matches the service's served-feature log.
- ``truth.parquet``: per shown item ``relevance`` (0..4), ``utility`` and
  ``expected_purchases`` (a human's, from the user model: the ground truth of ATPU).
- ``summary.json``: sessions asked, answered, failed by reason, events, seconds,
  sessions per second, requests per arm.

Bots are not simulated here; tappers (users who tap nearly everything) are, at the
simulator's share, so training's hygiene has something to remove.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import polars as pl

from training.simulator.catalog import Catalog, generate_catalog
from training.simulator.queries import QuerySet, generate_queries, true_relevance
from training.simulator.sessions import SessionConfig, expected_purchases, user_actions


@dataclass(frozen=True)
class TrafficConfig:
    url: str  # the service, e.g. http://127.0.0.1:8000
    sim_dir: Path  # the simulation the service's catalog came from
    out_dir: Path
    sessions: int = 1000
    concurrency: int = 8
    seed: int = 0
    page_size: int = 40
    max_seconds: float = 600.0  # stop sending after this long (bounded in time)
    timeout_s: float = 5.0  # per request
    users: int = 0  # distinct users (default: sessions x users_per_session)
    user_model: SessionConfig = field(default_factory=SessionConfig)


@dataclass
class World:
    catalog: Catalog
    queries: QuerySet
    index_of: dict[str, int]  # listing id -> catalog row

    @classmethod
    def load(cls, sim_dir: Path) -> World:
        """Rebuild the simulation's catalog and queries from its ``summary.json``, and check
        the rebuilt catalog against its ``listings.jsonl``."""
        summary = json.loads((Path(sim_dir) / "summary.json").read_text())
        sim = summary["config"]
        catalog = generate_catalog(sim["listings"], sim["seed"],
                                   datetime.fromisoformat(summary["now"]))
        with open(Path(sim_dir) / "listings.jsonl", "rb") as handle:
            first = orjson.loads(handle.readline())
        if str(catalog.ids[0]) != first["id"] or catalog.titles[0] != first["title"]:
            raise ValueError(f"{sim_dir}: listings.jsonl does not match the catalog its "
                             "summary.json describes")
        index_of = {str(item): i for i, item in enumerate(catalog.ids)}
        return cls(catalog, generate_queries(sim["queries"], sim["seed"]), index_of)


EVENT_COLUMNS = ("request_id", "session_id", "user_id", "query", "experiment", "arm",
                 "ts_ms", "event", "item_id", "position", "team")
TRUTH_COLUMNS = ("request_id", "item_id", "position", "relevance", "utility",
                 "expected_purchases")


@dataclass
class _Log:
    """Column arrays collected per answered page, concatenated once at the end."""

    events: dict[str, list] = field(default_factory=lambda: {k: [] for k in EVENT_COLUMNS})
    truth: dict[str, list] = field(default_factory=lambda: {k: [] for k in TRUTH_COLUMNS})
    failures: Counter = field(default_factory=Counter)
    arms: Counter = field(default_factory=Counter)
    answered: int = 0

    def add(self, table: dict[str, list], columns: dict) -> None:
        n = next(len(v) for v in columns.values() if isinstance(v, np.ndarray))
        for key, value in columns.items():
            table[key].append(value if isinstance(value, np.ndarray)
                              else np.full(n, value, dtype=object))

    @staticmethod
    def frame(table: dict[str, list]) -> pl.DataFrame:
        return pl.DataFrame({k: np.concatenate(v) if v else np.array([], dtype=object)
                             for k, v in table.items()}, strict=False)


class TrafficDriver:
    def __init__(self, config: TrafficConfig, world: World):
        self.cfg, self.world = config, world
        self.rng = np.random.default_rng(config.seed)
        self.log = _Log()
        rng, n = self.rng, config.sessions
        n_users = config.users or max(int(n * config.user_model.users_per_session), 1)
        activity = 1.0 / np.arange(1, n_users + 1) ** 0.8  # a few heavy users, many light
        self.users = rng.choice(n_users, size=n, p=activity / activity.sum())
        self.tappers = rng.random(n_users) < config.user_model.tapper_share
        self.queries = rng.choice(len(world.queries), size=n, p=world.queries.popularity)

    def request(self, i: int) -> tuple[str, dict, dict]:
        """Session ``i``: request id, JSON body, headers."""
        request_id = f"t{self.cfg.seed}-{i:08d}"
        body = {"query": self.world.queries.texts[self.queries[i]],
                "user_id": f"u{self.users[i]:06d}", "size": self.cfg.page_size}
        return request_id, body, {"X-Request-ID": request_id}

    def act(self, i: int, request_id: str, answer: dict, t_ms: int) -> None:
        """The user's actions on the answered page, appended to the log."""
        world, cfg, cat = self.world, self.cfg, self.world.catalog
        items = answer["items"]
        try:
            shown = np.array([world.index_of[item["id"]] for item in items], dtype=np.int64)
        except KeyError:
            self.log.failures["unknown_item"] += 1
            return
        experiment = answer.get("experiment") or {}
        self.log.arms[f"{experiment.get('name')}/{experiment.get('arm')}"] += 1
        self.log.answered += 1
        n = len(shown)
        if n == 0:
            return
        item_ids = np.array([item["id"] for item in items], dtype=object)
        team = np.array([item.get("team") for item in items], dtype=object)
        pos = np.arange(1, n + 1, dtype=np.int64)
        utility, grade = true_relevance(world.queries.intents[self.queries[i]], cat, shown)
        appeal = cat.price_appeal(shown)
        kind = "tapper" if self.tappers[self.users[i]] else "human"
        steps = [("impression", np.ones(n, bool), np.full(n, t_ms, np.int64))]
        steps += user_actions(self.rng, cfg.user_model, kind, pos, grade, utility,
                              cat.quality[shown], appeal, t_ms)
        common = {"request_id": request_id, "session_id": request_id,
                  "user_id": f"u{self.users[i]:06d}",
                  "query": world.queries.texts[self.queries[i]],
                  "experiment": experiment.get("name"), "arm": experiment.get("arm")}
        for event, hit, ts in steps:
            if hit.any():
                self.log.add(self.log.events, {
                    **common, "ts_ms": ts[hit], "event": event, "item_id": item_ids[hit],
                    "position": pos[hit], "team": team[hit]})
        self.log.add(self.log.truth, {
            "request_id": request_id, "item_id": item_ids, "position": pos,
            "relevance": grade, "utility": utility,
            "expected_purchases": expected_purchases(pos, grade, utility, appeal,
                                                     cfg.user_model)})

    async def run(self, progress=None) -> None:
        """Send every session (``concurrency`` at a time) until done or ``max_seconds``."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.max_seconds
        sessions = iter(range(cfg.sessions))
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        connector = aiohttp.TCPConnector(limit=cfg.concurrency)
        async with aiohttp.ClientSession(cfg.url, timeout=timeout, connector=connector) as http:
            async def worker() -> None:
                for i in sessions:
                    if time.monotonic() > deadline:
                        self.log.failures["not_sent_time_limit"] += 1
                        continue
                    await self._one(http, i)
                    if progress is not None:
                        progress(1)

            await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))

    async def _one(self, http: aiohttp.ClientSession, i: int) -> None:
        request_id, body, headers = self.request(i)
        try:
            async with http.post("/v1/search", data=orjson.dumps(body),
                                 headers={**headers, "Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.failures[type(exc).__name__] += 1
            return
        if status != 200:
            self.log.failures[f"http_{status}"] += 1
            return
        self.act(i, request_id, orjson.loads(raw), int(time.time() * 1000))

    def write(self, seconds: float) -> dict:
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events = self.log.frame(self.log.events).with_columns(
            pl.col("ts_ms").cast(pl.Int64), pl.col("position").cast(pl.Int16),
            pl.col("team").cast(pl.String), pl.col("experiment").cast(pl.String),
            pl.col("arm").cast(pl.String))
        events = events.with_columns(
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        ).drop("ts_ms").sort("ts")
        events.write_parquet(out / "events.parquet")
        truth = self.log.frame(self.log.truth).with_columns(
            pl.col("position").cast(pl.Int16), pl.col("relevance").cast(pl.Int8),
            pl.col("utility").cast(pl.Float32), pl.col("expected_purchases").cast(pl.Float32))
        truth.write_parquet(out / "truth.parquet")
        counts = dict(events.group_by("event").len().sort("event").iter_rows())
        summary = {
            "config": asdict(self.cfg), "sessions": self.cfg.sessions,
            "answered": self.log.answered, "failed": dict(self.log.failures),
            "events": counts, "requests_per_arm": dict(self.log.arms),
            "seconds": round(seconds, 2),
            "sessions_per_s": round(self.log.answered / max(seconds, 1e-9), 1),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary


def drive_traffic(config: TrafficConfig, progress=None) -> dict:
    """Run the sessions against ``config.url``; write the logs; return the summary."""
    driver = TrafficDriver(config, World.load(config.sim_dir))
    t0 = time.perf_counter()
    asyncio.run(driver.run(progress))
    return driver.write(time.perf_counter() - t0)
