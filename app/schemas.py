"""Shapes of the HTTP API: requests (validated; errors name the field) and answers.

The limits that depend on configuration (page size, how deep a client may page) are set
per service by :func:`search_request_model`, so they appear in the OpenAPI document as
schema constraints, not only in prose.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)
from starlette.datastructures import ImmutableMultiDict

from app.listings import CONDITIONS, PRICE_MAX, Condition
from app.recall import Bound, Match

Flow = Literal["best_match", "newest"]
# The search text: bounded, and not only blanks (POST body and GET parameter alike).
QUERY_TEXT: dict[str, Any] = {"min_length": 1, "max_length": 200, "pattern": r"\S"}
ID_MAX_CHARS = 128
# A client's X-Request-ID is echoed and logged: printable ASCII without spaces, bounded.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
# Model names and versions name directories under BESTMATCH_MODELS_DIR: no separators,
# no leading dot, so a reload can never leave that directory.
MODEL_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"

Price = Field(None, ge=0, le=PRICE_MAX, allow_inf_nan=False,
              description=f"yen; at most the marketplace maximum {PRICE_MAX}")


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1
        raise ValueError("a number, not a boolean")
    return value


NOT_BOOL = BeforeValidator(_not_bool)


class Filters(BaseModel):
    # Each recall filter is declared once: name, type and validation, and (the
    # app.recall.Match / Bound in its type) the engine clause it becomes; the clauses
    # follow this order. README, "Adding a filter". (A comment: a docstring would enter
    # the OpenAPI document.)
    model_config = ConfigDict(extra="forbid")

    on_sale_only: Annotated[bool, Match("status", when_true="on_sale")] = True
    category: Annotated[str | None, Match("category")] = Field(
        None, min_length=1, max_length=100)
    brands: Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]],
                      Match("brand")] = Field(default_factory=list, max_length=50)
    conditions: Annotated[list[Condition], Match("condition")] = Field(
        default_factory=list, max_length=len(CONDITIONS))
    price_min: Annotated[float | None, NOT_BOOL, Bound("price", "gte")] = Price
    price_max: Annotated[float | None, NOT_BOOL, Bound("price", "lte")] = Price

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
    """A search; :func:`search_request_model` gives the service's bounded version."""

    model_config = ConfigDict(extra="forbid")

    # flow -> the deepest offset + size a client may ask for (set per service)
    windows: ClassVar[dict[str, int]] = {"best_match": 400, "newest": 10_000}

    query: str = Field(**QUERY_TEXT, description="free text, any language; not only blanks")
    user_id: str | None = Field(None, min_length=1, max_length=ID_MAX_CHARS,
                                description="logged-in user: the experiment bucketing unit")
    session_id: str | None = Field(None, min_length=1, max_length=ID_MAX_CHARS,
                                   description="anonymous session: the unit without user_id")
    flow: Flow = "best_match"
    filters: Filters = Field(default_factory=Filters)
    size: int = Field(20, ge=1, description="page size, at most BESTMATCH_MAX_PAGE_SIZE")
    offset: int = Field(0, ge=0, description="offset into the ranked list")
    debug: bool = Field(False, description="add each item's feature vector and title")

    def window_error(self) -> str | None:
        """Why offset + size is too deep for the flow, or None."""
        window = self.windows[self.flow]
        if self.offset + self.size <= window:
            return None
        what = "the re-ranked candidates" if self.flow == "best_match" else "the result window"
        return f"offset + size must be at most {window} for flow {self.flow} ({what})"


def search_request_model(max_page_size: int, candidates: int,
                         result_window: int) -> type[SearchRequest]:
    """:class:`SearchRequest` with this service's limits as schema constraints.

    ``offset + size`` is checked per flow (:meth:`SearchRequest.window_error`): at most
    ``candidates`` for best_match (only those are re-ranked), ``result_window`` for
    newest (the engine's ``index.max_result_window``).
    """
    deepest = max(candidates, result_window)
    bounded = create_model(
        "SearchRequest", __base__=SearchRequest,
        size=(Annotated[int, NOT_BOOL], Field(20, ge=1, le=max_page_size,
                                              description="page size")),
        offset=(Annotated[int, NOT_BOOL], Field(
            0, ge=0, le=deepest - 1,
            description=f"offset into the ranked list; offset + size at most {candidates} "
                        f"for best_match, {result_window} for newest")),
    )
    bounded.windows = {"best_match": candidates, "newest": result_window}
    return bounded


# --- the GET form of a search: the same model, filters flattened into the query string ---

def _is_list(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "array" or any(o.get("type") == "array"
                                              for o in prop.get("anyOf", ()))


# the filters that may repeat in the query string: those whose type is a list
LIST_PARAMETERS = frozenset(name for name, prop in Filters.model_json_schema()["properties"].items()
                            if _is_list(prop))


def search_request_from_query(params: ImmutableMultiDict[str, str]) -> dict[str, Any]:
    """``GET /v1/search`` parameters (a multi-dict) as the body of a :class:`SearchRequest`:
    filter names go into ``filters``; ``brands`` and ``conditions`` may repeat."""
    body: dict[str, Any] = {}
    filters: dict[str, Any] = {}
    for key in params:
        values = params.getlist(key)
        value = values if key in LIST_PARAMETERS else values[-1]
        (filters if key in Filters.model_fields else body)[key] = value
    body.setdefault("filters", filters)  # a parameter named "filters" is refused as such
    return body


def query_parameters(model: type[SearchRequest]) -> list[dict[str, Any]]:
    """The OpenAPI parameters of the GET form, from the request models themselves, so the
    two forms cannot drift apart."""
    out = []
    for m, skip in ((model, {"filters"}), (Filters, set())):
        schema = m.model_json_schema()
        for name, prop in schema["properties"].items():
            if name in skip:
                continue
            prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
            options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
            prop = {**(options[0] if options else {}), **prop}  # Optional[X] -> X
            param = {"name": name, "in": "query", "required": name in schema.get("required", ()),
                     "schema": prop, "description": prop.pop("description", "")}
            if prop.get("type") == "array":
                param.update(style="form", explode=True)
            out.append(param)
    return out


class ModerationRequest(BaseModel):
    """A listing to check before buyers see it (``POST /v1/moderate``)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=10_000)
    price: Annotated[float, NOT_BOOL] = Field(ge=0, le=PRICE_MAX, allow_inf_nan=False)
    photo: str = Field(min_length=1, max_length=12_000_000,
                       description="the listing photo, base64 (JPEG, PNG, WebP)",
                       json_schema_extra={"contentEncoding": "base64",
                                          "contentMediaType": "image/*"})


class ReloadRequest(BaseModel):
    """``POST /admin/model/reload``: which model to serve (default: the served name)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=MODEL_REF_PATTERN)
    version: str = Field("latest", pattern=MODEL_REF_PATTERN,
                         description="a version directory, or latest")


# --- answers ------------------------------------------------------------------------

class FieldError(BaseModel):
    field: str = Field(description="dotted path of the field, e.g. filters.price_min")
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the service."""

    error: str = Field(description="machine-readable code, e.g. invalid_request")
    message: str
    fields: list[FieldError] | None = Field(None, description="invalid_request: per field")
    request_id: str | None = None
    serving: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="admin refusals: the model or experiments still served")


class ModelInfo(BaseModel):
    name: str
    version: str
    provider: str


class SearchItem(BaseModel):
    id: str
    recall_rank: int = Field(description="position in the engine's recall order, from 0")
    score: float | None = Field(None, description="best_match: the blended score")
    model_score: float | None = Field(None, description="best_match")
    image_score: float | None = Field(None, description="best_match")
    created_at: int | None = Field(None, description="newest: epoch milliseconds")
    title: str | None = Field(None, description="debug only")
    features: dict[str, float] | None = Field(None, description="best_match, debug only")


class ArmRef(BaseModel):
    name: str = Field(description="experiment name")
    arm: str


class SearchResponse(BaseModel):
    request_id: str
    query: str
    flow: Flow
    tokens: list[str] = Field(description="the query as the tokeniser split it")
    experiment: ArmRef
    model: ModelInfo | None = Field(description="best_match: the model that ranked")
    degraded: list[str] = Field(description="stages that answered with fallbacks")
    candidates: int = Field(description="hits recall returned")
    items: list[SearchItem]
    timings_ms: dict[str, float]


class ModerationResponse(BaseModel):
    model: str
    threshold: float
    categories: dict[str, float]
    flagged: list[str]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, dict[str, Any]] | None = Field(
        None, description="per dependency; only with a valid X-Admin-Token")


class ModelReloaded(BaseModel):
    status: Literal["loaded"]
    model: ModelInfo


class ExperimentsReloaded(BaseModel):
    status: Literal["loaded"]
    experiments: list[dict[str, Any]] = Field(description="the running experiments' specs")
