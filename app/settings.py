"""All service configuration, read from ``BESTMATCH_*`` environment variables.

Every field here is documented in README ("Configuration"); keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BESTMATCH_", extra="ignore")

    # --- search engine ---
    engine: Literal["embedded", "opensearch", "elasticsearch"] = Field(
        "embedded", description="embedded: tantivy on disk, no server (app/embedded_engine.py)")
    engine_url: str = "http://127.0.0.1:9200"
    embedded_index_dir: Path = Path("var/embedded/index")
    embedded_bm25_top_n: int = Field(
        4000, ge=1, description="embedded: BM25 matches the recency decay re-sorts")
    index_alias: str = "listings"
    engine_timeout_s: float = Field(0.5, gt=0)

    # --- recall ---
    candidates: int = Field(400, ge=1, le=2000, description="K: candidates recalled and re-ranked")
    recency_scale: str = "14d"
    recency_offset: str = "1d"
    recency_decay: float = Field(0.5, gt=0, lt=1)
    max_violation_score: float = Field(0.5, ge=0, le=1)
    max_page_size: int = Field(100, ge=1)
    result_window: int = Field(
        10_000, ge=1, description="newest flow: offset + size at most this; keep it at or "
                                  "below the index's index.max_result_window")

    # --- feature store ---
    feature_store: Literal["snapshot", "redis"] = Field(
        "snapshot", description="snapshot: the refresh job's files, no server")
    snapshot_dir: Path = Path("var/embedded/features")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(False, description="redis_url names a node of a Redis Cluster")
    feature_prefix: str = "bm:feat"
    redis_timeout_s: float = Field(0.05, gt=0)
    feature_pointer_ttl_s: float = Field(1.0, ge=0)
    redis_retry_after_s: float = Field(1.0, ge=0)
    feature_cache_items: int = Field(200_000, ge=0)

    # --- model ---
    models_dir: Path = Path("models")
    model_name: str = "ltr"
    model_version: str = "latest"
    onnx_device: Literal["auto", "cuda", "cpu"] = "auto"
    onnx_threads: int = Field(1, ge=1)

    # --- blend ---
    image_weight: float = 0.1

    # --- experiments ---
    experiments_file: Path | None = Field(
        None, description="YAML file of A/B experiments (app/experiments.py); none: default arm")
    experiments_poll_s: float = Field(
        2.0, gt=0, description="how often the experiments file is checked for changes")

    # --- served-feature log (off unless a directory is set) ---
    feature_log_dir: Path | None = Field(
        None, description="write served features of every best-match answer here (JSON lines)")
    feature_log_queue: int = Field(
        10_000, ge=1, description="records buffered in memory; more are dropped and counted")
    feature_log_max_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="start a new log file past this size")

    # --- moderation ---
    moderation_model_dir: Path | None = Field(
        None, description="models/moderation/<version>: enables POST /v1/moderate")

    # --- the server (`bestmatch serve`; its --host/--port/--workers override these) ---
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="processes; size to the cores")

    # --- request handling ---
    request_deadline_s: float = Field(1.0, gt=0)
    admin_token: str | None = None
    log_level: str = "INFO"


@lru_cache
def get_settings() -> Settings:
    return Settings()
