"""Build a runnable demo: dev servers, a generated catalog, item features, a model.

Every step is skipped when its result is already there, so a second run is quick.
The item features are synthetic (drawn from each listing's image score and condition)
until the nightly refresh job computes them from event logs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import orjson


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def build_demo(n_listings: int, seed: int, workdir: Path) -> None:
    import devstack

    servers = devstack.up()
    os.environ.setdefault("BESTMATCH_ENGINE_URL", servers["opensearch"].url)
    os.environ.setdefault("BESTMATCH_REDIS_URL", servers["redis"].url)
    from app.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()

    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / f"listings-{n_listings}-seed{seed}.jsonl"
    if not catalog.exists():
        from training.simulator import generate_listings

        _say(f"generating {n_listings} listings -> {catalog}")
        tmp = catalog.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for row in generate_listings(n_listings, seed):
                out.write(orjson.dumps(row) + b"\n")
        tmp.rename(catalog)
    asyncio.run(_index_and_features(settings, catalog, n_listings, seed))

    from training.baseline_model import write_baseline

    if not (settings.models_dir / "baseline").exists():
        _say(f"writing the baseline model -> {write_baseline(settings.models_dir)}")
    _say(f"ready: engine {settings.engine_url}, redis {settings.redis_url}")


async def _index_and_features(settings, catalog: Path, n_listings: int, seed: int) -> None:
    import redis.asyncio as aioredis

    from app.engines import connect
    from app.feature_store import current_key, switch_version, write_version
    from feature_jobs.index_catalog import index_catalog

    engine = connect(settings.engine, settings.engine_url, 60.0)
    try:
        targets = await engine.alias_targets(settings.index_alias)
        healthy = targets and (await engine.health(settings.index_alias))["status"] != "red"
        if not healthy or await engine.count(settings.index_alias) != n_listings:
            _say(f"indexing {catalog} (tokenising with SudachiPy; about 1 min per 20k)")
            with open(catalog, "rb") as lines:
                report = await index_catalog(engine, settings.index_alias, lines)
            _say(f"indexed {report.indexed} listings into {report.index}")
        else:
            _say(f"index {targets[0]} already holds the catalog")
    finally:
        await engine.close()

    version = f"demo-{n_listings}-seed{seed}"
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        current = await redis.get(current_key(settings.feature_prefix))
        if current != version.encode():
            _say(f"writing synthetic item features as version {version}")
            await write_version(redis, settings.feature_prefix, version,
                                _synthetic_features(catalog, seed))
            await switch_version(redis, settings.feature_prefix, version)
    finally:
        await redis.aclose()


def _synthetic_features(catalog: Path, seed: int):
    rng = np.random.default_rng(seed + 1)
    with open(catalog, "rb") as lines:
        rows = [orjson.loads(line) for line in lines]
    impressions = rng.poisson(rng.lognormal(4.0, 1.2, len(rows)))
    total = max(int(impressions.sum()), 1)
    for row, imp in zip(rows, impressions, strict=True):
        p = 0.01 + 0.05 * row["image_score"] + (0.02 if row["condition"] == "new" else 0.0)
        clicks = rng.binomial(int(imp), p)
        ctr = (clicks + 2.0) / (imp + 100.0)  # the same Beta(2, 98) prior as DEFAULT_PRIORS
        yield row["id"], ctr, float(imp), imp / total
