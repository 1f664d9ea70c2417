"""The request path: tokenise -> recall -> features -> score -> blend -> page.

Reads top to bottom; each stage is timed (response ``timings_ms`` and the
``bestmatch_stage_seconds`` histogram). A failure of the feature store or the model
degrades the answer (priors / recall order) and names the reason in ``degraded``;
an engine failure raises :class:`app.interfaces.EngineUnavailable` for the API to map.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain

import numpy as np

from app import metrics
from app.experiments import Arm
from app.exploration import explore
from app.feature_log import FeatureLog
from app.feature_spec import (
    DENSE_NAMES,
    CandidateBlock,
    dense_matrix,
    raw_features,
    spec_hash,
)
from app.interfaces import FeatureSource, SearchEngine
from app.listings import CONDITION_ORDINAL
from app.recall import RecallParams, best_match_query, newest_query
from app.schemas import SearchRequest
from app.scoring import ModelRegistry
from app.tokenizer import tokenize_query

DEBUG_SOURCE = ("title",)

log = logging.getLogger(__name__)


def blend_scores(model_scores: np.ndarray, image_scores: np.ndarray, weight: float) -> np.ndarray:
    """Final score = model score + weight x image_score."""
    return model_scores + weight * image_scores


@dataclass
class Candidates:
    """Recall hits as columns (one row per candidate, in recall order)."""

    ids: list[str]
    recall_score: np.ndarray
    price: np.ndarray
    created_ms: np.ndarray
    condition: np.ndarray
    image_score: np.ndarray
    title_ids: np.ndarray  # int64 [N, L], 0-padded
    titles: list[str] | None

    @classmethod
    def from_hits(cls, hits: list[dict], with_titles: bool = False) -> Candidates:
        n = len(hits)
        src = [h["_source"] for h in hits]
        token_lists = [s["title_token_ids"] for s in src]
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
        title_ids = np.zeros((n, max(int(lengths.max(initial=0)), 1)), dtype=np.int64)
        title_ids[np.arange(title_ids.shape[1]) < lengths[:, None]] = np.fromiter(
            chain.from_iterable(token_lists), dtype=np.int64, count=int(lengths.sum())
        )
        return cls(
            ids=[h["_id"] for h in hits],
            recall_score=np.fromiter((h["_score"] or 0.0 for h in hits), np.float64, n),
            price=np.fromiter((s["price"] for s in src), np.float64, n),
            created_ms=np.fromiter((s["created_at"] for s in src), np.float64, n),
            condition=np.fromiter((CONDITION_ORDINAL[s["condition"]] for s in src), np.float64, n),
            image_score=np.fromiter((s.get("image_score", 0.0) for s in src), np.float64, n),
            title_ids=title_ids,
            titles=[s.get("title", "") for s in src] if with_titles else None,
        )


class Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        metrics.STAGE[stage].observe(now - self._t)
        self.timings[stage] = round((now - self._t) * 1000, 3)
        self._t = now


@dataclass
class Features:
    dense: np.ndarray  # float32 [N, DENSE_DIM], the model's input
    degraded: str | None  # the feature store's reason, when it answered with priors


@dataclass
class Ranking:
    model_scores: np.ndarray  # [N]; the recall score when no model ran
    model: dict | None  # the model that ranked (describe())
    degraded: str | None  # no_model / model_error


class Searcher:
    """The pipeline over the declared backends (:mod:`app.interfaces`)."""

    def __init__(
        self, engine: SearchEngine, index: str, store: FeatureSource, models: ModelRegistry,
        recall: RecallParams, feature_log: FeatureLog | None = None,
    ):
        self.engine = engine
        self.index = index
        self.store = store
        self.models = models
        self.recall = recall
        self.feature_log = feature_log

    async def search(self, req: SearchRequest, request_id: str, arm: Arm) -> dict:
        watch = Stopwatch()
        tokens, query_ids = tokenize_query(req.query)
        watch.lap("tokenize")
        now_ms = int(time.time() * 1000)
        hits = await self.recall_hits(req, tokens, now_ms)
        watch.lap("recall")
        answer: dict = {"query": req.query, "flow": req.flow, "tokens": list(tokens),
                        "experiment": {"name": arm.experiment, "arm": arm.name},
                        "model": None, "degraded": [], "candidates": len(hits)}
        if req.flow == "newest" or not hits:
            items = _newest_items(hits, req.debug) if req.flow == "newest" else []
            return {**answer, "items": items, "timings_ms": watch.timings}

        cands = Candidates.from_hits(hits, with_titles=req.debug)
        features = await self.features(cands, len(query_ids), now_ms)
        watch.lap("features")
        ranking = self.rank(features.dense, query_ids, cands, arm)
        watch.lap("score")
        final = blend_scores(ranking.model_scores, cands.image_score, arm.image_weight)
        ranked, explored, propensity = explore(np.argsort(-final, kind="stable"), arm.explore,
                                               request_id)
        page = slice(req.offset, req.offset + req.size)
        order = ranked[page]
        degraded = [r for r in (features.degraded, ranking.degraded) if r]
        answer.update(model=ranking.model, degraded=degraded,
                      items=page_items(order, cands, final, ranking, features.dense, req.debug))
        if self.feature_log is not None:
            self.feature_log.put(self.log_record(
                req, request_id, arm, answer, now_ms, query_ids, cands, order, features.dense,
                explored, propensity[page]))
        watch.lap("blend")
        for reason in degraded:
            metrics.DEGRADED.labels(reason).inc()
        return {**answer, "timings_ms": watch.timings}

    async def recall_hits(self, req: SearchRequest, tokens: tuple[str, ...],
                          now_ms: int) -> list[dict]:
        """The engine's hits for the request's flow (none without searchable tokens)."""
        if not tokens:  # e.g. only punctuation: nothing can match, skip the engine
            return []
        extra = DEBUG_SOURCE if req.debug else ()
        if req.flow == "newest":
            query = newest_query(tokens, req.filters, self.recall, req.size, req.offset, extra)
        else:
            query = best_match_query(tokens, req.filters, self.recall, now_ms, extra)
        hits = await self.engine.search(self.index, query)
        metrics.CANDIDATES.observe(len(hits))
        return hits

    async def features(self, cands: Candidates, query_tokens: int, now_ms: int) -> Features:
        """The model's input: engine fields and store values through the feature spec."""
        store = await self.store.fetch(cands.ids)
        metrics.FEATURE_STORE_READY.set(store.degraded is None)
        dense = dense_matrix(raw_features(CandidateBlock(
            recall_score=cands.recall_score,
            recall_rank=np.arange(len(cands.ids), dtype=np.float64),
            price=cands.price, created_ms=cands.created_ms, now_ms=now_ms, store=store.values,
            missing=store.missing, image_score=cands.image_score, condition=cands.condition,
            title_ids=cands.title_ids, query_tokens=query_tokens)))
        return Features(dense, store.degraded)

    def rank(self, dense: np.ndarray, query_ids: tuple[int, ...], cands: Candidates,
             arm: Arm) -> Ranking:
        """Model scores; the engine's recall score (recall order) for a recall-only arm or
        when no model can run."""
        if arm.recall_only:
            return Ranking(cands.recall_score, None, None)
        model = arm.model or self.models.current
        if model is None:
            return Ranking(cands.recall_score, None, "no_model")
        try:
            scores = model.score(dense, np.array([query_ids], np.int64), cands.title_ids)
        except Exception:
            log.exception("model %s failed; answering in recall order", model.describe())
            return Ranking(cands.recall_score, model.describe(), "model_error")
        return Ranking(scores, model.describe(), None)

    def log_record(self, req: SearchRequest, request_id: str, arm: Arm, answer: dict,
                   now_ms: int, query_ids: tuple[int, ...], cands: Candidates,
                   order: np.ndarray, dense: np.ndarray, explored: bool,
                   propensity: np.ndarray) -> dict:
        """The served-feature log's record of this answer (:mod:`app.feature_log`)."""
        model = answer["model"]
        return {
            "request_id": request_id,
            "ts": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
            "query": req.query, "user_id": req.user_id, "session_id": req.session_id,
            "experiment": arm.experiment, "arm": arm.name,
            "model": {k: model[k] for k in ("name", "version")} if model else None,
            "feature_spec": spec_hash(), "feature_version": self.store.version,
            "offset": req.offset, "explored": explored,
            "degraded": answer["degraded"], "query_ids": query_ids,
            "items": {"id": [cands.ids[i] for i in order.tolist()],
                      "position": list(range(req.offset + 1, req.offset + 1 + len(order))),
                      "recall_rank": order, "dense": dense[order],
                      "title_ids": cands.title_ids[order], "propensity": propensity},
        }


def page_items(order: np.ndarray, cands: Candidates, final: np.ndarray, ranking: Ranking,
               dense: np.ndarray, debug: bool) -> list[dict]:
    items = []
    for i in order.tolist():
        item = {"id": cands.ids[i], "score": float(final[i]),
                "model_score": float(ranking.model_scores[i]),
                "image_score": float(cands.image_score[i]), "recall_rank": i}
        if debug:
            item["title"] = cands.titles[i] if cands.titles else ""
            item["features"] = dict(zip(DENSE_NAMES, dense[i].tolist(), strict=True))
        items.append(item)
    return items


def _newest_items(hits: list[dict], debug: bool) -> list[dict]:
    items = []
    for rank, h in enumerate(hits):
        item = {"id": h["_id"], "created_at": h["_source"]["created_at"], "recall_rank": rank}
        if debug:
            item["title"] = h["_source"].get("title", "")
        items.append(item)
    return items
