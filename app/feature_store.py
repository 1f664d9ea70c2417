"""Redis feature store: per-item CTR, impressions and impression probability.

Keyspace (``prefix`` defaults to ``bm:feat``)::

    {prefix}:current             -> version name of the served snapshot (the pointer)
    {prefix}:versions            -> set of versions written and not yet expiring
    {prefix}:{version}:meta      -> JSON: priors, item count, created_at
    {prefix}:{version}:{item_id} -> 12 bytes: float32 LE ctr, impressions, impression_prob

A publisher writes a whole new version, then moves the pointer in one SET, so readers
never see a half-written snapshot. Readers fetch all candidates with one MGET; on Redis
Cluster (``redis_cluster``) item keys spread over all slots, and the MGET is split per
slot and sent to the owning nodes in one pipelined round (redis-py's
``mget_nonatomic``: a version never changes, so atomicity across slots is not needed). Items
the version does not hold get the version's priors (or DEFAULT_PRIORS); when Redis is
slow or down the batch is flagged, items not in the local cache get priors, and Redis
is left alone for ``retry_after_s`` so an outage does not add a timeout to every
request. Values of the served version are cached in-process (``cache_items``): a
published version never changes, so the cache only resets when the pointer moves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import cast, overload

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.feature_spec import DEFAULT_PRIORS, STORE_FEATURES
from app.interfaces import FeatureBatch

VALUE_DTYPE = np.dtype("<f4")
VALUE_BYTES = VALUE_DTYPE.itemsize * len(STORE_FEATURES)


def pack(values: Iterable[float]) -> bytes:
    return np.asarray(list(values), dtype=VALUE_DTYPE).tobytes()


RedisClient = aioredis.Redis | RedisCluster  # one server, or a Redis Cluster


def connect_redis(url: str, cluster: bool = False, timeout_s: float | None = None,
                  ) -> RedisClient:
    """A client for one Redis server, or for a Redis Cluster reached through any node."""
    client = RedisCluster if cluster else aioredis.Redis
    return client.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


@overload
def text(raw: None) -> None: ...
@overload
def text(raw: bytes | str) -> str: ...
@overload
def text(raw: bytes | str | None) -> str | None: ...
def text(raw: bytes | str | None) -> str | None:
    """A Redis reply as text (our clients answer bytes)."""
    return raw.decode() if isinstance(raw, bytes) else raw


async def mget(redis: RedisClient, keys: list[str]) -> list[bytes | None]:
    """MGET, split per slot on a cluster."""
    if isinstance(redis, RedisCluster):
        return cast(list[bytes | None], await redis.mget_nonatomic(keys))
    return cast(list[bytes | None], await redis.mget(keys))


def current_key(prefix: str) -> str:
    return f"{prefix}:current"


def versions_key(prefix: str) -> str:
    return f"{prefix}:versions"


def meta_key(prefix: str, version: str) -> str:
    return f"{prefix}:{version}:meta"


def item_key(prefix: str, version: str, item_id: str) -> str:
    return f"{prefix}:{version}:{item_id}"


class FeatureStore:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "bm:feat",
        timeout_s: float = 0.05,
        pointer_ttl_s: float = 1.0,
        retry_after_s: float = 1.0,
        cache_items: int = 200_000,
    ):
        self.redis = redis
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.pointer_ttl_s = pointer_ttl_s
        self.retry_after_s = retry_after_s
        self.cache_items = cache_items
        self._version: str | None = None
        self._prior_bytes = pack(DEFAULT_PRIORS[f] for f in STORE_FEATURES)
        # Values of the current version, which never change once published: a cache
        # that needs no invalidation but a reset when the pointer moves.
        self._cache: dict[str, bytes] = {}
        self._checked_at = -float("inf")
        self._skip_until = -float("inf")

    @property
    def version(self) -> str | None:
        """The snapshot version read last (None before the first read)."""
        return self._version

    async def _refresh_pointer(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.pointer_ttl_s:
            return
        version = text(await self.redis.get(current_key(self.prefix)))
        if version != self._version:
            meta = await self.redis.get(meta_key(self.prefix, version)) if version else None
            priors = {**DEFAULT_PRIORS, **(orjson.loads(meta).get("priors", {}) if meta else {})}
            self._prior_bytes = pack(priors[f] for f in STORE_FEATURES)
            self._cache = {}
            self._version = version
        self._checked_at = now

    async def _read(self, item_ids: list[str]) -> list[bytes | None]:
        """Packed values (b"" = not in the version) from the cache, then one MGET."""
        cache = self._cache
        values = [cache.get(i) for i in item_ids]
        misses = [k for k, v in enumerate(values) if v is None]
        if not misses:
            return values
        version = cast(str, self._version)  # read only while a version is served
        raw = await mget(self.redis, [item_key(self.prefix, version, item_ids[k])
                                      for k in misses])
        room = self.cache_items - len(cache)
        for k, v in zip(misses, raw, strict=True):
            values[k] = v = v or b""
            if room > 0:
                cache[item_ids[k]] = v
                room -= 1
        return values

    def _decode(self, raw: list[bytes | None], reason: str | None = None) -> FeatureBatch:
        """None or b"" -> the version's priors (``missing``); else the stored values."""
        missing = np.fromiter((not v for v in raw), dtype=bool, count=len(raw))
        prior = self._prior_bytes
        buf = b"".join(v or prior for v in raw)
        table = np.frombuffer(buf, dtype=VALUE_DTYPE).reshape(len(raw), len(STORE_FEATURES))
        values = {name: table[:, j] for j, name in enumerate(STORE_FEATURES)}
        return FeatureBatch(values, missing, reason)

    async def fetch(self, item_ids: list[str]) -> FeatureBatch:
        """Features of ``item_ids`` in order; never raises for store trouble.

        When Redis fails, cached values of the last known version are still served and
        only the rest falls back to priors (and the batch is flagged).
        """
        if time.monotonic() >= self._skip_until:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._refresh_pointer()
                    if self._version is None:
                        return self._decode([None] * len(item_ids), "no_feature_version")
                    return self._decode(await self._read(item_ids))
            except (RedisError, OSError, TimeoutError):
                self._skip_until = time.monotonic() + self.retry_after_s
                self._checked_at = -float("inf")
        cache = self._cache
        return self._decode([cache.get(i) for i in item_ids], "feature_store_unavailable")

    async def ping(self) -> bool:
        """Redis answers; the version pointer is re-read too, so :attr:`version` says
        whether a version is served (None after Redis lost its data)."""
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                ok = bool(await self.redis.ping())
                await self._refresh_pointer()
                return ok
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()


async def write_version(
    redis: RedisClient,
    prefix: str,
    version: str,
    rows: Iterable[tuple[str, float, float, float]],
    priors: dict[str, float] | None = None,
    chunk: int = 10_000,
    on_chunk: Callable[[int], None] = lambda n: None,
) -> int:
    """Write one snapshot (item_id, ctr, impressions, impression_prob) under ``version``,
    ``chunk`` items per MSET (split per slot on a cluster); ``on_chunk(n)`` after each.

    Does not move the pointer: call :func:`switch_version` once the write is verified.
    """
    count = 0
    rows = iter(rows)
    while batch := list(islice(rows, chunk)):
        packed = np.asarray([values for _, *values in batch], dtype=VALUE_DTYPE).tobytes()
        mapping = {item_key(prefix, version, item_id): packed[k * VALUE_BYTES:
                                                              (k + 1) * VALUE_BYTES]
                   for k, (item_id, *_) in enumerate(batch)}
        if isinstance(redis, RedisCluster):
            await redis.mset_nonatomic(mapping)
        else:
            await redis.mset(mapping)
        count += len(batch)
        on_chunk(len(batch))
    meta = {"priors": {**DEFAULT_PRIORS, **(priors or {})}, "items": count,
            "created_at": time.time()}
    await redis.set(meta_key(prefix, version), orjson.dumps(meta))
    return count


async def switch_version(redis: RedisClient, prefix: str, version: str) -> None:
    await redis.set(current_key(prefix), version)
