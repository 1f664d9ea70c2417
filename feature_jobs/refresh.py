"""The nightly feature refresh: event logs -> item stats -> a new Redis version.

Steps, each of which leaves the served version intact if the job dies there:

1. take the refresh lock (``{prefix}:refresh-lock``, redis-py's lock with a short TTL,
   30 s by default, that a heartbeat renews every TTL/3 while the job runs), so two runs
   never publish at once and a killed run frees it within its TTL;
2. read impression and click events of the window ``[end - window_days, end)`` from
   Parquet or JSON lines; malformed rows are counted and written aside with the reason,
   and the job fails when their share passes ``max_reject_ratio``;
3. aggregate with :mod:`feature_jobs.item_stats` (Polars; the same arithmetic training
   uses for point-in-time features) and write the snapshot file (Parquet, the system
   of record);
4. write every item under a new version (the pointer does not move yet), verify the
   version's item count and a random sample of values read back;
5. renew the lock (the job stops here if it lost the lock), move the pointer in one
   SET, record the version as the snapshot directory's ``CURRENT`` (the last published
   version, as :func:`app.snapshot_store.publish_snapshot` writes it), then give the
   previous version's keys a TTL of ``grace_s`` so readers that still hold it finish
   cleanly.

Every version is added to ``{prefix}:versions`` before its first key is written; each
run, before it writes, expires the versions there that are neither served nor its own,
so the keys of a run that was killed mid-way do not stay in Redis for good.

:func:`republish` restores a Redis that lost its data: the last published (or a given)
version's snapshot, read back from its Parquet file, goes through the same steps 4-5
(:func:`publish`) under the same lock.

:func:`refresh_snapshot` is the same job for the embedded feature store: steps 2-3,
then the snapshot directory's ``CURRENT`` pointer moves in one rename
(:func:`app.snapshot_store.publish_snapshot`), under a file lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import time
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import polars as pl
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from app.feature_spec import STORE_FEATURES
from app.feature_store import (
    VALUE_DTYPE,
    RedisClient,
    current_key,
    item_key,
    meta_key,
    mget,
    switch_version,
    text,
    versions_key,
    write_version,
)
from app.progress import NoProgress
from app.snapshot_store import POINTER, publish_snapshot, published_version
from feature_jobs.events import read_events, set_aside
from feature_jobs.item_stats import daily_counts, item_stats


class RefreshError(RuntimeError):
    """The job stopped before switching; the previous version is still served."""


class LockHeld(RefreshError):
    """Another refresh is running."""


MIN_LOCK_TTL_S = 3.0


@dataclass(frozen=True, kw_only=True)
class PublishConfig:
    """Where and how a version is published into Redis (refresh and republish)."""

    snapshot_dir: Path
    prefix: str = "bm:feat"
    grace_s: int = 6 * 3600
    verify_sample: int = 1000
    lock_ttl_s: float = 30.0  # how long a killed run blocks the next one

    def __post_init__(self) -> None:
        if not self.lock_ttl_s >= MIN_LOCK_TTL_S:
            raise ValueError(f"the lock TTL must be at least {MIN_LOCK_TTL_S:g} s (it is "
                             f"renewed every TTL/3), not {self.lock_ttl_s:g}")


@dataclass(frozen=True, kw_only=True)
class RefreshConfig(PublishConfig):
    events: Path
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0))
    window_days: int = 7
    max_reject_ratio: float = 0.01


class StepTimer:
    """Seconds per step (``timer(step)`` ends one) and in all, for the job's summary."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._start = self._lap = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(now - self._lap, 3)
        self._lap = now

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 2)


def read_window(config: RefreshConfig, rejects_path: Path) -> tuple[pl.DataFrame, dict]:
    """Valid impression / click rows of the window, and counts (rows, rejected by reason)."""
    df = read_events(config.events, ["ts", "event", "item_id"])
    reason = (pl.when(pl.col("item_id").is_null() | (pl.col("item_id") == ""))
              .then(pl.lit("missing item_id"))
              .when(pl.col("ts").is_null()).then(pl.lit("missing or unreadable ts"))
              .when(pl.col("event").is_null()).then(pl.lit("missing event")))
    valid, rejected = set_aside(df, reason, rejects_path)
    start = config.end - timedelta(days=config.window_days)
    good = valid.filter(pl.col("ts") >= start, pl.col("ts") < config.end)
    bad = sum(rejected.values())
    if df.height and bad / df.height > config.max_reject_ratio:
        raise RefreshError(
            f"{bad} of {df.height} rows malformed ({bad / df.height:.1%} > "
            f"{config.max_reject_ratio:.1%}); see {rejects_path}")
    return good, {"rows": df.height, "rejected": rejected, "in_window": good.height}


async def verify(redis: RedisClient, prefix: str, version: str, stats: pl.DataFrame,
                 sample: int, seed: int = 0) -> None:
    meta = await redis.get(meta_key(prefix, version))
    if meta is None or orjson.loads(meta)["items"] != stats.height:
        raise RefreshError(f"version {version}: item count does not match the snapshot")
    rows = stats.sample(min(sample, stats.height), seed=seed) if stats.height else stats
    raw = await mget(redis, [item_key(prefix, version, i) for i in rows["item_id"]])
    if any(r is None for r in raw):
        raise RefreshError(f"version {version}: sampled items missing after the write")
    got = np.frombuffer(b"".join(cast(list[bytes], raw)), dtype=VALUE_DTYPE).reshape(
        -1, len(STORE_FEATURES))
    want = rows.select(STORE_FEATURES).to_numpy().astype(VALUE_DTYPE)
    if not np.array_equal(got, want):
        raise RefreshError(f"version {version}: sampled values differ from the snapshot")


async def expire_version(redis: RedisClient, prefix: str, version: str, ttl_s: int) -> int:
    """Give every key of ``version`` a TTL; returns how many keys got one."""
    n = 0
    pipe = redis.pipeline(transaction=False)
    async for key in redis.scan_iter(match=f"{prefix}:{version}:*", count=5000):
        pipe.expire(key, ttl_s)
        n += 1
        if n % 5000 == 0:
            await pipe.execute()
    await pipe.execute()
    return n


async def expire_orphans(redis: RedisClient, prefix: str, version: str,
                         ttl_s: int) -> list[str]:
    """Expire versions left by runs that died before switching; returns their names."""
    current = await redis.get(current_key(prefix))
    orphans = [text(v) for v in await redis.smembers(versions_key(prefix))
               if v not in (current, version.encode())]
    for orphan in orphans:
        await expire_version(redis, prefix, orphan, ttl_s)
        await redis.srem(versions_key(prefix), orphan)
    return orphans


class HeldLock:
    """The refresh lock while this job holds it, kept alive by :meth:`heartbeat`."""

    def __init__(self, lock: Lock, ttl_s: float):
        self.lock = lock
        self.ttl_s = ttl_s
        self.lost = False

    async def heartbeat(self) -> None:
        """Renew the TTL every ttl/3 until the lock is lost (expired or taken over); a
        Redis error is retried at the next beat, within the TTL that is left."""
        while not self.lost:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self.lock.reacquire()
            except LockError:
                self.lost = True
            except RedisError:
                pass

    async def confirm(self) -> None:
        """Renew now, or raise :class:`RefreshError` if the lock was lost at any time:
        called right before the switch, which then happens within a fresh TTL."""
        if self.lost:
            raise RefreshError("lost the refresh lock (the heartbeat could not renew it); "
                               "not switching")
        try:
            await self.lock.reacquire()
        except LockError as exc:
            self.lost = True
            raise RefreshError("lost the refresh lock (expired or taken over); not "
                               "switching") from exc


@asynccontextmanager
async def refresh_lock(redis: RedisClient, prefix: str, ttl_s: float):
    """Hold ``{prefix}:refresh-lock`` with a TTL of ``ttl_s`` renewed by a heartbeat, so
    a long run keeps it and a run that dies frees it within ``ttl_s``; yields the
    :class:`HeldLock`. Raises :class:`LockHeld` when another run holds it."""
    lock = redis.lock(f"{prefix}:refresh-lock", timeout=ttl_s, blocking=False)
    if not await lock.acquire():
        raise LockHeld("another refresh holds the lock; not publishing")
    held = HeldLock(lock, ttl_s)
    heartbeat = asyncio.create_task(held.heartbeat())
    try:
        yield held
    finally:
        heartbeat.cancel()
        with suppress(asyncio.CancelledError):
            await heartbeat
        with suppress(RedisError):  # a lost lock or Redis trouble must not hide the cause
            await lock.release()


def aggregate(config: RefreshConfig, version: str,
              done: Callable[[str], None]) -> tuple[pl.DataFrame, dict, Path]:
    """Read the window, aggregate per item, write the snapshot; (stats, counts, snapshot)."""
    events, counts = read_window(config, config.snapshot_dir / f"{version}.rejects.jsonl")
    done("read")
    stats = item_stats(daily_counts(events.lazy())).sort("item_id").collect(engine="streaming")
    config.snapshot_dir.mkdir(parents=True, exist_ok=True)
    snapshot = config.snapshot_dir / f"{version}.parquet"
    stats.write_parquet(snapshot)
    done("aggregate")
    return stats, counts, snapshot


def default_version(config: RefreshConfig) -> str:
    return config.end.strftime("%Y%m%d") + time.strftime("-%H%M%S", time.gmtime())


def refresh_snapshot(config: RefreshConfig, version: str | None = None,
                     say=lambda msg: None) -> dict:
    """The embedded publish: aggregate into ``{version}.parquet``, then move ``CURRENT``."""
    timer = StepTimer()
    version = version or default_version(config)
    config.snapshot_dir.mkdir(parents=True, exist_ok=True)
    with open(config.snapshot_dir / ".refresh.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld("another refresh holds the snapshot lock; not publishing") from None
        if (config.snapshot_dir / f"{version}.parquet").exists():
            raise RefreshError(f"version {version} exists; published versions never change")
        say(f"reading and aggregating the events of {config.window_days} days from "
            f"{config.events}")
        stats, counts, snapshot = aggregate(config, version, timer)
        publish_snapshot(config.snapshot_dir, version)
        say(f"published {stats.height} items as version {version}")
    return {"version": version, "items": stats.height, "events": counts,
            "snapshot": str(snapshot), "seconds": timer.total(), "step_seconds": timer.steps}


async def publish(redis: RedisClient, config: PublishConfig, lock: HeldLock, version: str,
                  stats: pl.DataFrame, timer: StepTimer, say=lambda msg: None,
                  progress_factory=NoProgress, fail_before_switch: bool = False) -> dict:
    """Steps 4-5 for ``stats``, the version's snapshot (already written): expire orphans,
    write every item under ``version``, verify, switch while still holding ``lock``,
    record the version in the snapshot directory, expire the previous version."""
    orphans = await expire_orphans(redis, config.prefix, version, config.grace_s)
    say(f"publishing {stats.height} items as version {version}")
    await redis.sadd(versions_key(config.prefix), version)
    bar = progress_factory(stats.height, "publish")
    written = await write_version(
        redis, config.prefix, version, stats.select("item_id", *STORE_FEATURES).iter_rows(),
        on_chunk=bar.update)
    bar.close()
    timer("publish")
    await verify(redis, config.prefix, version, stats, config.verify_sample)
    timer("verify")
    if fail_before_switch:
        raise RefreshError("injected failure between write and switch")
    previous = await redis.get(current_key(config.prefix))
    await lock.confirm()
    await switch_version(redis, config.prefix, version)
    publish_snapshot(config.snapshot_dir, version)
    say(f"switched the pointer to {version}")
    expired = 0
    if previous is not None and text(previous) != version:
        expired = await expire_version(redis, config.prefix, text(previous), config.grace_s)
        await redis.srem(versions_key(config.prefix), previous)
    timer("switch_and_expire")
    return {"version": version, "items": written,
            "previous": text(previous),
            "previous_keys_expiring": expired, "orphan_versions_expiring": orphans}


async def refresh(redis: RedisClient, config: RefreshConfig, version: str | None = None,
                  fail_before_switch: bool = False, say=lambda msg: None,
                  progress_factory=NoProgress) -> dict:
    """Run the job; returns its summary. ``fail_before_switch`` is for crash tests;
    ``say`` reports each step, ``progress_factory(total, desc)`` makes the publish bar."""
    timer = StepTimer()
    version = version or default_version(config)
    async with refresh_lock(redis, config.prefix, config.lock_ttl_s) as lock:
        if await redis.exists(meta_key(config.prefix, version)):
            raise RefreshError(f"version {version} exists; published versions never change")
        say(f"reading and aggregating the events of {config.window_days} days from "
            f"{config.events}")
        # in a thread, so the event loop keeps renewing the lock
        stats, counts, snapshot = await asyncio.to_thread(aggregate, config, version, timer)
        say(f"{counts['in_window']} events in the window")
        summary = await publish(redis, config, lock, version, stats, timer, say,
                                progress_factory, fail_before_switch)
    return {**summary, "events": counts, "snapshot": str(snapshot),
            "seconds": timer.total(), "step_seconds": timer.steps}


def last_published(snapshot_dir: Path) -> str:
    """The version the snapshot directory's ``CURRENT`` names."""
    version = published_version(snapshot_dir)
    if version is None:
        raise RefreshError(f"no published version in {snapshot_dir} ({POINTER} is missing); "
                           "give --version to republish one of its snapshots")
    return version


def read_snapshot(path: Path) -> pl.DataFrame:
    """A version's values (item_id and the store's features) from its Parquet snapshot."""
    try:
        return pl.read_parquet(path, columns=["item_id", *STORE_FEATURES])
    except FileNotFoundError:
        raise RefreshError(f"no snapshot {path}") from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise RefreshError(f"snapshot {path} unreadable: {exc}") from exc


async def republish(redis: RedisClient, config: PublishConfig, version: str | None = None,
                    say=lambda msg: None, progress_factory=NoProgress) -> dict:
    """Write the last published version (or ``version``) again from its snapshot, then
    point at it: restores a Redis that lost its data. Returns the summary."""
    timer = StepTimer()
    async with refresh_lock(redis, config.prefix, config.lock_ttl_s) as lock:
        version = version or last_published(config.snapshot_dir)
        snapshot = config.snapshot_dir / f"{version}.parquet"
        say(f"reading the snapshot {snapshot}")
        stats = await asyncio.to_thread(read_snapshot, snapshot)
        timer("read")
        summary = await publish(redis, config, lock, version, stats, timer, say,
                                progress_factory)
    return {**summary, "snapshot": str(snapshot), "seconds": timer.total(),
            "step_seconds": timer.steps}
