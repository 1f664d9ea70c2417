"""``/v1/search``: validate, pick the request's experiment arm (an ``X-Experiment-Arm``
override only with the admin token), run :class:`app.search.Searcher` under the overall
deadline, answer with orjson and the per-stage ``Server-Timing``."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app import metrics
from app.errors import ServiceError, documented, field_errors, invalid, search_failure
from app.experiments import DEFAULT_ARM, NO_EXPERIMENT, Arm
from app.schemas import (
    REQUEST_ID_PATTERN,
    SearchRequest,
    SearchResponse,
    query_parameters,
    search_request_from_query,
    search_request_model,
)
from app.services import Services, ServicesDep, admin_refusal
from app.settings import Settings


@dataclass
class SearchHeaders:
    request_id: str | None
    admin_token: str | None
    experiment_arm: str | None  # "experiment/arm" override, for QA


def search_headers(
    x_request_id: Annotated[str | None, Header(
        pattern=REQUEST_ID_PATTERN,
        description="echoed and logged; a new one is made when absent")] = None,
    x_admin_token: Annotated[str | None, Header()] = None,
    x_experiment_arm: Annotated[str | None, Header(
        description="experiment/arm to serve (QA; needs X-Admin-Token)")] = None,
) -> SearchHeaders:
    return SearchHeaders(x_request_id, x_admin_token, x_experiment_arm)


HeadersDep = Annotated[SearchHeaders, Depends(search_headers)]


def choose_arm(services: Services, req: SearchRequest, headers: SearchHeaders) -> Arm:
    """The request's arm; a refused override raises."""
    experiments = services.experiments.current
    if headers.experiment_arm is None:
        return experiments.assign(req.user_id or req.session_id)
    if admin_refusal(services.settings, headers.admin_token) is not None:
        raise ServiceError(403, "override_forbidden",
                           "X-Experiment-Arm needs a valid X-Admin-Token")
    name, _, arm_name = headers.experiment_arm.partition("/")
    if (name, arm_name) == (NO_EXPERIMENT, DEFAULT_ARM):
        return experiments.default
    arm = experiments.arms.get((name, arm_name))
    if arm is None:
        raise invalid([{"field": "X-Experiment-Arm", "message":
                        f"unknown arm '{headers.experiment_arm}'; expected "
                        f"'experiment/arm' of the served config or "
                        f"'{NO_EXPERIMENT}/{DEFAULT_ARM}'"}])
    return arm


async def run_search(services: Services, req: SearchRequest,
                     headers: SearchHeaders) -> Response:
    too_deep = req.window_error()
    if too_deep:
        raise invalid([{"field": "offset", "message": too_deep}])
    arm = choose_arm(services, req, headers)
    settings = services.settings
    request_id = headers.request_id or uuid.uuid4().hex
    started = time.perf_counter()
    status = "ok"
    try:
        async with asyncio.timeout(settings.request_deadline_s):
            answer = await services.searcher.search(req, request_id, arm)
    except Exception as exc:
        failure = search_failure(exc, settings.index_alias, settings.request_deadline_s)
        if failure is None:
            raise
        status = failure.code
        failure.extra["request_id"] = request_id
        raise failure from None
    finally:
        metrics.REQUESTS.labels(req.flow, status, arm.experiment, arm.name).inc()
    answer["request_id"] = request_id
    t = time.perf_counter()
    body = orjson.dumps(answer)
    serialize_s = time.perf_counter() - t
    metrics.STAGE["serialize"].observe(serialize_s)
    metrics.REQUEST_SECONDS.labels(req.flow, arm.experiment, arm.name).observe(
        time.perf_counter() - started)
    stages = {**answer["timings_ms"], "serialize": round(serialize_s * 1000, 3)}
    return Response(body, media_type="application/json", headers={
        "X-Request-ID": request_id,
        "X-Experiment-Arm": f"{arm.experiment}/{arm.name}",
        "Server-Timing": ", ".join(f"{k};dur={v}" for k, v in stages.items()),
    })


def search_router(settings: Settings) -> APIRouter:
    """The search routes with this service's limits in their request model."""
    router = APIRouter()
    body_model = search_request_model(settings.max_page_size, settings.candidates,
                                      settings.result_window)
    answers = documented(SearchResponse, 401, 403, 500, 503, 504)

    async def search_post(req: SearchRequest, services: ServicesDep,
                          headers: HeadersDep) -> Response:
        return await run_search(services, req, headers)

    # the bounded model is made per service, so the annotation is set here
    search_post.__annotations__["req"] = body_model
    router.post("/v1/search", summary="Search and re-rank", responses=answers)(search_post)

    @router.get("/v1/search", summary="Search (query-string form, for humans)",
                description="The fields of POST /v1/search as parameters, filters flattened "
                            "(brands and conditions repeat); the same limits apply.",
                responses=answers, openapi_extra={"parameters": query_parameters(body_model)})
    async def search_get(request: Request, services: ServicesDep,
                         headers: HeadersDep) -> Response:
        try:
            req = body_model.model_validate(search_request_from_query(request.query_params))
        except ValidationError as exc:
            raise invalid(field_errors(exc.errors())) from None
        return await run_search(services, req, headers)

    return router
