"""The embedded feature store: item features from the refresh job's snapshot files.

Zero-setup mode (``BESTMATCH_FEATURE_STORE=snapshot``): instead of Redis, the service
reads ``{snapshot_dir}/{version}.parquet`` (written by ``bestmatch features refresh``,
the system of record) for the version named in ``{snapshot_dir}/CURRENT``, with the
priors of ``{version}.meta.json``. Publishing a version is writing its snapshot, then
replacing ``CURRENT`` in one rename, so a reader sees the old or the new version, never
half of one. The pointer is re-read every ``pointer_ttl_s``, and the new values are
served without a restart. Items the version lacks get its priors and ``missing``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from app.feature_spec import DEFAULT_PRIORS, STORE_FEATURES
from app.feature_store import VALUE_DTYPE
from app.interfaces import FeatureBatch

POINTER = "CURRENT"
log = logging.getLogger(__name__)


def publish_snapshot(snapshot_dir: Path, version: str,
                     priors: dict[str, float] | None = None) -> None:
    """Point readers at ``{version}.parquet`` (already written) in one atomic rename;
    ``{version}.meta.json`` keeps the version's priors, as the Redis version's meta does."""
    if not (snapshot_dir / f"{version}.parquet").exists():
        raise FileNotFoundError(f"{snapshot_dir / version}.parquet does not exist")
    meta = {"priors": {**DEFAULT_PRIORS, **(priors or {})}, "created_at": time.time()}
    (snapshot_dir / f"{version}.meta.json").write_bytes(orjson.dumps(meta))
    tmp = snapshot_dir / f".{POINTER}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, snapshot_dir / POINTER)


def published_version(snapshot_dir: Path) -> str | None:
    """The version ``CURRENT`` names: the last one published (None: never)."""
    try:
        return (snapshot_dir / POINTER).read_text().strip()
    except FileNotFoundError:
        return None


class SnapshotFeatureStore:
    def __init__(self, snapshot_dir: Path, pointer_ttl_s: float = 1.0):
        self.snapshot_dir = Path(snapshot_dir)
        self.pointer_ttl_s = pointer_ttl_s
        self._version: str | None = None
        self._rows: dict[str, int] = {}
        self._priors = np.array([[DEFAULT_PRIORS[f] for f in STORE_FEATURES]], VALUE_DTYPE)
        self._table = self._priors  # rows of the version, then the priors (row -1)
        self._checked_at = -float("inf")

    @property
    def version(self) -> str | None:
        return self._version

    def _refresh_pointer(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.pointer_ttl_s:
            return
        self._checked_at = now
        version = published_version(self.snapshot_dir)
        if version is None or version == self._version:
            return
        try:
            snapshot = pl.read_parquet(self.snapshot_dir / f"{version}.parquet",
                                       columns=["item_id", *STORE_FEATURES])
            meta = orjson.loads((self.snapshot_dir / f"{version}.meta.json").read_bytes())
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            log.error("feature snapshot %s unreadable, still serving %s: %s", version,
                      self._version, exc)
            return
        priors = {**DEFAULT_PRIORS, **meta.get("priors", {})}
        values = snapshot.select(STORE_FEATURES).to_numpy().astype(VALUE_DTYPE)
        self._table = np.vstack([values, [[priors[f] for f in STORE_FEATURES]]])
        self._rows = {item: k for k, item in enumerate(snapshot["item_id"].to_list())}
        self._version = version

    async def fetch(self, item_ids: list[str]) -> FeatureBatch:
        self._refresh_pointer()
        if self._version is None:
            rows = np.full(len(item_ids), -1)
            reason = "no_feature_version"
        else:
            rows = np.fromiter((self._rows.get(i, -1) for i in item_ids), np.int64,
                               len(item_ids))
            reason = None
        values = self._table[rows]  # -1: the priors row
        return FeatureBatch({name: values[:, j] for j, name in enumerate(STORE_FEATURES)},
                            rows < 0, reason)

    async def ping(self) -> bool:
        self._refresh_pointer()
        return self.snapshot_dir.is_dir()

    async def close(self) -> None:
        pass
