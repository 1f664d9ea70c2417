"""The nightly feature refresh against the real Redis: publish, switch, crash, expiry,
rejects and the lock; the service's store reads the new values without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
import redis.asyncio as aioredis

import devstack
from app.feature_store import FeatureStore, connect_redis, current_key, item_key, meta_key
from feature_jobs.item_stats import PRIOR_STRENGTH
from feature_jobs.refresh import RefreshConfig, RefreshError, refresh, refresh_lock
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration
END = datetime(2026, 11, 10, tzinfo=UTC)


def write_events(path: Path, clicks: dict[str, tuple[int, int]], bad_rows: int = 0) -> Path:
    """``clicks``: item -> (impressions, clicks), all on the day before END."""
    ts = (END - timedelta(hours=5)).isoformat()
    rows = []
    for item, (shown, clicked) in clicks.items():
        rows += [{"event": "impression", "item_id": item, "ts": ts}] * shown
        rows += [{"event": "click", "item_id": item, "ts": ts}] * clicked
    rows.append({"event": "impression", "item_id": "old", "ts": (END - timedelta(days=30))
                 .isoformat()})  # outside the window
    rows += [{"event": "impression", "item_id": None, "ts": ts}] * bad_rows
    write_jsonl(path, rows)
    return path


@pytest.fixture
async def redis(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def config(tmp_path, feature_prefix) -> RefreshConfig:
    events = write_events(tmp_path / "events.jsonl", {"a": (30, 3), "b": (10, 0)})
    return RefreshConfig(events=events, snapshot_dir=tmp_path / "snap", prefix=feature_prefix,
                         end=END, grace_s=600)


async def test_publish_switches_and_the_service_reads_it(redis, config):
    store = FeatureStore(redis, config.prefix, pointer_ttl_s=0.0)
    summary = await refresh(redis, config, version="v1")
    assert summary["items"] == 2 and summary["events"]["in_window"] == 43
    assert (await redis.get(current_key(config.prefix))) == b"v1"
    batch = await store.fetch(["a", "b", "unknown"])
    ctr_a = (3 + PRIOR_STRENGTH * 0.02) / (30 + PRIOR_STRENGTH)
    assert batch.values["ctr"][0] == pytest.approx(ctr_a, rel=1e-6)
    assert batch.values["impression_prob"][:2].tolist() == pytest.approx([0.75, 0.25])
    assert batch.missing.tolist() == [False, False, True]
    assert Path(summary["snapshot"]).exists()

    # a later run: the store follows the pointer without a restart
    write_events(config.events, {"a": (10, 5)})
    await refresh(redis, config, version="v2")
    batch = await store.fetch(["a", "b"])
    assert batch.values["ctr"][0] == pytest.approx((5 + PRIOR_STRENGTH * 0.02) / 30, rel=1e-6)
    assert batch.missing.tolist() == [False, True]


async def test_crash_between_write_and_switch_keeps_the_old_version(redis, config):
    await refresh(redis, config, version="v1")
    write_events(config.events, {"a": (10, 9)})
    with pytest.raises(RefreshError, match="injected"):
        await refresh(redis, config, version="v2", fail_before_switch=True)
    assert (await redis.get(current_key(config.prefix))) == b"v1"
    batch = await FeatureStore(redis, config.prefix, pointer_ttl_s=0.0).fetch(["a"])
    assert batch.values["ctr"][0] == pytest.approx((3 + PRIOR_STRENGTH * 0.02) / 50, rel=1e-6)
    assert not await redis.exists(f"{config.prefix}:refresh-lock")  # released on failure

    summary = await refresh(redis, config, version="v3")  # the dead run's keys expire
    assert summary["orphan_versions_expiring"] == ["v2"]
    assert 0 < await redis.ttl(item_key(config.prefix, "v2", "a")) <= 600


async def test_previous_version_expires_after_the_grace_period(redis, config):
    await refresh(redis, config, version="v1")
    summary = await refresh(redis, config, version="v2")
    assert summary["previous"] == "v1" and summary["previous_keys_expiring"] == 3
    assert 0 < await redis.ttl(item_key(config.prefix, "v1", "a")) <= 600
    assert await redis.ttl(item_key(config.prefix, "v2", "a")) == -1
    with pytest.raises(RefreshError, match="exists"):
        await refresh(redis, config, version="v2")  # a served version is never rewritten


async def test_malformed_rows_are_set_aside_and_too_many_fail(redis, config, tmp_path):
    write_events(config.events, {"a": (300, 3)}, bad_rows=2)
    summary = await refresh(redis, config, version="v1")
    assert summary["events"]["rejected"] == {"missing item_id": 2}
    rejects = config.snapshot_dir / "v1.rejects.jsonl"
    assert len(rejects.read_text().splitlines()) == 2

    write_events(config.events, {"a": (30, 3)}, bad_rows=5)
    with pytest.raises(RefreshError, match="malformed"):
        await refresh(redis, config, version="v2")
    assert (await redis.get(current_key(config.prefix))) == b"v1"


async def test_the_lock_is_renewed_while_a_run_outlasts_its_ttl(redis, config):
    async with refresh_lock(redis, config.prefix, ttl_s=0.3) as lock:
        await asyncio.sleep(1.0)
        assert await lock.owned()
    assert not await redis.exists(f"{config.prefix}:refresh-lock")


async def test_a_second_run_is_refused_while_one_holds_the_lock(redis, config):
    held = redis.lock(f"{config.prefix}:refresh-lock", timeout=60)
    assert await held.acquire(blocking=False)
    try:
        with pytest.raises(RefreshError, match="lock"):
            await refresh(redis, config, version="v1")
        assert await redis.get(current_key(config.prefix)) is None
    finally:
        await held.release()


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory):
    url, pids = devstack.start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield url
    for pid in pids:
        devstack.stop(pid)


async def test_publish_and_read_on_a_redis_cluster(cluster_url, config):
    """Item keys spread over the cluster's nodes; write, verify, read and expiry all work."""
    items = {f"item-{i}": (20 + i, i % 5) for i in range(60)}
    write_events(config.events, items)
    redis = connect_redis(cluster_url, cluster=True)
    try:
        await refresh(redis, config, version="v1")
        nodes = {redis.get_node_from_key(item_key(config.prefix, "v1", i)).name for i in items}
        assert len(nodes) == 3
        store = FeatureStore(redis, config.prefix, pointer_ttl_s=0.0)
        batch = await store.fetch([*items, "unknown"])
        want = [(c + PRIOR_STRENGTH * 0.02) / (n + PRIOR_STRENGTH) for n, c in items.values()]
        assert batch.values["ctr"][:-1].tolist() == pytest.approx(want, rel=1e-6)
        assert batch.missing.tolist() == [False] * len(items) + [True]

        summary = await refresh(redis, config, version="v2")
        assert summary["previous_keys_expiring"] == len(items) + 1  # items and meta, all nodes
        assert 0 < await redis.ttl(item_key(config.prefix, "v1", "item-7")) <= 600
    finally:
        await redis.aclose()


async def test_a_run_killed_while_publishing_leaves_the_old_version_served(
        redis, redis_url, config, tmp_path):
    """SIGKILL the real job in the middle of its write: the pointer and the old values
    stay; the lock blocks the next run until its TTL; a later run cleans up."""
    await refresh(redis, config, version="v1")
    n = 400_000
    events = tmp_path / "big.parquet"
    pl.DataFrame({"event": ["impression"] * n, "item_id": [f"i{k}" for k in range(n)],
                  "ts": [END - timedelta(hours=3)] * n}).write_parquet(events)
    cmd = [sys.executable, "-m", "bestmatch.cli", "features", "refresh", "--events",
           str(events), "--end", END.isoformat(), "--snapshot-dir", str(tmp_path / "snap"),
           "--grace-s", "600", "--lock-ttl-s", "3"]
    env = {**os.environ, "BESTMATCH_FEATURE_STORE": "redis", "BESTMATCH_REDIS_URL": redis_url,
           "BESTMATCH_FEATURE_PREFIX": config.prefix}
    job = subprocess.Popen([*cmd, "--version", "v2"], env=env, stderr=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(60):
            while not await redis.exists(item_key(config.prefix, "v2", "i0")):
                await asyncio.sleep(0.005)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(10)
    assert not await redis.exists(meta_key(config.prefix, "v2"))  # killed mid-write
    assert (await redis.get(current_key(config.prefix))) == b"v1"
    batch = await FeatureStore(redis, config.prefix, pointer_ttl_s=0.0).fetch(["a", "i0"])
    assert batch.values["ctr"][0] == pytest.approx((3 + PRIOR_STRENGTH * 0.02) / 50, rel=1e-6)
    assert batch.missing.tolist() == [False, True]

    busy = subprocess.run([*cmd, "--version", "v3"], env=env, capture_output=True, text=True)
    assert busy.returncode == 75, busy.stderr  # the dead run's lock, until its TTL
    await asyncio.sleep(3.2)
    done = subprocess.run([*cmd, "--version", "v3"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["orphan_versions_expiring"] == ["v2"] and summary["previous"] == "v1"
    assert 0 < await redis.ttl(item_key(config.prefix, "v2", "i0")) <= 600
