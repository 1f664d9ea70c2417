"""The nightly feature refresh against the real Redis: publish, switch, crash, expiry,
rejects and the lock (its heartbeat, a killed holder); republishing into a Redis that
lost its data; the service's store reads the new values without a restart."""

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
from redis import Redis as SyncRedis

import devstack
from app.feature_store import FeatureStore, connect_redis, current_key, item_key, meta_key
from app.snapshot_store import POINTER
from bestmatch.cli import build_parser, main
from feature_jobs.item_stats import PRIOR_STRENGTH
from feature_jobs.refresh import (
    PublishConfig,
    RefreshConfig,
    RefreshError,
    refresh,
    refresh_lock,
    republish,
)
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration
END = datetime(2026, 11, 10, tzinfo=UTC)
FEATURES = [sys.executable, "-m", "bestmatch.cli", "features"]


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


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix``: a Redis that lost its data, as far as this
    test's keys go (the server is shared, so no FLUSHALL)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=5000)]
    for start in range(0, len(keys), 5000):
        await client.delete(*keys[start:start + 5000])  # split per slot on a cluster


async def dump_prefix(client: aioredis.Redis, prefix: str) -> dict[bytes, tuple]:
    """Every key under ``prefix`` with its serialized value and TTL."""
    return {key: (await client.dump(key), await client.ttl(key))
            async for key in client.scan_iter(match=f"{prefix}:*", count=5000)}


@pytest.fixture
async def redis(redis_url, feature_prefix):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await drop_prefix(client, feature_prefix)  # the dev Redis persists; leave nothing behind
    await client.aclose()


@pytest.fixture
def config(tmp_path, feature_prefix) -> RefreshConfig:
    events = write_events(tmp_path / "events.jsonl", {"a": (30, 3), "b": (10, 0)})
    return RefreshConfig(events=events, snapshot_dir=tmp_path / "snap", prefix=feature_prefix,
                         end=END, grace_s=600)


@pytest.fixture
def cli_env(redis_url, feature_prefix) -> dict[str, str]:
    """The environment of a ``bestmatch features`` process on the test's Redis and prefix."""
    return {**os.environ, "BESTMATCH_FEATURE_STORE": "redis", "BESTMATCH_REDIS_URL": redis_url,
            "BESTMATCH_FEATURE_PREFIX": feature_prefix}


@pytest.fixture
def big_events(tmp_path) -> Path:
    """400,000 items' impressions: a run that takes a few seconds to publish."""
    n = 400_000
    path = tmp_path / "big.parquet"
    pl.DataFrame({"event": ["impression"] * n, "item_id": [f"i{k}" for k in range(n)],
                  "ts": [END - timedelta(hours=3)] * n}).write_parquet(path)
    return path


def refresh_args(config: RefreshConfig, events: Path, *extra: str) -> list[str]:
    return [*FEATURES, "refresh", "--events", str(events), "--end", END.isoformat(),
            "--snapshot-dir", str(config.snapshot_dir), "--grace-s", "600", *extra]


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


def test_a_killed_run_blocks_the_next_one_for_under_a_minute_by_default(tmp_path, capsys):
    assert RefreshConfig(events=tmp_path, snapshot_dir=tmp_path).lock_ttl_s <= 60
    for command in (["refresh", "--events", "e"], ["republish"]):
        assert build_parser().parse_args(["features", *command]).lock_ttl_s <= 60
    with pytest.raises(ValueError, match="at least 3 s"):
        PublishConfig(snapshot_dir=tmp_path, lock_ttl_s=0.5)
    with pytest.raises(SystemExit) as exit_:  # a TTL the heartbeat cannot keep is refused
        main(["features", "refresh", "--events", "e", "--lock-ttl-s", "1"])
    assert exit_.value.code == 2 and "at least 3 s" in capsys.readouterr().err


async def test_the_heartbeat_keeps_the_lock_while_a_run_outlasts_its_ttl(redis, config):
    key = f"{config.prefix}:refresh-lock"
    async with refresh_lock(redis, config.prefix, ttl_s=0.3) as held:
        for _ in range(10):  # 1 s, over three TTLs
            await asyncio.sleep(0.1)
            assert 0 < await redis.pttl(key) <= 300
        assert await held.lock.owned()
        await held.confirm()
    assert not await redis.exists(key)

    async with refresh_lock(redis, config.prefix, ttl_s=0.3) as held:
        await redis.set(key, "another run", px=60_000)
        await asyncio.sleep(0.2)  # the next beat finds it taken
        assert held.lost
        with pytest.raises(RefreshError, match="heartbeat"):
            await held.confirm()
    assert await redis.get(key) == b"another run"  # the other run's lock stays


async def test_a_run_that_lost_the_lock_never_switches(redis, redis_url, config):
    """The lock expires or another run takes it while this one writes: it stops before
    the switch, and does not release the other run's lock."""
    await refresh(redis, config, version="v1")
    key = f"{config.prefix}:refresh-lock"
    other_run = SyncRedis.from_url(redis_url)

    def take_the_lock(msg: str) -> None:
        if msg.startswith("publishing"):
            other_run.set(key, "another run", px=60_000)

    write_events(config.events, {"a": (10, 9)})
    try:
        with pytest.raises(RefreshError, match="lost the refresh lock"):
            await refresh(redis, config, version="v2", say=take_the_lock)
        assert other_run.get(key) == b"another run"
    finally:
        other_run.close()
    assert (await redis.get(current_key(config.prefix))) == b"v1"
    assert (config.snapshot_dir / POINTER).read_text().strip() == "v1"


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


@pytest.fixture
async def on_cluster(cluster_url, config):
    """A Redis Cluster client and 60 items whose events are in ``config.events``."""
    items = {f"item-{i}": (20 + i, i % 5) for i in range(60)}
    write_events(config.events, items)
    redis = connect_redis(cluster_url, cluster=True)
    yield redis, items
    await redis.aclose()


async def test_publish_and_read_on_a_redis_cluster(on_cluster, config):
    """Item keys spread over the cluster's nodes; write, verify, read and expiry all work."""
    redis, items = on_cluster
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


async def test_a_killed_run_frees_the_lock_within_its_ttl(redis, config, cli_env, big_events):
    """SIGKILL the real job as soon as it holds the lock: the next run is refused (75)
    until the lock's TTL ends, and the run after that publishes."""
    key = f"{config.prefix}:refresh-lock"
    job = subprocess.Popen(refresh_args(config, big_events, "--lock-ttl-s", "5", "--version",
                                        "v1"), env=cli_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(60):
            while not await redis.exists(key):
                await asyncio.sleep(0.005)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(10)
    assert 0 < await redis.pttl(key) <= 5000  # renewed until the kill, then left to expire

    retry = refresh_args(config, config.events, "--version", "v2")
    busy = subprocess.run(retry, env=cli_env, capture_output=True, text=True)
    assert busy.returncode == 75, busy.stderr
    async with asyncio.timeout(7):  # freed by its TTL, with no one to renew it
        while await redis.exists(key):
            await asyncio.sleep(0.05)
    done = subprocess.run(retry, env=cli_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (await redis.get(current_key(config.prefix))) == b"v2"


async def test_a_run_killed_while_publishing_leaves_the_old_version_served(
        redis, config, cli_env, big_events):
    """SIGKILL the real job in the middle of its write: the pointer and the old values
    stay; once the lock has expired, a later run cleans up."""
    await refresh(redis, config, version="v1")
    cmd = refresh_args(config, big_events, "--lock-ttl-s", "3")
    job = subprocess.Popen([*cmd, "--version", "v2"], env=cli_env, stderr=subprocess.DEVNULL,
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

    async with asyncio.timeout(5):
        while await redis.exists(f"{config.prefix}:refresh-lock"):
            await asyncio.sleep(0.05)
    done = subprocess.run([*cmd, "--version", "v3"], env=cli_env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["orphan_versions_expiring"] == ["v2"] and summary["previous"] == "v1"
    assert 0 < await redis.ttl(item_key(config.prefix, "v2", "i0")) <= 600


async def test_republish_restores_a_redis_that_lost_its_data(redis, config, cli_env):
    """Refresh, lose every key, then one command: the store serves the same values again."""
    await refresh(redis, config, version="v1")
    assert (config.snapshot_dir / POINTER).read_text().strip() == "v1"
    store = FeatureStore(redis, config.prefix, pointer_ttl_s=0.0)
    before = await store.fetch(["a", "b", "unknown"])
    assert before.degraded is None

    await drop_prefix(redis, config.prefix)
    lost = await store.fetch(["a", "b", "unknown"])
    assert lost.degraded == "no_feature_version" and lost.missing.all()

    run = subprocess.run([*FEATURES, "republish", "--snapshot-dir", str(config.snapshot_dir)],
                         env=cli_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = orjson.loads(run.stdout)
    assert summary["version"] == "v1" and summary["items"] == 2
    assert summary["previous"] is None
    after = await store.fetch(["a", "b", "unknown"])
    assert after.degraded is None and after.missing.tolist() == [False, False, True]
    for name, values in before.values.items():
        assert after.values[name].tolist() == values.tolist(), name
    assert await redis.ttl(item_key(config.prefix, "v1", "a")) == -1


async def test_republish_without_a_snapshot_fails_and_changes_nothing(redis, config, cli_env,
                                                                     tmp_path):
    await refresh(redis, config, version="v1")
    state = await dump_prefix(redis, config.prefix)
    for args, error in ((["--version", "v0"], "no snapshot"),
                        (["--snapshot-dir", str(tmp_path / "empty")], "no published version")):
        run = subprocess.run([*FEATURES, "republish", "--snapshot-dir",
                              str(config.snapshot_dir), *args], env=cli_env,
                             capture_output=True, text=True)
        assert run.returncode == 1 and error in run.stderr, run.stderr
    assert await dump_prefix(redis, config.prefix) == state
    assert (config.snapshot_dir / POINTER).read_text().strip() == "v1"


async def test_republish_on_a_redis_cluster(on_cluster, config):
    redis, items = on_cluster
    await refresh(redis, config, version="v1")
    store = FeatureStore(redis, config.prefix, pointer_ttl_s=0.0)
    before = await store.fetch(list(items))
    await drop_prefix(redis, config.prefix)
    assert (await store.fetch(list(items))).degraded == "no_feature_version"

    summary = await republish(redis, config)
    assert summary["version"] == "v1" and summary["items"] == len(items)
    after = await store.fetch(list(items))
    assert after.degraded is None and not after.missing.any()
    assert after.values["ctr"].tolist() == before.values["ctr"].tolist()


async def test_the_dev_redis_keeps_its_versions_over_a_restart(tmp_path, config):
    """devstack's Redis writes an append-only file: a restart is not a data loss."""
    server = devstack.start_redis(tmp_path / "redis")
    try:
        client = aioredis.Redis.from_url(server.url)
        await refresh(client, config, version="v1")
        await client.aclose()
    finally:
        devstack.stop(server.pid)
    server = devstack.start_redis(tmp_path / "redis")
    client = aioredis.Redis.from_url(server.url)
    try:
        batch = await FeatureStore(client, config.prefix, pointer_ttl_s=0.0).fetch(["a"])
        assert batch.degraded is None and not batch.missing.any()
    finally:
        await client.aclose()
        devstack.stop(server.pid)
