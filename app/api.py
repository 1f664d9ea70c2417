"""HTTP API: search, health, readiness, metrics, model and experiment admin.

The search handler validates input (422 with one message per field), picks the
request's experiment arm (:mod:`app.experiments`; an ``X-Experiment-Arm`` override only
with the admin token), runs :class:`app.search.Searcher` under the overall deadline and
maps failures to JSON answers: 503 engine unavailable, 504 deadline exceeded. Every
error, from validation to an unknown path, has the one shape of
:class:`app.schemas.ErrorResponse`, and every operation declares its answers (models
in :mod:`app.schemas`) in the OpenAPI document.
"""

# No ``from __future__ import annotations``: FastAPI must see the request model built
# per service (``SearchBody``) as a class, not as a name it cannot resolve.
import asyncio
import base64
import hmac
import io
import logging
import time
import uuid
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from app import metrics
from app.backends import open_engine, open_feature_store
from app.engines import EngineRequestError, EngineUnavailable
from app.experiments import DEFAULT_ARM, NO_EXPERIMENT, ExperimentConfigError, ExperimentRegistry
from app.feature_log import FeatureLog
from app.moderation import Moderator
from app.recall import RecallParams
from app.schemas import (
    REQUEST_ID_PATTERN,
    ErrorResponse,
    ExperimentsReloaded,
    Health,
    ModelReloaded,
    ModerationRequest,
    ModerationResponse,
    Readiness,
    ReloadRequest,
    SearchRequest,
    SearchResponse,
    query_parameters,
    search_request_from_query,
    search_request_model,
)
from app.scoring import ModelError, ModelRegistry
from app.search import Searcher
from app.settings import Settings, get_settings

log = logging.getLogger("bestmatch")


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error(status: int, code: str, message: str, **extra) -> Response:
    return json_response({"error": code, "message": message, **extra}, status)


def field_errors(errors: list[dict]) -> list[dict]:
    """Pydantic errors as [{"field": "filters.price_min", "message": ...}]."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "header"):  # where it came from, not a field
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "body", "message": e.get("msg", "invalid")})
    return out


def invalid(fields: list[dict]) -> Response:
    return error(422, "invalid_request", "the request has invalid fields", fields=fields)


def documented(ok: type[BaseModel] | None, *errors: int) -> dict:
    """The ``responses`` of an operation: its 200 model and its error statuses."""
    out: dict[int | str, dict] = {
        status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
        for status in errors}
    if ok is not None:
        out[200] = {"model": ok}
    return out


ADMIN_ERRORS = (401, 403, 422)


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
    x_experiment_arm: Annotated[str | None, Header()] = None,
) -> SearchHeaders:
    return SearchHeaders(x_request_id, x_admin_token, x_experiment_arm)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = open_engine(settings)
        store = open_feature_store(settings)
        feature_log = None
        if settings.feature_log_dir is not None:
            feature_log = FeatureLog(settings.feature_log_dir, settings.feature_log_queue,
                                     settings.feature_log_max_bytes)
            feature_log.start()
        models = ModelRegistry(settings.models_dir, settings.onnx_device, settings.onnx_threads)
        _load_model(models, settings.model_name, settings.model_version)
        app.state.models = models
        experiments = ExperimentRegistry(settings.experiments_file, models,
                                         settings.image_weight)
        with suppress(OSError, ExperimentConfigError):  # logged; /readyz shows it
            experiments.reload()
        app.state.experiments = experiments
        app.state.moderator = None
        if settings.moderation_model_dir is not None:
            try:
                app.state.moderator = Moderator(settings.moderation_model_dir)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:  # ORT: RuntimeError
                log.error("moderation model %s not loaded: %s",
                          settings.moderation_model_dir, exc)
        watcher = asyncio.create_task(experiments.watch(settings.experiments_poll_s))
        app.state.searcher = Searcher(
            engine, settings.index_alias, store, models,
            RecallParams(
                candidates=settings.candidates,
                recency_scale=settings.recency_scale,
                recency_offset=settings.recency_offset,
                recency_decay=settings.recency_decay,
                max_violation_score=settings.max_violation_score,
            ),
            feature_log,
        )
        yield
        watcher.cancel()
        await engine.close()
        await store.close()
        if feature_log is not None:
            feature_log.close()

    app = FastAPI(
        title="bestmatch",
        version="0.1.0",
        description="Learning-to-rank re-ranking for marketplace search.",
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse, "description": "unparseable body"},
                   422: {"model": ErrorResponse, "description": "invalid fields"}},
    )
    SearchBody = search_request_model(settings.max_page_size, settings.candidates,
                                      settings.result_window)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return invalid(field_errors(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        """Starlette's own errors (unparseable body, unknown path, wrong method)."""
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) else code
        return json_response({"error": code, "message": message}, exc.status_code,
                             getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        """A bug: the service's error shape, the traceback in the log (uvicorn's)."""
        return error(500, "internal_error", "unexpected error; see the service log")

    def admin_denied(token: str | None) -> Response | None:
        if not settings.admin_token:
            return error(403, "admin_disabled", "set BESTMATCH_ADMIN_TOKEN to enable admin")
        if token is None or not hmac.compare_digest(token.encode(),
                                                    settings.admin_token.encode()):
            return error(401, "unauthorized", "missing or wrong X-Admin-Token")
        return None

    def choose_arm(req: SearchRequest, headers: SearchHeaders):
        """The request's arm, or an error answer for a refused override."""
        experiments = app.state.experiments.current
        if headers.experiment_arm is None:
            return experiments.assign(req.user_id or req.session_id)
        denied = admin_denied(headers.admin_token)
        if denied is not None:
            return error(403, "override_forbidden",
                         "X-Experiment-Arm needs a valid X-Admin-Token")
        name, _, arm_name = headers.experiment_arm.partition("/")
        if (name, arm_name) == (NO_EXPERIMENT, DEFAULT_ARM):
            return experiments.default
        arm = experiments.arms.get((name, arm_name))
        if arm is None:
            return invalid([{"field": "X-Experiment-Arm", "message":
                             f"unknown arm '{headers.experiment_arm}'; expected "
                             f"'experiment/arm' of the served config or "
                             f"'{NO_EXPERIMENT}/{DEFAULT_ARM}'"}])
        return arm

    async def run_search(req: SearchRequest, headers: SearchHeaders) -> Response:
        too_deep = req.window_error()
        if too_deep:
            return invalid([{"field": "offset", "message": too_deep}])
        arm = choose_arm(req, headers)
        if isinstance(arm, Response):
            return arm
        request_id = headers.request_id or uuid.uuid4().hex
        started = time.perf_counter()
        status = "ok"
        try:
            async with asyncio.timeout(settings.request_deadline_s):
                answer = await app.state.searcher.search(req, request_id, arm)
        except EngineUnavailable as exc:
            status = "engine_unavailable"
            log.warning("engine unavailable: %s", exc)
            return error(503, status, "the search engine is unavailable; retry later",
                         request_id=request_id)
        except TimeoutError:
            status = "deadline_exceeded"
            return error(504, status, f"no answer within {settings.request_deadline_s}s",
                         request_id=request_id)
        except EngineRequestError as exc:
            if exc.status == 404:
                status = "index_unavailable"
                log.error("index alias %s not found: %s", settings.index_alias, exc)
                return error(503, status, f"index '{settings.index_alias}' does not exist",
                             request_id=request_id)
            status = "engine_rejected"
            log.error("engine rejected the recall query: %s", exc)
            return error(500, status, "the search engine rejected the query",
                         request_id=request_id)
        finally:
            metrics.REQUESTS.labels(req.flow, status, arm.experiment, arm.name).inc()
            if status != "ok":
                metrics.ERRORS.labels(status).inc()
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

    search_answers = documented(SearchResponse, 401, 403, 500, 503, 504)

    @app.post("/v1/search", summary="Search and re-rank", responses=search_answers)
    async def search_post(
        req: SearchBody, headers: Annotated[SearchHeaders, Depends(search_headers)]
    ) -> Response:
        return await run_search(req, headers)

    @app.get("/v1/search", summary="Search (query-string form, for humans)",
             description="The fields of POST /v1/search as parameters, filters flattened "
                         "(brands and conditions repeat); the same limits apply.",
             responses=search_answers,
             openapi_extra={"parameters": query_parameters(SearchBody)})
    async def search_get(
        request: Request, headers: Annotated[SearchHeaders, Depends(search_headers)],
    ) -> Response:
        try:
            req = SearchBody.model_validate(search_request_from_query(request.query_params))
        except ValidationError as exc:
            return invalid(field_errors(exc.errors()))
        return await run_search(req, headers)

    @app.post("/v1/moderate", summary="Per-category probabilities that a listing is prohibited",
              responses=documented(ModerationResponse, 503))
    async def moderate(req: ModerationRequest) -> Response:
        moderator: Moderator | None = app.state.moderator
        if moderator is None:
            return error(503, "moderation_unavailable",
                         "no moderation model loaded (BESTMATCH_MODERATION_MODEL_DIR)")
        try:
            photo = Image.open(io.BytesIO(base64.b64decode(req.photo, validate=True)))
            photo.load()
        except (ValueError, OSError) as exc:
            return invalid([{"field": "photo",
                             "message": f"not a base64-encoded image: {exc}"}])
        probs = await asyncio.to_thread(moderator.score, [req.title], [req.description],
                                        [req.price], [photo.convert("RGB")])
        scores = {c: round(float(p[0]), 6) for c, p in probs.items()}
        return json_response({"model": moderator.version, "threshold": moderator.threshold,
                              "categories": scores,
                              "flagged": [c for c, p in scores.items()
                                          if p >= moderator.threshold]})

    @app.get("/healthz", summary="Liveness", responses=documented(Health))
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Readiness: engine, feature store, model, experiments",
             description="200 ready or degraded (answers still served, e.g. with feature "
                         "priors), 503 not_ready. Per-dependency checks only with a valid "
                         "X-Admin-Token: they name hosts, files and error texts.",
             responses={**documented(Readiness), 503: {"model": Readiness,
                                                        "description": "not ready"}})
    async def readyz(
        x_admin_token: Annotated[str | None, Header()] = None,
    ) -> Response:
        searcher: Searcher = app.state.searcher
        try:
            health = await searcher.engine.health(searcher.index)
            engine = {"ok": health.get("status") in ("green", "yellow"),
                      "index": searcher.index, "status": health.get("status")}
        except (EngineUnavailable, EngineRequestError) as exc:
            engine = {"ok": False, "index": searcher.index, "error": str(exc)}
        store_up = await searcher.store.ping()
        store_ok = store_up and searcher.store.version is not None
        metrics.FEATURE_STORE_READY.set(store_ok)
        model = app.state.models.current
        experiments: ExperimentRegistry = app.state.experiments
        checks = {
            "engine": engine,
            "feature_store": {"ok": store_ok, "kind": settings.feature_store,
                              "feature_version": searcher.store.version,
                              "error": None if store_ok else
                              "no_feature_version" if store_up else "unreachable"},
            "model": {"ok": model is not None, **(model.describe() if model else {}),
                      "last_error": app.state.models.last_error},
            "experiments": {"ok": experiments.last_error is None,
                            "file": str(experiments.path) if experiments.path else None,
                            "running": [e.name for e in experiments.current.specs],
                            "last_error": experiments.last_error},
        }
        ready = engine["ok"] and model is not None
        healthy = store_ok and experiments.last_error is None
        status = "ready" if ready and healthy else "degraded" if ready else "not_ready"
        answer = {"status": status}
        if x_admin_token is not None and admin_denied(x_admin_token) is None:
            answer["checks"] = checks
        return json_response(answer, 200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/model/reload", summary="Load a model version (admin token)",
              responses=documented(ModelReloaded, *ADMIN_ERRORS, 409))
    async def reload_model(
        body: ReloadRequest | None = None,
        x_admin_token: Annotated[str | None, Header()] = None,
    ) -> Response:
        denied = admin_denied(x_admin_token)
        if denied is not None:
            return denied
        body = body or ReloadRequest()
        models: ModelRegistry = app.state.models
        name = body.name or (models.current.name if models.current else settings.model_name)
        try:
            model = await asyncio.to_thread(_load_model, models, name, body.version, True)
        except ModelError as exc:
            return error(409, "model_refused", str(exc),
                         serving=models.current.describe() if models.current else None)
        return json_response({"status": "loaded", "model": model.describe()})

    @app.post("/admin/experiments/reload", summary="Reload the experiments file (admin token)",
              responses=documented(ExperimentsReloaded, *ADMIN_ERRORS, 409))
    async def reload_experiments(
        x_admin_token: Annotated[str | None, Header()] = None,
    ) -> Response:
        denied = admin_denied(x_admin_token)
        if denied is not None:
            return denied
        registry: ExperimentRegistry = app.state.experiments
        if registry.path is None:
            return error(409, "experiments_disabled", "set BESTMATCH_EXPERIMENTS_FILE")
        try:
            experiments = await asyncio.to_thread(registry.reload)
        except (OSError, ExperimentConfigError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)  # no path
            return error(409, "experiments_refused", f"experiments file refused: {reason}",
                         fields=getattr(exc, "fields", []),
                         serving=registry.current.describe())
        return json_response({"status": "loaded", "experiments": experiments.describe()})

    return app


def _load_model(models: ModelRegistry, name: str, version: str, strict: bool = False):
    """Load a model and publish its metrics; at start-up a refusal is logged, not fatal."""
    try:
        model = models.load(name, version)
    except ModelError:
        metrics.MODEL_RELOADS.labels("refused").inc()
        if strict:
            raise
        return None
    metrics.MODEL_RELOADS.labels("loaded").inc()
    metrics.set_model_info(model.name, model.version, model.provider)
    return model
