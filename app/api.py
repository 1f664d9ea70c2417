"""The HTTP service: the app, its resources (:mod:`app.services`), its routers
(:mod:`app.routes`) and one error shape for every failure (:mod:`app.errors`)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.errors import install_handlers
from app.routes import admin, health, moderation
from app.routes.search import search_router
from app.schemas import ErrorResponse
from app.services import open_services
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with open_services(settings) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="bestmatch",
        version="0.1.0",
        description="Learning-to-rank re-ranking for marketplace search.",
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse, "description": "unparseable body"},
                   422: {"model": ErrorResponse, "description": "invalid fields"}},
    )
    install_handlers(app)
    for router in (search_router(settings), moderation.router, health.router, admin.router):
        app.include_router(router)
    return app
