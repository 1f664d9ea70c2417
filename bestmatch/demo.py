"""Build a runnable demo marketplace into the configured backends.

1. simulate the marketplace: Japanese/English listings and two weeks of search logs
   (:mod:`training.simulator`);
2. index the listings (embedded tantivy index by default, or the real engine);
3. compute item features from the logs with the nightly refresh job and publish them
   (snapshot files by default, or Redis);
4. check the ranking model is there (``models/ltr`` ships with the repository).

Each step is skipped when its result is already there, so a second run is quick. With
real backends configured (``BESTMATCH_ENGINE`` / ``BESTMATCH_FEATURE_STORE``) the dev
OpenSearch and Redis are started or reused first.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from app.settings import Settings, get_settings


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def demo_settings() -> Settings:
    """The configured settings; real backends get the dev servers' URLs unless set."""
    settings = get_settings()
    if settings.engine != "embedded" or settings.feature_store != "snapshot":
        import devstack

        servers = devstack.up()
        os.environ.setdefault("BESTMATCH_ENGINE_URL", servers["opensearch"].url)
        os.environ.setdefault("BESTMATCH_REDIS_URL", servers["redis"].url)
        get_settings.cache_clear()
        settings = get_settings()
    return settings


def build_demo(n_listings: int, seed: int, workdir: Path, sessions: int | None = None,
               settings: Settings | None = None) -> Settings:
    settings = settings or demo_settings()
    sim_dir = Path(workdir) / f"sim-{n_listings}-seed{seed}"
    _say(f"1/4 marketplace: {n_listings} listings and their search logs in {sim_dir}")
    summary = _simulate(sim_dir, n_listings, sessions or max(n_listings // 2, 500), seed)
    _say(f"2/4 index: '{settings.index_alias}' in the {settings.engine} engine")
    asyncio.run(_index(settings, sim_dir / "listings.jsonl", n_listings))
    _say(f"3/4 features: item CTR and impression probability from the logs "
         f"({settings.feature_store} store)")
    _features(settings, sim_dir, datetime.fromisoformat(summary["now"]),
              f"demo-{n_listings}-seed{seed}-{summary['now'][:10]}")
    _say("4/4 model")
    _check_model(settings)
    return settings


def _simulate(sim_dir: Path, n_listings: int, sessions: int, seed: int) -> dict:
    done = sim_dir / "summary.json"
    if done.exists():
        _say("   already simulated")
        return json.loads(done.read_text())
    from tqdm import tqdm

    from training.simulator.run import SimConfig, simulate
    from training.simulator.sessions import SessionConfig

    bar = tqdm(total=sessions, desc="sessions", unit="", leave=False, file=sys.stderr)
    summary = simulate(sim_dir, SimConfig(listings=n_listings, seed=seed,
                                          sessions=SessionConfig(sessions=sessions, seed=seed)),
                       bar.update)
    bar.close()
    _say(f"   {summary['requests']} searches simulated in {summary['seconds']} s")
    return summary


async def _index(settings: Settings, catalog: Path, n_listings: int) -> None:
    from app.backends import open_engine
    from feature_jobs.index_catalog import index_catalog

    engine = open_engine(settings, timeout_s=60.0)
    try:
        if (await engine.alias_targets(settings.index_alias)
                and await engine.count(settings.index_alias) == n_listings):
            _say("   already indexed")
            return
        _say("   tokenising with SudachiPy and indexing")
        with open(catalog, "rb") as lines:
            report = await index_catalog(engine, settings.index_alias, lines)
        _say(f"   {report.indexed} listings indexed in {report.seconds} s")
    finally:
        await engine.close()


def _features(settings: Settings, sim_dir: Path, now: datetime, version: str) -> None:
    from feature_jobs.refresh import RefreshConfig, refresh_snapshot

    config = RefreshConfig(events=sim_dir / "events.parquet", snapshot_dir=settings.snapshot_dir,
                           prefix=settings.feature_prefix, end=now)
    if settings.feature_store == "snapshot":
        from app.snapshot_store import publish_snapshot, published_version

        if published_version(settings.snapshot_dir) == version:
            _say("   already published")
            return
        if (settings.snapshot_dir / f"{version}.parquet").exists():  # e.g. by the Redis job
            publish_snapshot(settings.snapshot_dir, version)
            _say(f"   already computed; published version {version}")
            return
        summary: dict | None = refresh_snapshot(config, version)
    else:
        summary = asyncio.run(_refresh_redis(settings, config, version))
    if summary is None:  # already published
        return
    _say(f"   {summary['items']} items published as version {version}")


async def _refresh_redis(settings: Settings, config, version: str) -> dict | None:
    from app.feature_store import connect_redis, current_key
    from feature_jobs.refresh import refresh

    redis = connect_redis(settings.redis_url, settings.redis_cluster)
    try:
        if await redis.get(current_key(settings.feature_prefix)) == version.encode():
            _say("   already published")
            return None
        return await refresh(redis, config, version)
    finally:
        await redis.aclose()


def _check_model(settings: Settings) -> None:
    from app.scoring import ModelError, resolve_version

    try:
        path = resolve_version(settings.models_dir, settings.model_name, settings.model_version)
    except ModelError as exc:
        raise SystemExit(f"[demo] {exc}") from None
    if not (path / "model.onnx").exists():
        raise SystemExit(f"[demo] {path}/model.onnx is missing: models/ltr ships with the "
                         "repository; `bestmatch model baseline` writes the baseline")
    _say(f"   {path}")
