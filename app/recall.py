"""The recall query: BM25 over the tokenised fields x a Gaussian recency decay.

One builder serves both engine adapters. The user's text only ever reaches the engine
as the *value* of a ``multi_match`` (already split into tokens by our tokeniser), never
as query-string syntax, so it cannot inject operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from app.listings import SOURCE_FIELDS
from app.schemas import Filters

TEXT_FIELDS: tuple[str, ...] = ("title_tokens^3", "brand_tokens^2", "description_tokens")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class RecallParams:
    candidates: int = 400
    recency_scale: str = "14d"
    recency_offset: str = "1d"
    recency_decay: float = 0.5
    max_violation_score: float = 0.5


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
