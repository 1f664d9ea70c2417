"""Search sessions: who searches, what they see, what they tap and what follows.

A session here is one result page and what the user did on it. The page is produced
by a ranker over the recalled candidates: recall order by default, or, on a small
share of pages, a random shuffle of the same candidates (the randomisation experiment
a marketplace runs to measure position bias; the logs name the ranker per request).

Click model (position-based, Chapelle & Zhang style): a user examines the item at
position k with probability ``k ** -eta`` and clicks an examined item with probability
``noise + (1 - noise) * (2 ** grade - 1) / 15`` (grade = true relevance 0..4). After a
click the engagement journey follows, each step more selective:
like (relevance x photo quality), comment (relevance), purchase (relevance squared x
price appeal). Two kinds of traffic the dataset builder must drop are mixed in:
bots (one query repeated every few seconds for hours, rare clicks) and users who tap
nearly everything they see (and rarely engage further).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from app.recall import RecallParams
from training.simulator.catalog import DAY_MS, Catalog
from training.simulator.queries import QuerySet, true_relevance
from training.simulator.recall import TextIndex, recall


@dataclass(frozen=True)
class SessionConfig:
    sessions: int = 50_000  # human search sessions (bots come on top)
    days: int = 14  # the log window, ending at the catalog's ``now``
    page_size: int = 40
    examination_eta: float = 1.0  # P(examine position k) = k ** -eta
    click_noise: float = 0.1  # P(click | examined, irrelevant)
    shuffle_share: float = 0.05  # pages served in random order
    tapper_share: float = 0.01  # users who tap nearly everything
    bot_share: float = 0.05  # bot requests, as a share of human sessions
    bot_interval_s: tuple[float, float] = (2.0, 8.0)
    users_per_session: float = 0.25
    seed: int = 0
    recall: RecallParams = field(default_factory=RecallParams)


@dataclass
class _Columns:
    """Event rows collected as per-page arrays, concatenated once at the end."""

    parts: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "request_id", "session_id", "user_id", "query", "ts_ms", "event", "item_id",
        "position", "recall_rank", "recall_score", "ranker")})
    truth: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "request_id", "item_id", "position", "relevance", "utility")})

    def add_events(self, request: dict, event: str, items: np.ndarray, positions: np.ndarray,
                   ts_ms: np.ndarray, recall_rank: np.ndarray, recall_score: np.ndarray) -> None:
        n = len(items)
        if n == 0:
            return
        for key in ("request_id", "session_id", "user_id", "query", "ranker"):
            self.parts[key].append(np.full(n, request[key], dtype=object))
        self.parts["event"].append(np.full(n, event, dtype=object))
        self.parts["item_id"].append(items)
        self.parts["position"].append(positions)
        self.parts["ts_ms"].append(ts_ms)
        self.parts["recall_rank"].append(recall_rank)
        self.parts["recall_score"].append(recall_score)

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        events = pl.DataFrame({k: np.concatenate(v) for k, v in self.parts.items()})
        events = events.with_columns(
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
            pl.col("position").cast(pl.Int16), pl.col("recall_rank").cast(pl.Int16),
            pl.col("recall_score").cast(pl.Float32),
        ).drop("ts_ms").sort("ts")
        truth = pl.DataFrame({k: np.concatenate(v) for k, v in self.truth.items()}).with_columns(
            pl.col("position").cast(pl.Int16), pl.col("relevance").cast(pl.Int8),
            pl.col("utility").cast(pl.Float32))
        return events, truth


class Simulator:
    def __init__(self, catalog: Catalog, queries: QuerySet, index: TextIndex,
                 config: SessionConfig, now_ms: int):
        self.cat = catalog
        self.queries = queries
        self.index = index
        self.cfg = config
        self.now_ms = now_ms
        self.rng = np.random.default_rng(config.seed)
        self.out = _Columns()
        self._requests = 0

    def run(self, progress=None) -> tuple[pl.DataFrame, pl.DataFrame]:
        cfg, rng = self.cfg, self.rng
        n_users = max(int(cfg.sessions * cfg.users_per_session), 1)
        activity = 1.0 / np.arange(1, n_users + 1) ** 0.8  # a few heavy users, many light
        users = rng.choice(n_users, size=cfg.sessions, p=activity / activity.sum())
        tappers = rng.random(n_users) < cfg.tapper_share
        queries = rng.choice(len(self.queries), size=cfg.sessions, p=self.queries.popularity)
        start = self.now_ms - cfg.days * DAY_MS
        times = np.sort(rng.uniform(start, self.now_ms, cfg.sessions)).astype(np.int64)
        for i in range(cfg.sessions):
            u = int(users[i])
            self._page(f"u{u:06d}", int(queries[i]), int(times[i]), bool(tappers[u]))
            if progress is not None:
                progress(1)
        self._bots(start)
        return self.out.frames()

    def _bots(self, start_ms: int) -> None:
        cfg, rng = self.cfg, self.rng
        total = int(cfg.sessions * cfg.bot_share)
        n_bots = max(total // 200, 1) if total else 0
        head = np.argsort(-self.queries.popularity)[:20]
        for b in range(n_bots):
            q = int(rng.choice(head))
            t = int(rng.uniform(start_ms, self.now_ms - DAY_MS))
            for _ in range(total // n_bots):
                t += int(rng.uniform(*cfg.bot_interval_s) * 1000)
                self._page(f"bot{b:03d}", q, t, tapper=False, bot=True)

    def _page(self, user: str, q: int, t_ms: int, tapper: bool, bot: bool = False) -> None:
        cfg, rng, cat = self.cfg, self.rng, self.cat
        query, intent = self.queries.texts[q], self.queries.intents[q]
        docs, scores = recall(self.index, cat, query, t_ms, cfg.recall, cfg.page_size)
        n = len(docs)
        shuffle = not bot and rng.random() < cfg.shuffle_share
        rank = rng.permutation(n) if shuffle else np.arange(n)  # recall rank at each position
        shown = docs[rank]
        pos = np.arange(1, n + 1, dtype=np.int64)
        self._requests += 1
        req = {"request_id": f"r{cfg.seed}-{self._requests:08d}",
               "session_id": f"s{cfg.seed}-{self._requests:08d}", "user_id": user,
               "query": query, "ranker": "shuffle" if shuffle else "recall"}
        ids = cat.ids[shown]
        add = self.out.add_events
        add(req, "impression", ids, pos, np.full(n, t_ms), rank, scores[rank])
        if n == 0:
            return
        utility, grade = true_relevance(intent, cat, shown)
        for key, value in (("request_id", np.full(n, req["request_id"], dtype=object)),
                           ("item_id", ids), ("position", pos), ("relevance", grade),
                           ("utility", utility)):
            self.out.truth[key].append(value)
        kind = "bot" if bot else "tapper" if tapper else "human"
        for event, hit, ts in user_actions(rng, cfg, kind, pos, grade, utility,
                                           cat.quality[shown], cat.price_appeal(shown), t_ms):
            add(req, event, ids[hit], pos[hit], ts[hit], rank[hit], scores[rank][hit])


UserKind = Literal["human", "tapper", "bot"]


def user_actions(rng: np.random.Generator, cfg: SessionConfig, kind: UserKind, pos: np.ndarray,
                 grade: np.ndarray, utility: np.ndarray, quality: np.ndarray,
                 appeal: np.ndarray, t_ms: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """What a user does on a page shown at ``t_ms``: (event, mask of the page's items,
    timestamps ms) for click, like, comment and purchase (see the module docstring)."""
    n = len(pos)
    if kind == "bot":
        click = (pos == 1) & (rng.random(n) < 0.1)
        engage = np.zeros(n)
    elif kind == "tapper":
        click = rng.random(n) < 0.85
        engage = 0.1 * utility
    else:
        examined = rng.random(n) < examination(pos, cfg)
        click = examined & (rng.random(n) < click_probability(grade, cfg))
        engage = utility
    t_click = t_ms + ((2 + 3 * pos + rng.exponential(10, n)) * 1000).astype(np.int64)
    return [("click", click, t_click),
            ("like", click & (rng.random(n) < 0.7 * engage * (0.3 + 0.7 * quality)),
             t_click + (rng.exponential(30, n) * 1000).astype(np.int64)),
            ("comment", click & (rng.random(n) < 0.2 * engage),
             t_click + (rng.exponential(60, n) * 1000).astype(np.int64)),
            ("purchase", click & (rng.random(n) < purchase_probability(engage, appeal)),
             t_click + (rng.exponential(300, n) * 1000).astype(np.int64))]


def examination(pos: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """P(a human examines 1-based position ``pos``)."""
    return pos.astype(np.float64) ** -cfg.examination_eta


def click_probability(grade: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """P(click | examined) of a human, by true grade."""
    return cfg.click_noise + (1 - cfg.click_noise) * (2.0 ** grade - 1) / 15.0


def purchase_probability(engage: np.ndarray, appeal: np.ndarray) -> np.ndarray:
    """P(purchase | click) for an engagement level (a human's: the item's utility)."""
    return 0.5 * engage ** 2 * appeal


def expected_purchases(pos: np.ndarray, grade: np.ndarray, utility: np.ndarray,
                       appeal: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """A human's expected purchases of each shown item (the ground truth of ATPU)."""
    return (examination(pos, cfg) * click_probability(grade, cfg)
            * purchase_probability(utility, appeal))
