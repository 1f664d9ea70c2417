"""Liveness, readiness (details only with the admin token) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.errors import documented, json_response
from app.interfaces import EngineRequestError, EngineUnavailable
from app.schemas import Health, Readiness
from app.services import AdminToken, Services, ServicesDep, admin_refusal

router = APIRouter()


@router.get("/healthz", summary="Liveness", responses=documented(Health))
async def healthz() -> Response:
    return json_response({"status": "ok"})


async def readiness_checks(services: Services) -> dict[str, dict]:
    """Per dependency: ``ok`` and what a person on call needs."""
    searcher = services.searcher
    try:
        health = await searcher.engine.health(searcher.index)
        engine = {"ok": health.get("status") in ("green", "yellow"),
                  "index": searcher.index, "status": health.get("status")}
    except (EngineUnavailable, EngineRequestError) as exc:
        engine = {"ok": False, "index": searcher.index, "error": str(exc)}
    store_up = await searcher.store.ping()
    store_ok = store_up and searcher.store.version is not None
    metrics.FEATURE_STORE_READY.set(store_ok)
    model = services.models.current
    experiments = services.experiments
    return {
        "engine": engine,
        "feature_store": {"ok": store_ok, "kind": services.settings.feature_store,
                          "feature_version": searcher.store.version,
                          "error": None if store_ok else
                          "no_feature_version" if store_up else "unreachable"},
        "model": {"ok": model is not None, **(model.describe() if model else {}),
                  "last_error": services.models.last_error},
        "experiments": {"ok": experiments.last_error is None,
                        "file": str(experiments.path) if experiments.path else None,
                        "running": [e.name for e in experiments.current.specs],
                        "last_error": experiments.last_error},
    }


@router.get("/readyz", summary="Readiness: engine, feature store, model, experiments",
            description="200 ready or degraded (answers still served, e.g. with feature "
                        "priors), 503 not_ready. Per-dependency checks only with a valid "
                        "X-Admin-Token: they name hosts, files and error texts.",
            responses={**documented(Readiness),
                       503: {"model": Readiness, "description": "not ready"}})
async def readyz(services: ServicesDep, x_admin_token: AdminToken = None) -> Response:
    checks = await readiness_checks(services)
    ready = checks["engine"]["ok"] and checks["model"]["ok"]
    healthy = checks["feature_store"]["ok"] and checks["experiments"]["ok"]
    status = "ready" if ready and healthy else "degraded" if ready else "not_ready"
    answer: dict = {"status": status}
    if x_admin_token is not None and admin_refusal(services.settings, x_admin_token) is None:
        answer["checks"] = checks
    return json_response(answer, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
