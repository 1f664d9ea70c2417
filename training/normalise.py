"""Input normalisation of the ranker's dense features, fitted on training rows only.

For column j: ``x' = slog1p(x) if log[j] else x``, then ``(x' - mu[j]) * scale[j]``, where
``slog1p(x) = sign(x) * log(1 + |x|)``. The model carries the three vectors and the ONNX
graph applies them (:mod:`training.ranker_graph`), so serving and training agree.

- ``transform="auto"`` (any LETOR-style columns): a column takes the signed log1p when it
  is highly skewed (|sample skewness| > 1, the usual convention since Bulmer, *Principles
  of Statistics*, 1979; not tuned here) and the log lowers its |skewness|. A heavy tail
  (counts, lengths, raw BM25 sums) has a large skew and loses most of it; a bounded or
  roughly symmetric column keeps its values.
- ``transform="none"``: standardisation only (the service's features, whose transforms the
  feature spec already declares).
- A constant column (zero spread over the training rows) gets ``scale = 0``: whatever it
  holds at serving time contributes nothing. Other spreads are floored at
  :data:`MIN_STD` so a near-constant column cannot be amplified without bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Transform = Literal["auto", "none"]
MIN_STD = 1e-3
HIGH_SKEW = 1.0


def slog1p(x: np.ndarray) -> np.ndarray:
    """Signed log1p written as the ONNX graph computes it (``log(1 + |x|)``, not log1p)."""
    return np.sign(x) * np.log(1.0 + np.abs(x))


def _abs_skew(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=0)
    std = centred.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = (centred ** 3).mean(axis=0) / std ** 3
    return np.abs(np.nan_to_num(skew, nan=0.0))


@dataclass
class Normaliser:
    log: np.ndarray  # bool [D]: signed log1p first
    mu: np.ndarray  # [D], mean after the log step
    scale: np.ndarray  # [D], 1 / std (0 for a constant column)

    @classmethod
    def identity(cls, width: int) -> Normaliser:
        return cls(np.zeros(width, bool), np.zeros(width), np.ones(width))

    @classmethod
    def fit(cls, rows: np.ndarray, transform: Transform = "auto") -> Normaliser:
        """Fit on training rows [n, D] (real items only, no padding)."""
        if transform not in ("auto", "none"):
            raise ValueError(f"unknown transform {transform!r}; use 'auto' or 'none'")
        rows = np.asarray(rows, np.float64)
        if transform == "auto":
            skew = _abs_skew(rows)
            log = (skew > HIGH_SKEW) & (_abs_skew(slog1p(rows)) < skew)
        else:
            log = np.zeros(rows.shape[1], bool)
        shaped = np.where(log, slog1p(rows), rows)
        std = shaped.std(axis=0)
        scale = np.where(std > 0, 1.0 / np.maximum(std, MIN_STD), 0.0)
        return cls(log, shaped.mean(axis=0), scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The numpy reference of the graph's normalisation (float64)."""
        x = np.asarray(x, np.float64)
        return (np.where(self.log, slog1p(x), x) - self.mu) * self.scale

    def describe(self) -> dict:
        return {"log_columns": [int(i) + 1 for i in np.flatnonzero(self.log)],
                "constant_columns": [int(i) + 1 for i in np.flatnonzero(self.scale == 0)],
                "rule": "signed log1p where |skewness| > 1 and the log lowers it; "
                        "standardised; constant columns zeroed"}
