"""From event logs to training lists: graded labels, data hygiene, point-in-time features.

One list per result page (request). An item's label is the highest grade its events
reached (``LabelConfig.grades``: click 1 < like 2 < comment 3 < purchase 4 by default).

Hygiene, each rule counted in the summary (a request gets the first reason that holds):

- malformed event rows (unknown event, missing ids, position < 1, item not in the
  catalog) are set aside with the reason (``rejects``), not dropped silently;
- ``bot``: a user who sends the same query at least ``bot_min_requests`` times in one
  day with a median gap of at most ``bot_max_gap_s`` seconds (all their requests go);
- ``tapper``: a user who clicks at least ``tap_ratio`` of at least
  ``tap_min_impressions`` impressions;
- ``no_click``: pages without any click (no signal for a listwise loss);
- ``click_only``: pages with clicks but nothing further (the published rule: clicks
  alone are too noisy a label);
- outlier items are removed from their lists: price at the 9,999,999 maximum, or
  listed more than ``max_age_days`` before the request.

Features come from the shared spec (:func:`app.feature_spec.raw_features`) and are
**point in time**: the store values of a request served on day d are the item stats of
the ``window_days`` before d (:mod:`feature_jobs.item_stats`), exactly what the nightly
refresh had published that day, so a label never leaks into its own features.

:func:`load_served_logs` builds the same lists from the service's served-feature log
(:mod:`app.feature_log`) joined by request id with the engagement events that followed:
the features are then exactly the ones served, over every re-ranked page a user saw.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from app import tokenizer
from app.feature_spec import (
    DEFAULT_PRIORS,
    DENSE_DIM,
    STORE_FEATURES,
    CandidateBlock,
    dense_matrix,
    raw_features,
    spec_hash,
)
from app.listings import CONDITION_ORDINAL, PRICE_MAX
from feature_jobs.events import read_events, set_aside
from feature_jobs.item_stats import daily_counts, item_stats


@dataclass(frozen=True)
class LabelConfig:
    grades: dict[str, int] = field(
        default_factory=lambda: {"click": 1, "like": 2, "comment": 3, "purchase": 4})
    bot_min_requests: int = 20
    bot_max_gap_s: float = 30.0
    tap_ratio: float = 0.5
    tap_min_impressions: int = 40
    max_age_days: float = 365.0
    window_days: int = 7


@dataclass
class Lists:
    """Padded result pages. Slot j of list i is the item shown at the j-th position."""

    dense: np.ndarray  # float32 [L, P, D], spec-transformed features
    title_ids: np.ndarray  # int32 [L, P, T]
    query_ids: np.ndarray  # int32 [L, Q]
    labels: np.ndarray  # float32 [L, P] engagement grade
    mask: np.ndarray  # bool [L, P]
    position: np.ndarray  # int16 [L, P], 1-based position shown
    request_ids: np.ndarray  # str [L]
    queries: np.ndarray  # str [L]
    item_ids: np.ndarray  # str [L, P] ("" = padding)

    def __len__(self) -> int:
        return len(self.request_ids)

    def take(self, rows: np.ndarray) -> Lists:
        return Lists(**{k: v[rows] for k, v in self.__dict__.items()})

    def pairs(self) -> int:
        return int(self.mask.sum())


def read_listings(path: Path) -> pl.DataFrame:
    """The catalog with what features need: price, creation time, condition, photo, title ids."""
    df = pl.read_ndjson(path).select("id", "title", "price", "created_at", "condition",
                                     "image_score")
    cache: dict[str, list[int]] = {}

    def ids(title: str) -> list[int]:
        if title not in cache:
            cache[title] = tokenizer.token_ids(tokenizer.tokenize(title),
                                               tokenizer.MAX_TITLE_TOKENS)
        return cache[title]

    return df.with_columns(
        pl.col("created_at").str.to_datetime(time_zone="UTC").alias("created_at"),
        pl.col("condition").replace_strict(CONDITION_ORDINAL),
        pl.col("title").map_elements(ids, return_dtype=pl.List(pl.Int32)).alias("title_ids"),
    ).drop("title").rename({"id": "item_id"})


def split_of(query: str) -> str:
    """Stable split by query (so test queries are never seen in training): 70/10/20."""
    bucket = hashlib.blake2b(query.encode(), digest_size=2).digest()[0] % 10
    return "test" if bucket < 2 else "valid" if bucket < 3 else "train"


@dataclass
class LogData:
    """Validated impressions with labels, features and per-request hygiene reasons."""

    impressions: pl.DataFrame  # one row per shown item, features attached
    requests: pl.DataFrame  # request_id, user_id, query, split, reason ("" = kept)
    summary: dict


def _validate(events: pl.DataFrame, grades: dict[str, int], known_items: pl.Series,
              rejects_path: Path | None) -> tuple[pl.DataFrame, dict]:
    reason = (
        pl.when(pl.col("request_id").is_null() | pl.col("item_id").is_null())
        .then(pl.lit("missing request_id or item_id"))
        .when(~pl.col("event").is_in(["impression", *grades]))
        .then(pl.lit("unknown event type"))
        .when(pl.col("position").is_null() | (pl.col("position") < 1))
        .then(pl.lit("position missing or < 1"))
        .when(pl.col("ts").is_null())
        .then(pl.lit("missing timestamp"))
        .when(~pl.col("item_id").is_in(known_items.implode()))
        .then(pl.lit("item not in the catalog"))
    )
    return set_aside(events, reason, rejects_path)


def _point_in_time_stats(events: pl.DataFrame, days: list, window_days: int) -> pl.DataFrame:
    """Store values per (day, item) as published on that day: stats of the days before."""
    daily = daily_counts(events.lazy()).collect()
    frames = []
    for day in days:
        window = daily.lazy().filter((pl.col("day") < day)
                                     & (pl.col("day") >= day - timedelta(days=window_days)))
        frames.append(item_stats(window).with_columns(pl.lit(day).alias("day")).collect())
    return pl.concat(frames) if frames else pl.DataFrame()


def request_reasons(imps: pl.DataFrame, config: LabelConfig,
                    ) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """The hygiene rules per request: (request_id, user_id, query, split, reason) with
    reason "" for a kept request, and the bot and tapper users. ``imps`` has one row per
    shown item with request_id, user_id, query, ts and label."""
    per_request = imps.group_by("request_id").agg(
        pl.col("user_id").first(), pl.col("query").first(), pl.col("ts").first(),
        (pl.col("label") >= 1).sum().alias("clicks"), (pl.col("label") >= 2).sum().alias("deep"),
        pl.len().alias("shown"))
    bursts = (per_request.sort("ts")
              .group_by("user_id", "query", pl.col("ts").dt.date().alias("day"))
              .agg(pl.len().alias("n"),
                   pl.col("ts").diff().dt.total_milliseconds().median().alias("gap_ms")))
    bots = bursts.filter((pl.col("n") >= config.bot_min_requests)
                         & (pl.col("gap_ms") <= config.bot_max_gap_s * 1000))["user_id"].unique()
    per_user = per_request.group_by("user_id").agg(pl.col("clicks").sum(), pl.col("shown").sum())
    tappers = per_user.filter((pl.col("shown") >= config.tap_min_impressions)
                              & (pl.col("clicks") >= config.tap_ratio * pl.col("shown")))["user_id"]
    requests = per_request.with_columns(
        pl.when(pl.col("user_id").is_in(bots.implode())).then(pl.lit("bot"))
        .when(pl.col("user_id").is_in(tappers.implode())).then(pl.lit("tapper"))
        .when(pl.col("clicks") == 0).then(pl.lit("no_click"))
        .when(pl.col("deep") == 0).then(pl.lit("click_only"))
        .otherwise(pl.lit("")).alias("reason"),
        pl.col("query").map_elements(split_of, return_dtype=pl.String).alias("split"),
    ).select("request_id", "user_id", "query", "split", "reason")
    return requests, bots, tappers


def load_logs(events_path: Path, listings_path: Path, config: LabelConfig | None = None,
              rejects_path: Path | None = None) -> LogData:
    config = config or LabelConfig()
    listings = read_listings(listings_path)
    events, rejected = _validate(read_events(events_path), config.grades,
                                 listings["item_id"], rejects_path)
    grade = pl.col("event").replace_strict(config.grades, default=0, return_dtype=pl.Int8)
    labels = (events.filter(pl.col("event") != "impression")
              .group_by("request_id", "item_id").agg(grade.max().alias("label")))
    shown = events.filter(pl.col("event") == "impression")
    imps = (shown.unique(["request_id", "position"], keep="first", maintain_order=True)
            .join(labels, on=["request_id", "item_id"], how="left")
            .with_columns(pl.col("label").fill_null(0), pl.col("ts").dt.date().alias("day")))
    duplicates = shown.height - imps.height  # the same position logged twice: first kept

    requests, bots, tappers = request_reasons(imps, config)

    # --- features, point in time ---
    days = imps["day"].unique().sort().to_list()
    stats = _point_in_time_stats(events, days, config.window_days)
    imps = (imps.join(listings, on="item_id", how="left")
            .join(stats.select("day", "item_id", "ctr", "impressions", "impression_prob"),
                  on=["day", "item_id"], how="left")
            .with_columns(
                pl.col("ctr").is_null().cast(pl.Float32).alias("features_missing"),
                pl.col("ctr").fill_null(DEFAULT_PRIORS["ctr"]),
                pl.col("impressions").fill_null(DEFAULT_PRIORS["impressions"]),
                pl.col("impression_prob").fill_null(DEFAULT_PRIORS["impression_prob"]),
            ))
    outlier = ((pl.col("price") >= PRICE_MAX)
               | (pl.col("ts") - pl.col("created_at") > timedelta(days=config.max_age_days)))
    n_outliers = imps.filter(outlier).height
    imps = imps.filter(~outlier)

    reasons = dict(requests.group_by("reason").len().iter_rows())
    summary = {
        "events": events.height + sum(rejected.values()),
        "rejected_rows": rejected,
        "duplicate_impressions": duplicates,
        "requests": requests.height,
        "dropped_requests": {k: v for k, v in sorted(reasons.items()) if k},
        "kept_requests": reasons.get("", 0),
        "bot_users": len(bots), "tapper_users": len(tappers),
        "outlier_items_removed": n_outliers,
        "label_counts": dict(sorted(imps.filter(
            pl.col("request_id").is_in(requests.filter(pl.col("reason") == "")["request_id"]
                                       .implode()))
            .group_by("label").len().iter_rows())),
        "days": [str(days[0]), str(days[-1])] if days else [],
        "window_days": config.window_days,
    }
    return LogData(imps, requests, summary)


class ServedSpecMismatch(Exception):
    """A served-feature log record from another feature spec (records written before the
    hash was logged have none and are read as this spec's)."""


def _check_spec(record: dict, path: Path, line: int) -> None:
    logged = record.get("feature_spec")
    if logged is not None and logged != spec_hash():
        raise ServedSpecMismatch(
            f"{path}:{line}: served with feature spec {logged}, but this code's spec is "
            f"{spec_hash()}: its features mean something else. Train on logs of one spec "
            "(split the files by their feature_spec) with the code of that spec.")


def read_served(paths: list[Path], rejects_path: Path | None = None,
                ) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per served item from served-feature log files (:mod:`app.feature_log`).

    A record that cannot be used (a line cut short by a crash, a missing field, a feature
    vector of the wrong length) is written to ``rejects_path`` with the reason and counted.
    A record served with another feature spec (its ``feature_spec`` hash) is refused:
    :class:`ServedSpecMismatch`, since its features mean something else.
    """
    rows, bad = [], []
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    rec = orjson.loads(line)
                    _check_spec(rec, path, number)
                    head = (rec["request_id"], rec["ts"], rec["query"], rec.get("user_id"),
                            rec["query_ids"], rec.get("experiment"), rec.get("arm"),
                            bool(rec.get("explored", False)))
                    cols = rec["items"]
                    n = len(cols["id"])
                    items = list(zip(cols["id"], cols["position"], cols["dense"],
                                     ([t for t in ids if t] for ids in cols["title_ids"]),
                                     cols.get("propensity", [1.0] * n), strict=True))
                    if any(len(item[2]) != DENSE_DIM for item in items):
                        raise ValueError(f"dense must have {DENSE_DIM} values")
                except orjson.JSONDecodeError:
                    reason = "not JSON (a line cut short?)"
                except KeyError as exc:
                    reason = f"missing field {exc}"
                except (TypeError, ValueError) as exc:
                    reason = f"malformed: {exc}"
                else:
                    rows.extend(head + item for item in items)
                    continue
                bad.append({"file": str(path), "line": number, "reject_reason": reason,
                            "text": line.decode("utf-8", "replace")})
    if bad and rejects_path is not None:
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(bad).write_ndjson(rejects_path)
    served = pl.DataFrame(rows, orient="row", schema={
        "request_id": pl.String, "ts": pl.String, "query": pl.String, "user_id": pl.String,
        "query_ids": pl.List(pl.Int32), "experiment": pl.String, "arm": pl.String,
        "explored": pl.Boolean, "item_id": pl.String, "position": pl.Int32,
        "dense": pl.List(pl.Float32), "title_ids": pl.List(pl.Int32),
        "propensity": pl.Float64})
    served = served.with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC"),
        pl.col("dense").list.to_array(DENSE_DIM),
        # anonymous requests are each their own user (not one giant "bot")
        pl.col("user_id").fill_null(pl.lit("anon:") + pl.col("request_id")))
    return served, dict(Counter(b["reject_reason"] for b in bad))


def load_served_logs(served_paths: list[Path], events_path: Path,
                     config: LabelConfig | None = None,
                     rejects_path: Path | None = None,
                     event_rejects_path: Path | None = None) -> LogData:
    """Training data from the served-feature log joined with later engagement events.

    Features are exactly what the model scored (no online/offline skew); an item's label
    is the highest grade of its engagement events (same request id and item id). Events
    that cannot be labels are set aside with the reason (to ``event_rejects_path``) and
    counted: ``unknown_request_or_item`` (no such served item), ``duplicate`` (the same
    event again), ``before_impression`` (stamped before the serve: clock trouble; never a
    label, so nothing leaks). The same request hygiene as :func:`load_logs` applies.
    """
    config = config or LabelConfig()
    served, rejected = read_served(served_paths, rejects_path)
    imps = served.unique(["request_id", "position"], keep="first", maintain_order=True)
    events = read_events(events_path).filter(pl.col("event").is_in(list(config.grades)))
    shown = imps.select("request_id", "item_id", pl.col("ts").alias("served_ts")).unique(
        ["request_id", "item_id"])
    events = events.select("request_id", "item_id", "event", "ts").join(
        shown, on=["request_id", "item_id"], how="left")
    repeat = pl.int_range(pl.len()).over("request_id", "item_id", "event", "ts") > 0
    reason = (pl.when(pl.col("served_ts").is_null()).then(pl.lit("unknown_request_or_item"))
              .when(repeat).then(pl.lit("duplicate"))
              .when(pl.col("ts") < pl.col("served_ts")).then(pl.lit("before_impression")))
    engaged, event_rejects = set_aside(events, reason, event_rejects_path)
    grade = pl.col("event").replace_strict(config.grades, default=0, return_dtype=pl.Int8)
    labels = engaged.group_by("request_id", "item_id").agg(grade.max().alias("label"))
    imps = (imps.join(labels, on=["request_id", "item_id"], how="left")
            .with_columns(pl.col("label").fill_null(0)))
    requests, bots, tappers = request_reasons(imps, config)
    reasons = dict(requests.group_by("reason").len().iter_rows())
    summary = {
        "served_items": served.height, "rejected_records": rejected,
        "duplicate_impressions": served.height - imps.height,
        "engagement_events": engaged.height, "rejected_events": event_rejects,
        "requests": requests.height,
        "dropped_requests": {k: v for k, v in sorted(reasons.items()) if k},
        "kept_requests": reasons.get("", 0),
        "bot_users": len(bots), "tapper_users": len(tappers),
    }
    return LogData(imps, requests, summary)


def _with_dense(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``query_ids`` and the spec's ``dense`` row to rows with raw listing columns."""
    cache: dict[str, list[int]] = {}

    def ids(query: str) -> list[int]:
        if query not in cache:
            cache[query] = list(tokenizer.tokenize_query(query)[1])
        return cache[query]

    df = df.with_columns(pl.col("query").map_elements(ids, return_dtype=pl.List(pl.Int32))
                         .alias("query_ids"))
    title_ids = _id_grid(df["title_ids"].to_list(), (np.arange(df.height),),
                         (df.height, tokenizer.MAX_TITLE_TOKENS))
    dense = dense_matrix(raw_features(CandidateBlock(
        recall_score=df["recall_score"].to_numpy(), recall_rank=df["recall_rank"].to_numpy(),
        price=df["price"].to_numpy(), created_ms=df["created_at"].dt.epoch("ms").to_numpy(),
        now_ms=df["ts"].dt.epoch("ms").to_numpy(),
        store={name: df[name].to_numpy() for name in STORE_FEATURES},
        missing=df["features_missing"].to_numpy(), image_score=df["image_score"].to_numpy(),
        condition=df["condition"].to_numpy(), title_ids=title_ids,
        query_tokens=df["query_ids"].list.len().to_numpy())))
    return df.with_columns(pl.Series("dense", dense))


def _id_grid(rows: list[list[int]], index: tuple, shape: tuple) -> np.ndarray:
    out = np.zeros(shape, np.int32)
    for cell, ids in zip(zip(*index, strict=True), rows, strict=True):
        out[cell][: len(ids)] = ids
    return out


def to_lists(impressions: pl.DataFrame, page_size: int | None = None) -> Lists:
    """Pack impression rows into padded lists, slots in position order.

    Rows carry the exact features served (``dense``, ``query_ids``, ``title_ids``: from
    the served-feature log), or the raw listing columns, from which the spec computes
    them (:func:`app.feature_spec.raw_features`).
    """
    df = impressions.sort("request_id", "position")
    if "dense" not in df.columns:
        df = _with_dense(df)
    req, first = np.unique(df["request_id"].to_numpy(), return_index=True)
    row_list = np.searchsorted(req, df["request_id"].to_numpy())
    slot = np.arange(df.height) - first[row_list]
    n_lists, width = len(req), int(page_size or (slot.max() + 1 if df.height else 1))
    keep = slot < width
    row_list, slot, df = row_list[keep], slot[keep], df.filter(pl.Series(keep))
    heads = slot == 0

    def grid(values: np.ndarray, dtype, fill=0) -> np.ndarray:
        out = np.full((n_lists, width) + values.shape[1:], fill, dtype=dtype)
        out[row_list, slot] = values
        return out

    return Lists(
        dense=grid(df["dense"].to_numpy().astype(np.float32), np.float32),
        title_ids=_id_grid(df["title_ids"].to_list(), (row_list, slot),
                           (n_lists, width, tokenizer.MAX_TITLE_TOKENS)),
        query_ids=_id_grid(df["query_ids"].filter(pl.Series(heads)).to_list(),
                           (row_list[heads],), (n_lists, tokenizer.MAX_QUERY_TOKENS)),
        labels=grid(df["label"].to_numpy(), np.float32),
        mask=grid(np.ones(df.height, bool), bool, False),
        position=grid(df["position"].to_numpy(), np.int16),
        request_ids=req, queries=np.asarray(df["query"].to_numpy()[heads], dtype=object),
        item_ids=grid(df["item_id"].to_numpy(), object, ""),
    )


def truth_grid(lists: Lists, truth: pl.DataFrame) -> np.ndarray:
    """The simulator's true relevance [L, P] aligned with ``lists`` (evaluation only)."""
    rows, slots = np.nonzero(lists.mask)
    cells = pl.DataFrame({"request_id": lists.request_ids[rows].astype(str),
                          "item_id": lists.item_ids[rows, slots].astype(str),
                          "row": rows, "slot": slots})
    joined = cells.join(truth.select("request_id", "item_id", "relevance"),
                        on=["request_id", "item_id"], how="left")
    out = np.zeros(lists.labels.shape, np.float32)
    out[joined["row"].to_numpy(), joined["slot"].to_numpy()] = (
        joined["relevance"].fill_null(0).to_numpy())
    return out
