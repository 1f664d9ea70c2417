"""A hand-set baseline ranker, generated reproducibly (no training data needed).

It has the trained model's exact architecture and size (so it costs the same to
serve) but fixed weights: the score is a linear function

    score = recall_score' + 2 * <q, t> + 5 * ctr + 0.02 * impressions' - 0.05 * rank'
            - 0.2 * condition

(primes are the spec's log1p transforms; <q, t> is the dot product of the query's and
title's mean token embeddings, with a seeded random embedding table, so shared tokens
raise it). The MLP passes it through relu(s) - relu(-s) = s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.feature_spec import DENSE_DIM, DENSE_NAMES
from app.tokenizer import TOKEN_BUCKETS
from training.export import write_model
from training.normalise import Normaliser
from training.ranker_graph import RankerWeights

EMBED_DIM = 32
HIDDEN = (128, 64)
COEFFICIENTS = {
    "recall_score": 1.0,
    "recall_rank": -0.05,
    "ctr": 5.0,
    "impressions": 0.02,
    "condition": -0.2,
}
OVERLAP_WEIGHT = 2.0


def baseline_weights(seed: int = 7) -> RankerWeights:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(0.0, 1.0 / np.sqrt(EMBED_DIM), (TOKEN_BUCKETS, EMBED_DIM))
    embedding[0] = 0.0
    width = DENSE_DIM + 3 * EMBED_DIM
    linear = np.zeros(width)
    for name, coef in COEFFICIENTS.items():
        linear[DENSE_NAMES.index(name)] = coef
    linear[DENSE_DIM + 2 * EMBED_DIM:] = OVERLAP_WEIGHT  # the q * t block sums to <q, t>
    w0 = np.zeros((width, HIDDEN[0]))
    w0[:, 0], w0[:, 1] = linear, -linear
    w1 = np.zeros((HIDDEN[0], HIDDEN[1]))
    w1[0, 0] = w1[1, 1] = 1.0
    w2 = np.zeros((HIDDEN[1], 1))
    w2[0, 0], w2[1, 0] = 1.0, -1.0
    return RankerWeights(
        norm=Normaliser.identity(DENSE_DIM),
        embedding=embedding,
        layers=[(w0, np.zeros(HIDDEN[0])), (w1, np.zeros(HIDDEN[1])), (w2, np.zeros(1))],
    )


def write_baseline(models_dir: Path, version: str = "1", seed: int = 7) -> Path:
    return write_model(
        models_dir, "baseline", version, baseline_weights(seed),
        training={"kind": "hand-set baseline", "seed": seed,
                  "generator": "training/baseline_model.py",
                  "coefficients": COEFFICIENTS, "overlap_weight": OVERLAP_WEIGHT},
    )
