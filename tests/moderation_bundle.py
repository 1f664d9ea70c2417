"""A tiny trained moderation bundle (stand-in encoder, one epoch), for tests that need
a served ``/v1/moderate``: the moderation tests and the API fuzz run."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from training.moderation.export import encoder_onnx, export_detectors
from training.moderation.train import ModerationConfig, build_data, evaluate, search


class TinyEncoder(nn.Module):
    """A stand-in image encoder (the real one is pluggable the same way), for speed."""

    dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=8)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def train_tiny_bundle(root: Path):
    """(model directory, encoder, detectors) of a bundle trained in a few seconds."""
    torch.manual_seed(0)
    encoder = TinyEncoder().eval()
    config = ModerationConfig(positives_per_category=12, negatives_per_positive=3,
                              search_epochs=1, eval_epochs=1, layers=3, nodes=2)
    data = build_data(config, encoder)
    found = search(data, config, say=lambda msg: None)
    _, detectors = evaluate(data, found["genotypes"], config, say=lambda msg: None)
    model_dir = export_detectors(root, "1", encoder_onnx(encoder), encoder.dim, detectors,
                                 {"threshold": 0.5, "genotypes": found["genotypes"],
                                  "config": asdict(config), "encoder": "tiny"})
    return model_dir, encoder, detectors
