"""The recall query: BM25 over the tokenised fields x a Gaussian recency decay.

One builder serves both engine adapters. The user's text only ever reaches the engine
as the *value* of a ``multi_match`` (already split into tokens by our tokeniser), never
as query-string syntax, so it cannot inject operators.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.listings import SOURCE_FIELDS
from app.schemas import Filters

TEXT_FIELDS: tuple[str, ...] = ("title_tokens^3", "brand_tokens^2", "description_tokens")


@dataclass(frozen=True)
class RecallParams:
    candidates: int = 400
    recency_scale: str = "14d"
    recency_offset: str = "1d"
    recency_decay: float = 0.5
    max_violation_score: float = 0.5


def filter_clauses(filters: Filters, max_violation_score: float) -> list[dict]:
    clauses: list[dict] = [{"range": {"violation_score": {"lt": max_violation_score}}}]
    if filters.on_sale_only:
        clauses.append({"term": {"status": "on_sale"}})
    if filters.category:
        clauses.append({"term": {"category": filters.category}})
    if filters.brands:
        clauses.append({"terms": {"brand": filters.brands}})
    if filters.conditions:
        clauses.append({"terms": {"condition": filters.conditions}})
    price: dict[str, float] = {}
    if filters.price_min is not None:
        price["gte"] = filters.price_min
    if filters.price_max is not None:
        price["lte"] = filters.price_max
    if price:
        clauses.append({"range": {"price": price}})
    return clauses


def _match(tokens: tuple[str, ...], filters: Filters, params: RecallParams) -> dict:
    return {
        "bool": {
            "must": [
                {
                    "multi_match": {
                        "query": " ".join(tokens),
                        "fields": list(TEXT_FIELDS),
                        "type": "best_fields",
                        "tie_breaker": 0.3,
                    }
                }
            ],
            "filter": filter_clauses(filters, params.max_violation_score),
        }
    }


def best_match_body(
    tokens: tuple[str, ...], filters: Filters, params: RecallParams, now_ms: int,
    extra_source: tuple[str, ...] = (),
) -> dict:
    """Top-K candidates by BM25 x gauss(created_at; origin=now)."""
    return {
        "size": params.candidates,
        "track_total_hits": False,
        "_source": list(SOURCE_FIELDS + extra_source),
        "query": {
            "function_score": {
                "query": _match(tokens, filters, params),
                "functions": [
                    {
                        "gauss": {
                            "created_at": {
                                "origin": str(now_ms),
                                "scale": params.recency_scale,
                                "offset": params.recency_offset,
                                "decay": params.recency_decay,
                            }
                        }
                    }
                ],
                "score_mode": "multiply",
                "boost_mode": "multiply",
            }
        },
    }


def newest_body(
    tokens: tuple[str, ...], filters: Filters, params: RecallParams, size: int, offset: int,
    extra_source: tuple[str, ...] = (),
) -> dict:
    """The "newest" flow: matching listings by creation time, no model."""
    return {
        "size": size,
        "from": offset,
        "track_total_hits": False,
        "_source": list(SOURCE_FIELDS + extra_source),
        "query": _match(tokens, filters, params),
        "sort": [{"created_at": "desc"}, {"id": "asc"}],
    }
