"""What the HTTP layer serves with, opened once per process, and the typed dependencies
(``Depends``) through which the routers get it and check the admin token."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from app import metrics
from app.backends import open_engine, open_feature_store
from app.errors import ServiceError
from app.experiments import ExperimentConfigError, ExperimentRegistry
from app.feature_log import FeatureLog
from app.moderation import Moderator
from app.recall import RecallParams
from app.scoring import LoadedModel, ModelError, ModelRegistry
from app.search import Searcher
from app.settings import Settings

log = logging.getLogger("bestmatch")


@dataclass
class Services:
    settings: Settings
    searcher: Searcher
    models: ModelRegistry
    experiments: ExperimentRegistry
    moderator: Moderator | None


def load_model(models: ModelRegistry, name: str, version: str) -> LoadedModel:
    """Load a model and count the outcome (a refusal raises :class:`ModelError`)."""
    try:
        model = models.load(name, version)
    except ModelError:
        metrics.MODEL_RELOADS.labels("refused").inc()
        raise
    metrics.MODEL_RELOADS.labels("loaded").inc()
    metrics.set_model_info(model.name, model.version, model.provider)
    return model


def _moderator(settings: Settings) -> Moderator | None:
    if settings.moderation_model_dir is None:
        return None
    try:
        return Moderator(settings.moderation_model_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # ORT: RuntimeError
        log.error("moderation model %s not loaded: %s", settings.moderation_model_dir, exc)
        return None


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Engine, feature store, models, experiments (watched), moderation, feature log."""
    engine = open_engine(settings)
    store = open_feature_store(settings)
    feature_log = None
    if settings.feature_log_dir is not None:
        feature_log = FeatureLog(settings.feature_log_dir, settings.feature_log_queue,
                                 settings.feature_log_max_bytes)
        feature_log.start()
    models = ModelRegistry(settings.models_dir, settings.onnx_device, settings.onnx_threads)
    with suppress(ModelError):  # logged; the service answers in recall order, /readyz 503
        load_model(models, settings.model_name, settings.model_version)
    experiments = ExperimentRegistry(settings.experiments_file, models, settings.image_weight)
    with suppress(OSError, ExperimentConfigError):  # logged; /readyz shows it
        experiments.reload()
    watcher = asyncio.create_task(experiments.watch(settings.experiments_poll_s))
    searcher = Searcher(
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
    try:
        yield Services(settings, searcher, models, experiments, _moderator(settings))
    finally:
        watcher.cancel()
        await engine.close()
        await store.close()
        if feature_log is not None:
            feature_log.close()


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
AdminToken = Annotated[str | None, Header(alias="X-Admin-Token")]


def admin_refusal(settings: Settings, token: str | None) -> ServiceError | None:
    """Why ``token`` does not open the admin API (compared in constant time), or None."""
    if not settings.admin_token:
        return ServiceError(403, "admin_disabled", "set BESTMATCH_ADMIN_TOKEN to enable admin")
    if token is None or not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return ServiceError(401, "unauthorized", "missing or wrong X-Admin-Token")
    return None


def require_admin(services: ServicesDep, x_admin_token: AdminToken = None) -> None:
    refusal = admin_refusal(services.settings, x_admin_token)
    if refusal is not None:
        raise refusal


AdminDep = Depends(require_admin)
