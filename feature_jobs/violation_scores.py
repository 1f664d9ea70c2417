"""Score listings with the moderation detectors; write ``violation_score`` and
``violation_category`` into the index (the recall query already filters on the score).

Input: JSON lines ``{"id", "title", "description", "price", "photo": path}``. The score is
the highest category probability, the category its argmax when it reaches the model's
threshold (else ""). Written by :mod:`feature_jobs.bulk_update` (resumable, counted,
rejects set aside with the reason).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.interfaces import SearchEngine
from app.moderation import Moderator
from feature_jobs.bulk_update import bulk_update
from feature_jobs.image_backfill import load_photos


async def write_violation_scores(engine: SearchEngine, alias: str, listings: Path,
                                 moderator: Moderator, state_dir: Path, batch: int = 32) -> dict:
    def score_batch(rows: list[dict]):
        ok, photos, refused = load_photos(rows)
        valid, images = [], []
        for row, photo in zip(ok, photos, strict=True):
            if isinstance(row.get("title"), str) and isinstance(row.get("price"), int | float):
                valid.append(row)
                images.append(photo)
            else:
                refused.append((row, "malformed row: needs a title and a numeric price"))
        if not valid:
            return [], refused
        probs = moderator.score([r["title"] for r in valid],
                                [str(r.get("description", "")) for r in valid],
                                [r["price"] for r in valid], images)
        table = np.stack([probs[c] for c in moderator.categories], axis=1)
        updates = []
        for row, p in zip(valid, table, strict=True):
            best = int(p.argmax())
            category = moderator.categories[best] if p[best] >= moderator.threshold else ""
            updates.append((str(row["id"]), {"violation_score": float(p[best]),
                                             "violation_category": category}))
        return updates, refused

    return await bulk_update(engine, alias, listings, state_dir, score_batch, batch,
                             label=moderator.version)
