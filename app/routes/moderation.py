"""``/v1/moderate``: per-category probabilities that a listing is prohibited."""

from __future__ import annotations

import asyncio
import base64
import io

from fastapi import APIRouter
from fastapi.responses import Response
from PIL import Image

from app.errors import ServiceError, documented, invalid, json_response
from app.schemas import ModerationRequest, ModerationResponse
from app.services import ServicesDep

router = APIRouter()


@router.post("/v1/moderate", summary="Per-category probabilities that a listing is prohibited",
             responses=documented(ModerationResponse, 503))
async def moderate(req: ModerationRequest, services: ServicesDep) -> Response:
    moderator = services.moderator
    if moderator is None:
        raise ServiceError(503, "moderation_unavailable",
                           "no moderation model loaded (BESTMATCH_MODERATION_MODEL_DIR)")
    try:
        photo = Image.open(io.BytesIO(base64.b64decode(req.photo, validate=True)))
        photo.load()
    except (ValueError, OSError) as exc:
        raise invalid([{"field": "photo", "message": f"not a base64-encoded image: {exc}"}]
                      ) from None
    probs = await asyncio.to_thread(moderator.score, [req.title], [req.description],
                                    [req.price], [photo.convert("RGB")])
    scores = {c: round(float(p[0]), 6) for c, p in probs.items()}
    return json_response({"model": moderator.version, "threshold": moderator.threshold,
                          "categories": scores,
                          "flagged": [c for c, p in scores.items() if p >= moderator.threshold]})
