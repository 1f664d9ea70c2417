"""The Image Score model's input contract, shared by training and the backfill job:
RGB resized to SIZE x SIZE, scaled to [-1, 1], float32 NCHW."""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 224


def to_input(images: list[Image.Image]) -> np.ndarray:
    """float32 [N, 3, SIZE, SIZE] in [-1, 1]."""
    arrays = [np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC),
                         np.float32) for im in images]
    x = np.stack(arrays).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return np.ascontiguousarray(x, np.float32)
