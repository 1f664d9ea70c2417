"""The configured backends: embedded (the zero-setup default) or real servers.

``BESTMATCH_ENGINE`` picks the search engine (``embedded`` tantivy on disk, or an
OpenSearch / Elasticsearch cluster) and ``BESTMATCH_FEATURE_STORE`` the item features
(``snapshot`` files of the refresh job, or Redis). Both kinds answer the same
interface (:mod:`app.interfaces`), and the contract tests run one suite against both.
"""

from __future__ import annotations

from app.embedded_engine import EmbeddedEngine
from app.engines import connect
from app.feature_store import FeatureStore, connect_redis
from app.interfaces import FeatureSource, SearchEngine
from app.settings import Settings
from app.snapshot_store import SnapshotFeatureStore


def open_engine(settings: Settings, timeout_s: float | None = None) -> SearchEngine:
    if settings.engine == "embedded":
        return EmbeddedEngine(settings.embedded_index_dir, settings.embedded_bm25_top_n)
    return connect(settings.engine, settings.engine_url, timeout_s or settings.engine_timeout_s)


def open_feature_store(settings: Settings) -> FeatureSource:
    if settings.feature_store == "snapshot":
        return SnapshotFeatureStore(settings.snapshot_dir, settings.feature_pointer_ttl_s)
    redis = connect_redis(settings.redis_url, settings.redis_cluster, settings.redis_timeout_s)
    return FeatureStore(redis, settings.feature_prefix, settings.redis_timeout_s,
                        settings.feature_pointer_ttl_s, settings.redis_retry_after_s,
                        settings.feature_cache_items)
