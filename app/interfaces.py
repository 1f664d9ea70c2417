"""The declared interfaces between the search pipeline and its backends.

:class:`SearchEngine`: OpenSearch and Elasticsearch (:class:`app.engines.Engine`) and the
embedded tantivy engine (:class:`app.embedded_engine.EmbeddedEngine`) implement it.
:class:`FeatureSource`: Redis and Redis Cluster (:class:`app.feature_store.FeatureStore`)
and the snapshot files (:class:`app.snapshot_store.SnapshotFeatureStore`) implement it.
The pipeline (:mod:`app.search`) and the jobs see only these, and the two engine errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from app.recall import RecallQuery


class EngineUnavailable(Exception):
    """The engine could not answer (down, timed out or failing)."""


class EngineRequestError(Exception):
    """The engine rejected the request: a missing index (404) or a bad query/mapping."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BulkResult:
    indexed: int
    errors: list[dict]


@runtime_checkable
class SearchEngine(Protocol):
    """Recall and index management; failures raise the two errors above."""

    async def search(self, index: str, query: RecallQuery) -> list[dict]:
        """Hits as ``{"_id", "_score", "_source"}``, best first."""
        ...

    async def health(self, index: str | None = None) -> dict: ...
    async def create_index(self, name: str, body: dict) -> None: ...
    async def delete_index(self, name: str) -> None: ...
    async def refresh(self, index: str) -> None: ...
    async def count(self, index: str) -> int: ...
    async def indices(self, pattern: str) -> list[str]: ...

    async def alias_targets(self, alias: str) -> list[str]:
        """Indices the alias points to now ([] when it does not exist)."""
        ...

    async def point_alias(self, alias: str, index: str) -> list[str]:
        """Atomically move ``alias`` to ``index``; returns the indices it left."""
        ...

    async def bulk(self, actions: Iterable[dict], chunk_size: int = 1000) -> BulkResult:
        """Send bulk actions; per-document failures are returned, not raised."""
        ...

    async def close(self) -> None: ...


@dataclass
class FeatureBatch:
    values: dict[str, np.ndarray]  # STORE_FEATURES -> float array [N]
    missing: np.ndarray  # bool [N]: prior used
    degraded: str | None = None  # reason, when the store could not be read


@runtime_checkable
class FeatureSource(Protocol):
    """Item features of the served version; never raises for store trouble."""

    @property
    def version(self) -> str | None:
        """The version served (None: none)."""
        ...

    async def fetch(self, item_ids: list[str]) -> FeatureBatch:
        """Values of ``item_ids`` in order; priors and ``missing`` where absent."""
        ...

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
