"""Reading event logs (the simulator's and the service's format) from Parquet or JSON lines."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def read_events(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """All rows (only ``columns`` when given), with ``ts`` as a UTC timestamp (unreadable
    times become null, for rejects)."""
    path = Path(path)
    if path.suffix == ".parquet":
        df = pl.read_parquet(path, columns=columns)
    else:
        df = pl.read_ndjson(path)
        df = df.select(columns) if columns else df
    if df.schema.get("ts") == pl.String:
        df = df.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False))
    return df


def set_aside(df: pl.DataFrame, reason: pl.Expr,
              rejects_path: Path | None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Split rows on ``reason`` (null = good): bad rows go, with their reason, to
    ``rejects_path`` (JSON lines); returns the good rows and the count per reason."""
    tagged = df.with_columns(reason.alias("reject_reason"))
    bad = tagged.filter(pl.col("reject_reason").is_not_null())
    if rejects_path is not None and len(bad):
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        bad.write_ndjson(rejects_path)
    counts = dict(bad.group_by("reject_reason").len().iter_rows())
    return tagged.filter(pl.col("reject_reason").is_null()).drop("reject_reason"), counts
