"""Export trained detectors as the bundle :class:`app.moderation.Moderator` serves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.image_input import SIZE, to_input
from app.moderation import MAX_TOKENS, Moderator, listing_token_ids, price_input
from training.export import publish_model
from training.moderation.train import Detector

MODEL_NAME = "moderation"


class _Probability(nn.Module):
    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, ids, image, price):
        return torch.sigmoid(self.detector(ids, image, price)[:, 0])


def _onnx(module: nn.Module, args: tuple, names: list[str], output: str) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), args, buf, dynamo=False, input_names=names,
                      output_names=[output], opset_version=17,
                      dynamic_axes={**{n: {0: "n"} for n in names}, output: {0: "n"}})
    return buf.getvalue()


def encoder_onnx(encoder: nn.Module) -> bytes:
    return _onnx(encoder, (torch.zeros(1, 3, SIZE, SIZE),), ["image"], "embedding")


def detector_onnx(detector: Detector, image_dim: int) -> bytes:
    example = (torch.ones(1, MAX_TOKENS, dtype=torch.long), torch.zeros(1, image_dim),
               torch.zeros(1))
    return _onnx(_Probability(detector), example, ["ids", "image", "price"], "probability")


def export_detectors(models_dir, version: str, encoder: bytes, image_dim: int,
                     detectors: dict[str, Detector], manifest: dict,
                     keep: dict[str, bytes] | None = None) -> Path:
    """``models_dir/moderation/version``: the encoder (ONNX bytes, see :func:`encoder_onnx`)
    and one ONNX per category (``keep``: detectors of an earlier version carried over as
    they are, by category)."""
    files = {"encoder.onnx": encoder}
    files.update({f"{c}.onnx": data for c, data in (keep or {}).items()})
    files.update({f"{c}.onnx": detector_onnx(d, image_dim) for c, d in detectors.items()})
    return publish_model(models_dir, MODEL_NAME, version, files, {
        "kind": "violation_detectors", "categories": [*(keep or {}), *detectors],
        "max_tokens": MAX_TOKENS, **manifest})


@torch.no_grad()
def parity(model_dir, encoder: nn.Module, detectors: dict[str, Detector], titles, descriptions,
           prices, photos) -> float:
    """Max |torch - ONNX Runtime| probability over the given listings and categories."""
    served = Moderator(model_dir).score(titles, descriptions, prices, photos)
    ids = torch.from_numpy(np.stack([listing_token_ids(t, d)
                                     for t, d in zip(titles, descriptions, strict=True)]))
    emb = encoder.eval()(torch.from_numpy(to_input(photos)))
    price = torch.from_numpy(price_input(prices))
    worst = 0.0
    for category, detector in detectors.items():
        want = _Probability(detector).eval()(ids, emb, price).numpy()
        worst = max(worst, float(np.abs(served[category] - want).max()))
    return worst
