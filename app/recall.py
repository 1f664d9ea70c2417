"""The recall query: BM25 over the tokenised fields x a Gaussian recency decay.

:func:`best_match_query` and :func:`newest_query` build a typed :class:`RecallQuery`;
the request body both Elasticsearch and OpenSearch take is :func:`to_engine_json`, and
the embedded engine builds tantivy queries from it
(:meth:`app.embedded_engine.EmbeddedEngine.search`). The user's text only ever reaches an
engine as tokens (split by our tokeniser) to match, never as query syntax, so it cannot
inject operators.

Filters are declared on the fields of :class:`app.schemas.Filters`: a :class:`Match` or
:class:`Bound` in the field's ``Annotated`` type says which engine clause it becomes
(:class:`Term`, :class:`Terms` or :class:`Range`, which every engine adapter applies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from app.listings import SOURCE_FIELDS

if TYPE_CHECKING:
    from app.schemas import Filters

# (engine field, BM25 boost)
TEXT_FIELDS: tuple[tuple[str, float], ...] = (
    ("title_tokens", 3.0), ("brand_tokens", 2.0), ("description_tokens", 1.0))
TIE_BREAKER = 0.3
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class RecallParams:
    candidates: int = 400
    recency_scale: str = "14d"
    recency_offset: str = "1d"
    recency_decay: float = 0.5
    max_violation_score: float = 0.5


# --- the clauses a filter becomes (each engine adapter applies all three) -------------

@dataclass(frozen=True)
class Term:
    """Engine field ``field`` equals ``value``."""

    field: str
    value: str


@dataclass(frozen=True)
class Terms:
    """Engine field ``field`` equals one of ``values``."""

    field: str
    values: tuple[str, ...]


RangeOp = Literal["gt", "gte", "lt", "lte"]


@dataclass(frozen=True)
class Range:
    """Numeric engine field ``field`` within ``bounds``, e.g. ``(("gte", 10.0),)``."""

    field: str
    bounds: tuple[tuple[RangeOp, float], ...]


Clause = Term | Terms | Range


# --- how a field of app.schemas.Filters declares its clause ---------------------------

@dataclass(frozen=True)
class Match:
    """A filter keeping listings whose ``field`` is the filter's value (a list: any of
    them); with ``when_true``, a flag keeping ``field == when_true`` when set."""

    field: str
    when_true: str | None = None

    def clause(self, value: object) -> Clause | None:
        if self.when_true is not None:
            return Term(self.field, self.when_true) if value else None
        if isinstance(value, list):
            return Terms(self.field, tuple(value)) if value else None
        return None if value is None else Term(self.field, str(value))


@dataclass(frozen=True)
class Bound:
    """A filter bounding numeric ``field`` by ``op``; the bounds a request sets on one
    field make one :class:`Range`."""

    field: str
    op: RangeOp


def filter_clauses(filters: Filters, max_violation_score: float) -> tuple[Clause, ...]:
    """The violation-score exclusion, then each set filter as its field declares it
    (ranges last)."""
    clauses: list[Clause] = [Range("violation_score", (("lt", max_violation_score),))]
    bounds: dict[str, list[tuple[RangeOp, float]]] = {}
    for name, info in type(filters).model_fields.items():
        value = getattr(filters, name)
        for rule in info.metadata:
            if isinstance(rule, Match) and (clause := rule.clause(value)) is not None:
                clauses.append(clause)
            elif isinstance(rule, Bound) and value is not None:
                bounds.setdefault(rule.field, []).append((rule.op, float(value)))
    return (*clauses, *(Range(field, tuple(b)) for field, b in bounds.items()))


# --- the query ----------------------------------------------------------------------

@dataclass(frozen=True)
class Recency:
    """gauss(|created_at - origin|; scale, offset, decay), multiplied into BM25."""

    origin_ms: int
    scale: str
    offset: str
    decay: float


@dataclass(frozen=True)
class BestMatch:
    """The top ``k`` listings by BM25 x recency (the candidates to re-rank)."""

    k: int
    recency: Recency


@dataclass(frozen=True)
class Newest:
    """Matching listings by ``created_at`` desc, ties by id: ``size`` from ``offset``."""

    size: int
    offset: int


@dataclass(frozen=True)
class RecallQuery:
    """Listings matching any of ``tokens`` in the boosted text fields (``best_fields``
    with a tie breaker) and every filter clause, in the flow's order."""

    tokens: tuple[str, ...]
    filters: tuple[Clause, ...]
    flow: BestMatch | Newest
    source: tuple[str, ...]
    fields: tuple[tuple[str, float], ...] = TEXT_FIELDS
    tie_breaker: float = TIE_BREAKER


def best_match_query(
    tokens: tuple[str, ...], filters: Filters, params: RecallParams, now_ms: int,
    extra_source: tuple[str, ...] = (),
) -> RecallQuery:
    """Top-K candidates by BM25 x gauss(created_at; origin=now)."""
    recency = Recency(now_ms, params.recency_scale, params.recency_offset,
                      params.recency_decay)
    return RecallQuery(tokens, filter_clauses(filters, params.max_violation_score),
                       BestMatch(params.candidates, recency), SOURCE_FIELDS + extra_source)


def newest_query(
    tokens: tuple[str, ...], filters: Filters, params: RecallParams, size: int, offset: int,
    extra_source: tuple[str, ...] = (),
) -> RecallQuery:
    """The "newest" flow: matching listings by creation time, no model."""
    return RecallQuery(tokens, filter_clauses(filters, params.max_violation_score),
                       Newest(size, offset), SOURCE_FIELDS + extra_source)


# --- the decay, for engines that cannot run it themselves -----------------------------

def _clause_json(clause: Clause) -> dict:
    match clause:
        case Term(field, value):
            return {"term": {field: value}}
        case Terms(field, values):
            return {"terms": {field: list(values)}}
        case Range(field, bounds):
            return {"range": {field: dict(bounds)}}


def to_engine_json(query: RecallQuery) -> dict:
    """The Elasticsearch / OpenSearch search body of ``query``: a ``multi_match`` of the
    tokens and ``bool`` filters, in a ``function_score`` with the ``gauss`` decay
    (best_match) or sorted by creation time (newest)."""
    match = {
        "bool": {
            "must": [
                {
                    "multi_match": {
                        "query": " ".join(query.tokens),
                        "fields": [name if boost == 1 else f"{name}^{boost:g}"
                                   for name, boost in query.fields],
                        "type": "best_fields",
                        "tie_breaker": query.tie_breaker,
                    }
                }
            ],
            "filter": [_clause_json(c) for c in query.filters],
        }
    }
    flow, source = query.flow, list(query.source)
    if isinstance(flow, BestMatch):
        decay = flow.recency
        gauss = {"origin": str(decay.origin_ms), "scale": decay.scale,
                 "offset": decay.offset, "decay": decay.decay}
        return {
            "size": flow.k,
            "track_total_hits": False,
            "_source": source,
            "query": {
                "function_score": {
                    "query": match,
                    "functions": [{"gauss": {"created_at": gauss}}],
                    "score_mode": "multiply",
                    "boost_mode": "multiply",
                }
            },
        }
    return {"size": flow.size, "from": flow.offset, "track_total_hits": False,
            "_source": source, "query": match,
            "sort": [{"created_at": "desc"}, {"id": "asc"}]}


def duration_ms(text: str) -> float:
    """An engine duration such as ``14d`` or ``12h`` in milliseconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 14d, 12h, 30m)")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def gauss_decay(distance_ms: np.ndarray, scale: str, offset: str, decay: float) -> np.ndarray:
    """The engine's ``gauss`` decay of |created_at - origin| (for engines that cannot run
    the function themselves, and the simulator)."""
    scale_ms, offset_ms = duration_ms(scale), duration_ms(offset)
    sigma2 = -(scale_ms**2) / (2.0 * np.log(decay))
    d = np.maximum(np.abs(distance_ms) - offset_ms, 0.0)
    return np.exp(-(d**2) / (2.0 * sigma2))
