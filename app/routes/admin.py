"""``/admin/*``: swap the served model, reload the experiments file (admin token)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from app.errors import ServiceError, documented, json_response
from app.experiments import ExperimentConfigError
from app.schemas import ExperimentsReloaded, ModelReloaded, ReloadRequest
from app.scoring import ModelError
from app.services import AdminDep, ServicesDep, load_model

router = APIRouter(dependencies=[AdminDep])
ADMIN_ERRORS = (401, 403, 409)


@router.post("/admin/model/reload", summary="Load a model version (admin token)",
             responses=documented(ModelReloaded, *ADMIN_ERRORS))
async def reload_model(services: ServicesDep, body: ReloadRequest | None = None) -> Response:
    body = body or ReloadRequest()
    models = services.models
    name = body.name or (models.current.name if models.current else services.settings.model_name)
    try:
        model = await asyncio.to_thread(load_model, models, name, body.version)
    except ModelError as exc:
        raise ServiceError(409, "model_refused", str(exc),
                           serving=models.current.describe() if models.current else None
                           ) from None
    return json_response({"status": "loaded", "model": model.describe()})


@router.post("/admin/experiments/reload", summary="Reload the experiments file (admin token)",
             responses=documented(ExperimentsReloaded, *ADMIN_ERRORS))
async def reload_experiments(services: ServicesDep) -> Response:
    registry = services.experiments
    if registry.path is None:
        raise ServiceError(409, "experiments_disabled", "set BESTMATCH_EXPERIMENTS_FILE")
    try:
        experiments = await asyncio.to_thread(registry.reload)
    except (OSError, ExperimentConfigError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)  # no path
        raise ServiceError(409, "experiments_refused", f"experiments file refused: {reason}",
                           fields=getattr(exc, "fields", []),
                           serving=registry.current.describe()) from None
    return json_response({"status": "loaded", "experiments": experiments.describe()})
