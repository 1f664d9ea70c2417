"""Request shapes of the HTTP API (validated; errors name the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.listings import Condition

Flow = Literal["best_match", "newest"]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, min_length=1, max_length=100)
    brands: list[str] = Field(default_factory=list, max_length=50)
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    on_sale_only: bool = True

    @model_validator(mode="after")
    def _price_range(self) -> Filters:
        if (
            self.price_min is not None
            and self.price_max is not None
            and self.price_min > self.price_max
        ):
            raise ValueError("price_min must not exceed price_max")
        return self


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=200, description="free text, any language")
    user_id: str | None = Field(None, min_length=1, max_length=128,
                                description="logged-in user: the experiment bucketing unit")
    session_id: str | None = Field(None, min_length=1, max_length=128,
                                   description="anonymous session: the unit without user_id")
    flow: Flow = "best_match"
    filters: Filters = Field(default_factory=Filters)
    size: int = Field(20, ge=1, description="page size, at most BESTMATCH_MAX_PAGE_SIZE")
    offset: int = Field(0, ge=0, description="offset into the ranked list")
    debug: bool = Field(False, description="add each item's feature vector and title")

    @model_validator(mode="after")
    def _not_blank(self) -> SearchRequest:
        if not self.query.strip():
            raise ValueError("query must contain some text")
        return self


class ModerationRequest(BaseModel):
    """A listing to check before buyers see it (``POST /v1/moderate``)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=10_000)
    price: float = Field(ge=0)
    photo: str = Field(min_length=1, max_length=12_000_000,
                       description="the listing photo, base64 (JPEG, PNG, WebP)")
