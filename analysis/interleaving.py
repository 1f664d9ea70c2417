"""Team-draft interleaving, offline: credit per request, preference per unit, significance.

**Credit** (Radlinski, Kurup, Joachims, CIKM 2008). Each impression row of an interleaved
request carries ``team`` ("a" or "b"), the ranker that contributed the item
(:mod:`app.interleaving`). A request's credit for a team is the number of distinct items
of that team with the signal (``click`` or ``purchase``); the request is won by the team
with more credit, a tie when both have the same non-zero credit, and has no outcome when
no item of it got the signal (it is left out, as in Chapelle et al. 2012). Signals on
items without an interleaved impression are ignored.

**Units.** Requests of the same user are not independent, so the observations are
units: the user id, or the session id of an anonymous request (as in
:mod:`app.experiments`). A unit prefers A when A won more of its requests than B, B
when fewer, and is tied otherwise; units without an outcome are left out.

**Statistics.**

- Δ_AB (Chapelle, Joachims, Radlinski, Yue, "Large-scale validation and analysis of
  interleaved search evaluation", TOIS 2012): ``(wins_A + ties / 2) / n - 1/2`` over the
  n units, positive when A is preferred, in [-1/2, 1/2].
- A 95% bootstrap CI of Δ, resampling units with replacement (seeded). Δ depends only
  on the three counts, so a resample is a multinomial draw of them: exact, and O(1) per
  resample whatever the number of units.
- A two-sided sign test over the non-tied units (H0: a unit prefers A or B with
  probability 1/2): exact binomial up to 1000 units, normal approximation with
  continuity correction above.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SIGNALS = ("click", "purchase")
EXACT_MAX = 1000  # non-tied units up to which the sign test is exact


def _unit(columns: list[str]) -> pl.Expr:
    """The unit: user id, else session id."""
    present = [c for c in ("user_id", "session_id") if c in columns]
    if not present:
        raise ValueError("events need a user_id or a session_id column")
    return pl.coalesce(present).cast(pl.String).alias("unit")


def credit(events: pl.DataFrame, signal: str = "click") -> pl.DataFrame:
    """Per interleaved request: ``request_id``, ``unit``, ``credit_a``, ``credit_b`` and
    ``outcome`` ("a", "b", "tie", or null when no item of the request got the signal)."""
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    shown = (events.filter((pl.col("event") == "impression") & pl.col("team").is_in(["a", "b"]))
             .select("request_id", "item_id", "team", _unit(events.columns))
             .unique(["request_id", "item_id"], keep="first"))
    hits = (events.filter(pl.col("event") == signal)
            .select("request_id", "item_id").unique().with_columns(hit=pl.lit(True)))
    hit = pl.col("hit").fill_null(False)
    per_request = (shown.join(hits, on=["request_id", "item_id"], how="left")
                   .group_by("request_id", maintain_order=True)
                   .agg(pl.col("unit").first(),
                        credit_a=(hit & (pl.col("team") == "a")).sum(),
                        credit_b=(hit & (pl.col("team") == "b")).sum()))
    a, b = pl.col("credit_a"), pl.col("credit_b")
    outcome = (pl.when(a > b).then(pl.lit("a")).when(b > a).then(pl.lit("b"))
               .when(a > 0).then(pl.lit("tie")).otherwise(None))
    return per_request.with_columns(outcome=outcome)


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided p-value of ``wins_a`` successes in ``wins_a + wins_b`` fair coin flips."""
    n, k = wins_a + wins_b, min(wins_a, wins_b)
    if n == 0:
        return 1.0
    if n <= EXACT_MAX:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    else:
        z = (n / 2 - k - 0.5) / math.sqrt(n / 4)
        tail = 0.5 * math.erfc(z / math.sqrt(2))
    return min(1.0, 2 * tail)


def bootstrap_delta(wins_a: int, wins_b: int, ties: int, n_boot: int = 10_000,
                    seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of Δ_AB, resampling the units (a multinomial draw of the counts)."""
    n = wins_a + wins_b + ties
    if n == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).multinomial(n, np.array([wins_a, wins_b, ties]) / n,
                                                    size=n_boot)
    deltas = (draws[:, 0] + draws[:, 2] / 2) / n - 0.5
    low, high = np.quantile(deltas, [0.025, 0.975])
    return float(low), float(high)


def analyse_interleaving(events: pl.DataFrame, signal: str = "click", alpha: float = 0.05,
                         n_boot: int = 10_000, seed: int = 0) -> dict:
    """Which ranker the units prefer on ``signal``: counts, Δ_AB with its CI, sign test."""
    requests = credit(events, signal)
    decided = requests.filter(pl.col("outcome").is_not_null())
    units = (decided.group_by("unit")
             .agg(a=(pl.col("outcome") == "a").sum(), b=(pl.col("outcome") == "b").sum()))
    unit_a = units.filter(pl.col("a") > pl.col("b")).height
    unit_b = units.filter(pl.col("b") > pl.col("a")).height
    unit_ties = units.height - unit_a - unit_b
    n = units.height
    delta = (unit_a + unit_ties / 2) / n - 0.5 if n else math.nan
    ci_low, ci_high = bootstrap_delta(unit_a, unit_b, unit_ties, n_boot, seed)
    p_value = sign_test(unit_a, unit_b)
    preferred = "no preference"
    if p_value < alpha:
        preferred = "a" if unit_a > unit_b else "b"
    outcomes = decided["outcome"]
    return {
        "signal": signal, "units": n, "requests": requests.height,
        "requests_with_signal": decided.height,
        "request_wins_a": int((outcomes == "a").sum()),
        "request_wins_b": int((outcomes == "b").sum()),
        "request_ties": int((outcomes == "tie").sum()),
        "unit_wins_a": unit_a, "unit_wins_b": unit_b, "unit_ties": unit_ties,
        "delta": delta, "ci_low": ci_low, "ci_high": ci_high,
        "p_value": p_value, "preferred": preferred,
    }
