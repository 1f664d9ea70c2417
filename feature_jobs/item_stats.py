"""Per-item engagement statistics from impression and click events.

This is the arithmetic of the feature store's values, shared by the nightly refresh and
by training's point-in-time features, so both compute exactly the same numbers:

- ``impressions``, ``clicks``: counts in the window;
- ``ctr`` = (clicks + m * prior) / (impressions + m): a Beta prior worth ``m``
  impressions at the default CTR, so an item seen 3 times with 1 click scores near the
  prior (0.06 with m = 20), not 0.33;
- ``impression_prob`` = item impressions / all impressions in the window.

The logic is two plain SQL statements, run here by Polars' SQL engine on lazy frames
(streaming, no server). The same text runs on Spark SQL when the logs outgrow one
machine: register the events as a view named ``events`` (columns ``ts`` timestamp,
``event``, ``item_id``; session time zone UTC), run :data:`DAILY_COUNTS_SQL` into a
view ``daily_counts`` (filtered to the window), then :func:`item_stats_sql`.
"""

from __future__ import annotations

import polars as pl

from app.feature_spec import DEFAULT_PRIORS

PRIOR_STRENGTH = 20.0  # m: pseudo-impressions of the CTR prior

DAILY_COUNTS_SQL = """
SELECT CAST(ts AS DATE) AS day,
       item_id,
       SUM(CASE WHEN event = 'impression' THEN 1 ELSE 0 END) AS impressions,
       SUM(CASE WHEN event = 'click' THEN 1 ELSE 0 END) AS clicks
FROM events
WHERE event IN ('impression', 'click')
GROUP BY CAST(ts AS DATE), item_id
"""

_ITEM_STATS_SQL = """
WITH per_item AS (
    SELECT item_id,
           CAST(SUM(impressions) AS BIGINT) AS impressions,
           CAST(SUM(clicks) AS BIGINT) AS clicks
    FROM daily_counts
    GROUP BY item_id
), total AS (
    SELECT CAST(SUM(impressions) AS DOUBLE) AS all_impressions FROM per_item
)
SELECT item_id, impressions, clicks,
       (CAST(clicks AS DOUBLE) + {strength!r} * {prior_ctr!r})
           / (CAST(impressions AS DOUBLE) + {strength!r}) AS ctr,
       CAST(impressions AS DOUBLE) / all_impressions AS impression_prob
FROM per_item CROSS JOIN total
"""


def item_stats_sql(prior_ctr: float = DEFAULT_PRIORS["ctr"],
                   strength: float = PRIOR_STRENGTH) -> str:
    """Feature-store values per item from the view ``daily_counts`` (already windowed)."""
    return _ITEM_STATS_SQL.format(prior_ctr=float(prior_ctr), strength=float(strength))


def daily_counts(events: pl.LazyFrame) -> pl.LazyFrame:
    """(day, item_id, impressions, clicks) from rows with ``ts``, ``event``, ``item_id``."""
    return pl.SQLContext(events=events).execute(DAILY_COUNTS_SQL)


def item_stats(counts: pl.LazyFrame, prior_ctr: float = DEFAULT_PRIORS["ctr"],
               strength: float = PRIOR_STRENGTH) -> pl.LazyFrame:
    """Feature-store values per item from (item_id, impressions, clicks) rows of a window."""
    return pl.SQLContext(daily_counts=counts).execute(item_stats_sql(prior_ctr, strength))
