"""A listing: its validated input shape, the index mapping and the indexed document.

Text fields are tokenised here with the shared tokeniser and indexed with a
whitespace analyser, so the engine's BM25 sees exactly the tokens the model sees.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app import tokenizer

CONDITIONS: tuple[str, ...] = ("new", "like_new", "good", "fair", "poor")
# The ``condition`` feature: 0 new .. 1 poor.
CONDITION_ORDINAL = {c: i / (len(CONDITIONS) - 1) for i, c in enumerate(CONDITIONS)}
# The marketplace's maximum price: sellers park listings there ("not really for sale").
PRICE_MAX = 9_999_999
Condition = Literal["new", "like_new", "good", "fair", "poor"]
Status = Literal["on_sale", "sold"]

# What recall returns per hit: exactly what the features need (plus the id).
SOURCE_FIELDS: tuple[str, ...] = (
    "price",
    "created_at",
    "condition",
    "image_score",
    "title_token_ids",
)


class Listing(BaseModel):
    """One catalog row as feeds, jobs and the simulator write it."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=10_000)
    brand: str = ""
    category: str = Field(min_length=1)
    condition: Condition
    price: float = Field(ge=0)
    created_at: datetime
    status: Status = "on_sale"
    image_score: float = Field(0.5, ge=0, le=1)
    violation_score: float = Field(0.0, ge=0, le=1)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("created_at needs a timezone (e.g. 2026-01-02T03:04:05+09:00)")
        return v


def index_document(listing: Listing) -> dict:
    """The engine document of a listing (tokens computed here, once, at index time)."""
    title_tokens = tokenizer.tokenize(listing.title)
    return {
        "id": listing.id,
        "title": listing.title,
        "description": listing.description,
        "brand": listing.brand,
        "category": listing.category,
        "condition": listing.condition,
        "price": listing.price,
        "created_at": int(listing.created_at.timestamp() * 1000),
        "status": listing.status,
        "image_score": listing.image_score,
        "violation_score": listing.violation_score,
        "title_tokens": " ".join(title_tokens),
        "brand_tokens": " ".join(tokenizer.tokenize(listing.brand)),
        "description_tokens": " ".join(tokenizer.tokenize(listing.description)),
        "title_token_ids": tokenizer.token_ids(title_tokens, tokenizer.MAX_TITLE_TOKENS),
    }


def index_body(shards: int = 1, replicas: int = 0) -> dict:
    """Settings and mappings of a listings index (same for Elasticsearch and OpenSearch)."""
    tokens = {"type": "text", "analyzer": "pretokenized"}
    keyword = {"type": "keyword"}
    return {
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "analysis": {
                "analyzer": {"pretokenized": {"type": "custom", "tokenizer": "whitespace"}}
            },
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": keyword,
                "title": {"type": "text", "index": False},
                "description": {"type": "text", "index": False},
                "brand": keyword,
                "category": keyword,
                "condition": keyword,
                "price": {"type": "double"},
                "created_at": {"type": "date", "format": "epoch_millis"},
                "status": keyword,
                "image_score": {"type": "float"},
                "violation_score": {"type": "float"},
                "violation_category": keyword,  # written by the moderation batch job
                "title_tokens": tokens,
                "brand_tokens": tokens,
                "description_tokens": tokens,
                "title_token_ids": {"type": "integer", "index": False, "doc_values": False},
            },
        },
    }
