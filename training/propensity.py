"""Position-bias propensities estimated from the logs' randomised pages.

On pages the ``shuffle`` ranker served, the items are in random order, so relevance is
independent of position and the click rate at position k is proportional to the
probability of examining position k (Joachims et al. 2017, RandTop-n). We take the
click rate per position on shuffled pages of genuine users (bots and tappers removed)
and fit ``P(examine k) = k ** -eta`` by weighted least squares on the log scale
(weights = clicks); the fit smooths the noisy tail where clicks are few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class Propensity:
    eta: float
    pages: int
    click_rate: list[float]  # observed, by position 1..n (index 0 = position 1)
    table: np.ndarray  # table[k] = fitted P(examine position k); table[0] unused

    def describe(self) -> dict:
        return {"eta": round(self.eta, 4), "shuffled_pages": self.pages,
                "method": "click rate by position on shuffled pages, fit k^-eta"}


def estimate_propensity(shuffled: pl.DataFrame, genuine_requests: pl.DataFrame,
                        max_position: int, table_positions: int | None = None) -> Propensity:
    """From the labelled impressions of randomised pages (positions up to
    ``max_position`` in random order): the simulator's ``shuffle`` pages, or the
    service's explored pages (their shuffled top). The fitted table covers
    ``table_positions`` (default ``max_position``), extrapolating the fit beyond the
    randomised positions."""
    shuffled = shuffled.join(genuine_requests.select("request_id"), on="request_id")
    by_pos = (shuffled.group_by("position")
              .agg((pl.col("label") >= 1).sum().alias("clicks"), pl.len().alias("shown"))
              .sort("position").filter(pl.col("position") <= max_position))
    pos = by_pos["position"].to_numpy().astype(np.float64)
    clicks = by_pos["clicks"].to_numpy().astype(np.float64)
    rate = clicks / np.maximum(by_pos["shown"].to_numpy(), 1)
    ok = clicks > 0
    if ok.sum() < 2:
        raise ValueError(
            f"too few clicks on shuffled pages ({int(clicks.sum())}) to estimate propensities")
    slope, _ = np.polyfit(np.log(pos[ok]), np.log(rate[ok]), 1, w=np.sqrt(clicks[ok]))
    eta = max(-float(slope), 0.0)
    size = max(table_positions or max_position, max_position)
    table = np.ones(size + 1)
    table[1:] = np.arange(1, size + 1) ** -eta
    return Propensity(eta, shuffled["request_id"].n_unique(), rate.round(5).tolist(), table)
