"""Prohibited-item detectors at serving time: per-category probabilities of a listing.

A moderation model (``models/moderation/<version>/``, written by
``training.moderation.export``) is a bundle: ``encoder.onnx`` (photo -> embedding, the
frozen pretrained CNN) and one ``<category>.onnx`` per detector (token ids of title +
description, photo embedding, log price -> probability), with the manifest naming the
categories and the decision threshold. The batch job and the ``/v1/moderate`` endpoint
both score through :class:`Moderator`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from app import tokenizer
from app.image_input import to_input
from app.scoring import cpu_session, read_manifest

MAX_TOKENS = 32


def listing_token_ids(title: str, description: str) -> np.ndarray:
    """int64 [MAX_TOKENS]: the detectors' text input (0-padded)."""
    out = np.zeros(MAX_TOKENS, np.int64)
    ids = tokenizer.token_ids(tokenizer.tokenize(f"{title} {description}"), MAX_TOKENS)
    out[: len(ids)] = ids
    return out


def price_input(prices) -> np.ndarray:
    return (np.log1p(np.asarray(prices, np.float64)) / 12).astype(np.float32)


class Moderator:
    def __init__(self, model_dir: Path, threads: int = 1):
        manifest = read_manifest(model_dir, "violation_detectors")

        def session(file: str):
            return cpu_session(model_dir / file, threads)

        self.categories: list[str] = manifest["categories"]
        self.threshold: float = manifest["threshold"]
        self.version = f"{manifest['name']}/{manifest['version']}"
        self.encoder = session("encoder.onnx")
        self.detectors = {c: session(f"{c}.onnx") for c in self.categories}

    def score(self, titles: list[str], descriptions: list[str], prices: list[float],
              photos: list[Image.Image]) -> dict[str, np.ndarray]:
        """Probability per category of each listing."""
        ids = np.stack([listing_token_ids(t, d)
                        for t, d in zip(titles, descriptions, strict=True)])
        (emb,) = self.encoder.run(None, {"image": to_input(photos)})
        inputs = {"ids": ids, "image": emb, "price": price_input(prices)}
        return {c: s.run(None, inputs)[0] for c, s in self.detectors.items()}
