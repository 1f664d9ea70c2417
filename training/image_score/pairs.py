"""Weak image-quality pairs mined from search logs (the published pair mining).

On one result page, two listings at nearby positions (at most ``max_gap`` apart) with a
similar price (within ``price_tolerance`` of each other), one clicked and one not: the
clicked one's photo is taken as the better one. Position and price, the strongest
other reasons for a click, are held roughly equal by construction; the rest is noise
the model averages over. Pairs feed the head's pairwise option where listing photos
are available.
"""

from __future__ import annotations

import polars as pl


def mine_pairs(events: pl.DataFrame, prices: pl.DataFrame, max_gap: int = 3,
               price_tolerance: float = 0.2) -> pl.DataFrame:
    """(request_id, better, worse) from impression/click events and (item_id, price)."""
    shown = (events.filter(pl.col("event") == "impression")
             .select("request_id", "item_id", "position").unique(["request_id", "item_id"]))
    clicked = (events.filter(pl.col("event") == "click")
               .select("request_id", "item_id").unique().with_columns(pl.lit(True).alias("c")))
    page = (shown.join(clicked, on=["request_id", "item_id"], how="left")
            .with_columns(pl.col("c").fill_null(False))
            .join(prices, on="item_id", how="inner"))
    pairs = page.filter("c").join(page.filter(~pl.col("c")), on="request_id", suffix="_w")
    return (pairs.filter(((pl.col("position") - pl.col("position_w")).abs() <= max_gap)
                         & ((pl.col("price") - pl.col("price_w")).abs()
                            <= price_tolerance * pl.max_horizontal("price", "price_w")))
            .select("request_id", pl.col("item_id").alias("better"),
                    pl.col("item_id_w").alias("worse")))
