"""The service's one error shape (:class:`app.schemas.ErrorResponse`) and the handlers
that give it to every failure: validation, Starlette's own errors, dependency failures
and bugs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from app import metrics
from app.interfaces import EngineRequestError, EngineUnavailable
from app.schemas import ErrorResponse

log = logging.getLogger("bestmatch")


class ServiceError(Exception):
    """An answer other than success: ``status``, machine-readable ``code``, message and
    extra fields of :class:`ErrorResponse` (``fields``, ``serving``, ``request_id``)."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error(status: int, code: str, message: str, **extra) -> Response:
    return json_response({"error": code, "message": message, **extra}, status)


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Pydantic errors as [{"field": "filters.price_min", "message": ...}]."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "header"):  # where it came from, not a field
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "body", "message": e.get("msg", "invalid")})
    return out


def invalid(fields: list[dict]) -> ServiceError:
    return ServiceError(422, "invalid_request", "the request has invalid fields", fields=fields)


def search_failure(exc: Exception, index: str, deadline_s: float) -> ServiceError | None:
    """What a failed search answers (and counts as), or None for a bug."""
    if isinstance(exc, EngineUnavailable):
        log.warning("engine unavailable: %s", exc)
        return ServiceError(503, "engine_unavailable",
                            "the search engine is unavailable; retry later")
    if isinstance(exc, TimeoutError):
        return ServiceError(504, "deadline_exceeded", f"no answer within {deadline_s}s")
    if isinstance(exc, EngineRequestError) and exc.status == 404:
        log.error("index alias %s not found: %s", index, exc)
        return ServiceError(503, "index_unavailable", f"index '{index}' does not exist")
    if isinstance(exc, EngineRequestError):
        log.error("engine rejected the recall query: %s", exc)
        return ServiceError(500, "engine_rejected", "the search engine rejected the query")
    return None


def documented(ok: type[BaseModel] | None, *errors: int) -> dict:
    """The ``responses`` of an operation: its 200 model and its error statuses."""
    out: dict[int | str, dict] = {
        status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
        for status in errors}
    if ok is not None:
        out[200] = {"model": ok}
    return out


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> Response:
        if exc.status >= 500:
            metrics.ERRORS.labels(exc.code).inc()
        return error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return await _service(request, invalid(field_errors(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        """Starlette's own errors (unparseable body, unknown path, wrong method)."""
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) else code
        return json_response({"error": code, "message": message}, exc.status_code,
                             getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        """A bug: the service's error shape, the traceback in the log (uvicorn's)."""
        return error(500, "internal_error", "unexpected error; see the service log")
