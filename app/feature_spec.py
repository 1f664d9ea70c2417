"""The one feature spec: names, order, extraction and transforms of the model's dense inputs.

Each feature declares how its raw value is computed from a :class:`CandidateBlock`
(engine fields, store values, query). The service and dataset building both fill a block
and call ``dense_matrix(raw_features(block))``, so online and offline cannot drift.
:func:`spec_hash` fingerprints this module's contract (dense features, tokeniser, model
inputs); a model's manifest carries it and the service refuses a model whose hash differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from app import tokenizer


@dataclass(frozen=True)
class CandidateBlock:
    """What raw features are computed from: one row per candidate (scalars broadcast)."""

    recall_score: np.ndarray  # engine score
    recall_rank: np.ndarray  # 0-based position in the engine's recall order
    price: np.ndarray
    created_ms: np.ndarray  # listing creation time, epoch ms
    now_ms: np.ndarray | int  # query time, epoch ms
    store: Mapping[str, np.ndarray]  # STORE_FEATURES values, priors where missing
    missing: np.ndarray  # bool: the store values are priors
    image_score: np.ndarray
    condition: np.ndarray  # ordinal, app.listings.CONDITION_ORDINAL
    title_ids: np.ndarray  # int [N, L] title token ids, 0-padded
    query_tokens: np.ndarray | int  # number of query token ids


Extractor = Callable[[CandidateBlock], np.ndarray | float]


@dataclass(frozen=True)
class Feature:
    name: str
    transform: Literal["identity", "log1p"]
    description: str
    extract: Extractor = field(repr=False)  # code, not part of the hashed contract
    scale: float = 1.0  # applied before the transform


DENSE_FEATURES: tuple[Feature, ...] = (
    Feature("recall_score", "log1p", "engine score: BM25 x recency decay",
            lambda b: b.recall_score),
    Feature("recall_rank", "log1p", "0-based position in the engine's recall order",
            lambda b: b.recall_rank),
    Feature("price", "log1p", "listing price (JPY)", lambda b: b.price),
    Feature("age_hours", "log1p", "hours from listing creation to query time",
            lambda b: (b.now_ms - b.created_ms) / 3_600_000.0),
    Feature("ctr", "identity", "smoothed item click-through rate (feature store)",
            lambda b: b.store["ctr"]),
    Feature("impressions", "log1p", "item impressions in the window (feature store)",
            lambda b: b.store["impressions"]),
    Feature(
        "impression_prob",
        "log1p",
        "item impressions / all impressions in the window (feature store), x 1e6",
        lambda b: b.store["impression_prob"],
        scale=1e6,
    ),
    Feature("image_score", "identity", "image quality score in [0, 1] (index field)",
            lambda b: b.image_score),
    Feature("condition", "identity", "condition ordinal: 0 new .. 1 poor",
            lambda b: b.condition),
    Feature("title_tokens", "log1p", "number of title tokens",
            lambda b: (b.title_ids > 0).sum(axis=1)),
    Feature("query_tokens", "log1p", "number of query tokens", lambda b: b.query_tokens),
    Feature("features_missing", "identity", "1 when store features fell back to priors",
            lambda b: b.missing),
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


def raw_features(block: CandidateBlock) -> dict[str, np.ndarray | float]:
    """Every dense feature's raw (untransformed) column, by name, in spec order."""
    return {f.name: f.extract(block) for f in DENSE_FEATURES}


def dense_matrix(raw: Mapping[str, np.ndarray | float]) -> np.ndarray:
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
        "dense_features": [{k: v for k, v in asdict(f).items() if k != "extract"}
                           for f in DENSE_FEATURES],
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
