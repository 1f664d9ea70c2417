"""Simulate a marketplace into a directory, in the formats a real one would hand over.

Files written to ``out_dir``:

- ``listings.jsonl``: the catalog (the shape ``bestmatch index`` reads).
- ``events.parquet``: the event log, one row per event: ``request_id``, ``session_id``,
  ``user_id``, ``query``, ``ts`` (UTC), ``event`` (impression, click, like, comment,
  purchase), ``item_id``, ``position`` (1-based), ``recall_rank`` (0-based rank in the
  engine's order), ``recall_score`` (engine score), ``ranker`` (recall or shuffle).
- ``truth.parquet``: the simulator's true relevance of every shown item
  (``request_id``, ``item_id``, ``position``, ``relevance`` 0..4, ``utility``): for
  evaluation only, never a training input.
- ``queries.jsonl`` (query text, intent kind, popularity) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from training.simulator.catalog import generate_catalog
from training.simulator.queries import generate_queries
from training.simulator.recall import TextIndex
from training.simulator.sessions import SessionConfig, Simulator

FILES = ("listings.jsonl", "events.parquet", "truth.parquet", "queries.jsonl", "summary.json")


@dataclass(frozen=True)
class SimConfig:
    listings: int = 100_000
    queries: int = 3_000
    seed: int = 0
    now: str = ""  # ISO date-time the log window ends at; "" = today 00:00 UTC
    sessions: SessionConfig = field(default_factory=SessionConfig)


def simulate(out_dir: Path, config: SimConfig, progress=None) -> dict:
    """Generate catalog, queries and sessions; write them (see module doc); return a summary."""
    t0 = time.perf_counter()
    now = (datetime.fromisoformat(config.now) if config.now
           else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
    catalog = generate_catalog(config.listings, config.seed, now)
    queries = generate_queries(config.queries, config.seed)
    index = TextIndex(catalog)
    sim = Simulator(catalog, queries, index, config.sessions, int(now.timestamp() * 1000))
    events, truth = sim.run(progress)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "listings.jsonl", "wb") as f:
        for row in catalog.rows():
            f.write(orjson.dumps(row) + b"\n")
    with open(out_dir / "queries.jsonl", "wb") as f:
        for text, intent, p in zip(queries.texts, queries.intents, queries.popularity,
                                   strict=True):
            row = {"query": text, "kind": intent.kind, "popularity": float(p)}
            f.write(orjson.dumps(row) + b"\n")
    events.write_parquet(out_dir / "events.parquet")
    truth.write_parquet(out_dir / "truth.parquet")
    counts = events.group_by("event").len().sort("event")
    summary = {
        "config": asdict(config),
        "now": now.isoformat(),
        "requests": events["request_id"].n_unique(),
        "events": dict(zip(counts["event"].to_list(), counts["len"].to_list(), strict=True)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
