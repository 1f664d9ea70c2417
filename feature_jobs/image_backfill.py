"""Score listing photos with the Image Score model and write ``image_score`` into the index.

Input: JSON lines ``{"id": listing id, "photo": path of its photo}``. Photos are scored
in batches by the exported ONNX model (``models/image_score/<version>``) and written as
bulk partial updates (``{"doc": {"image_score": s}}``) by :mod:`feature_jobs.bulk_update`
(resumable, counted, rejects set aside with the reason).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from app.image_input import to_input
from app.interfaces import SearchEngine
from app.scoring import MODEL_FILE, cpu_session, read_manifest
from feature_jobs.bulk_update import bulk_update


class ImageScorer:
    """The exported model: images -> scores in [0, 1]."""

    def __init__(self, model_dir: Path, threads: int = 2):
        manifest = read_manifest(model_dir, "image_quality")
        self.session = cpu_session(model_dir / MODEL_FILE, threads)
        self.version = f"{manifest['name']}/{manifest['version']}"

    def score(self, images: list[Image.Image]) -> list[float]:
        (scores,) = self.session.run(["score"], {"image": to_input(images)})
        return scores.tolist()


def load_photos(rows: list[dict]) -> tuple[list[dict], list[Image.Image], list[tuple[dict, str]]]:
    """(rows whose photo opened, the photos as RGB, [(row, reason)] for the others)."""
    ok, images, refused = [], [], []
    for row in rows:
        try:
            with Image.open(Path(row["photo"])) as im:
                images.append(im.convert("RGB"))
            ok.append(row)
        except (OSError, KeyError, TypeError) as exc:
            refused.append((row, f"unreadable photo: {exc!r}"))
    return ok, images, refused


async def backfill_image_scores(engine: SearchEngine, alias: str, photos: Path, scorer: ImageScorer,
                                state_dir: Path, batch: int = 32) -> dict:
    def score_batch(rows: list[dict]):
        ok, images, refused = load_photos(rows)
        scores = scorer.score(images) if images else []
        return [(str(r["id"]), {"image_score": s}) for r, s in zip(ok, scores, strict=True)], \
            refused

    return await bulk_update(engine, alias, photos, state_dir, score_batch, batch,
                             label=scorer.version)
