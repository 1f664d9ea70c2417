"""Reading event logs (the simulator's and the service's format) from Parquet or JSON lines."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def read_events(path: Path) -> pl.DataFrame:
    """All rows, with ``ts`` as a UTC timestamp (unreadable times become null, for rejects)."""
    path = Path(path)
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    if df.schema.get("ts") == pl.String:
        df = df.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False))
    return df
