"""The one feature spec: names, order and transforms of the model's dense inputs.

The service builds its feature matrix with :func:`dense_matrix`, and dataset building
does the same, so online and offline cannot drift. :func:`spec_hash` fingerprints this
module's contract (dense features, tokeniser, model inputs); a model's manifest carries
it and the service refuses a model whose hash differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from app import tokenizer


@dataclass(frozen=True)
class Feature:
    name: str
    transform: Literal["identity", "log1p"]
    description: str
    scale: float = 1.0  # applied before the transform


DENSE_FEATURES: tuple[Feature, ...] = (
    Feature("recall_score", "log1p", "engine score: BM25 x recency decay"),
    Feature("recall_rank", "log1p", "0-based position in the engine's recall order"),
    Feature("price", "log1p", "listing price (JPY)"),
    Feature("age_hours", "log1p", "hours from listing creation to query time"),
    Feature("ctr", "identity", "smoothed item click-through rate (feature store)"),
    Feature("impressions", "log1p", "item impressions in the window (feature store)"),
    Feature(
        "impression_prob",
        "log1p",
        "item impressions / all impressions in the window (feature store), x 1e6",
        scale=1e6,
    ),
    Feature("image_score", "identity", "image quality score in [0, 1] (index field)"),
    Feature("condition", "identity", "condition ordinal: 0 new .. 1 poor"),
    Feature("title_tokens", "log1p", "number of title tokens"),
    Feature("query_tokens", "log1p", "number of query tokens"),
    Feature("features_missing", "identity", "1 when store features fell back to priors"),
)
DENSE_NAMES: tuple[str, ...] = tuple(f.name for f in DENSE_FEATURES)
DENSE_DIM = len(DENSE_FEATURES)

# Per-item values kept in the feature store, and the priors used for items the store
# does not know (new listings) or when the store is unreachable. A published feature
# version may carry its own priors (see app.feature_store); these are the fallback.
STORE_FEATURES: tuple[str, ...] = ("ctr", "impressions", "impression_prob")
DEFAULT_PRIORS: dict[str, float] = {"ctr": 0.02, "impressions": 0.0, "impression_prob": 0.0}

# ONNX model contract.
INPUT_DENSE = "dense"  # float32 [N, DENSE_DIM]
INPUT_QUERY_IDS = "query_ids"  # int64 [1, Lq], 0 = padding
INPUT_TITLE_IDS = "title_ids"  # int64 [N, Lt], 0 = padding
OUTPUT_SCORE = "score"  # float32 [N]

_LOG1P = np.array([f.transform == "log1p" for f in DENSE_FEATURES])
_SCALE = np.array([f.scale for f in DENSE_FEATURES], dtype=np.float64)


def dense_matrix(raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack raw per-candidate columns in spec order and apply the transforms.

    ``raw`` maps every name in DENSE_NAMES to a length-N array (scalars broadcast).
    Negative inputs to log1p are clipped at 0 (a clock skew must not produce NaN).
    """
    n = max(np.size(raw[name]) for name in DENSE_NAMES)
    x = np.empty((n, DENSE_DIM), dtype=np.float64)
    for j, name in enumerate(DENSE_NAMES):
        x[:, j] = raw[name]
    x *= _SCALE
    x[:, _LOG1P] = np.log1p(np.maximum(x[:, _LOG1P], 0.0))
    return x.astype(np.float32)


def spec_document() -> dict:
    return {
        "dense_features": [asdict(f) for f in DENSE_FEATURES],
        "tokenizer": tokenizer.spec(),
        "inputs": {
            INPUT_DENSE: ["N", DENSE_DIM],
            INPUT_QUERY_IDS: [1, "Lq"],
            INPUT_TITLE_IDS: ["N", "Lt"],
        },
        "output": OUTPUT_SCORE,
    }


def spec_hash() -> str:
    canonical = json.dumps(spec_document(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
