"""Ranking metrics for one list at a time, and their per-query mean.

Rules:

- Gain: ``"exp2"`` is ``2^rel - 1`` (the usual nDCG for graded labels), ``"linear"`` is
  ``rel``. The discount at 1-based rank r is ``1 / log2(1 + r)``.
- Ties: items are ranked by score descending with a stable sort, so equal scores keep
  their input order (no averaging over tied permutations).
- No relevant item: a list whose ideal DCG is 0 (nDCG), or with no item at or above the
  relevance threshold (reciprocal rank), has no defined value; the metric returns ``None``.
  :func:`mean_by_query` leaves such lists out of the mean and counts them as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Gain = Literal["exp2", "linear"]


def _ranked(scores: ArrayLike, relevance: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Relevance in ranked order (score descending, stable), and the raw relevance."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    r = np.asarray(relevance, dtype=np.float64).ravel()
    if s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and relevance {r.shape} differ in length")
    return r[np.argsort(-s, kind="stable")], r


def _gain(relevance: np.ndarray, gain: Gain) -> np.ndarray:
    return np.exp2(relevance) - 1.0 if gain == "exp2" else relevance


def _dcg(gains: np.ndarray) -> float:
    return float(np.sum(gains / np.log2(np.arange(2, gains.size + 2))))


def ndcg_at_k(scores: ArrayLike, relevance: ArrayLike, k: int, gain: Gain = "exp2") -> float | None:
    """nDCG@k of one list; ``None`` when the list has no relevant item."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if gain not in ("exp2", "linear"):
        raise ValueError(f"unknown gain {gain!r}; use 'exp2' or 'linear'")
    ranked, raw = _ranked(scores, relevance)
    ideal = _dcg(_gain(np.sort(raw)[::-1][:k], gain))
    if ideal <= 0:
        return None
    return _dcg(_gain(ranked[:k], gain)) / ideal


def reciprocal_rank(
    scores: ArrayLike, relevance: ArrayLike, threshold: float = 1.0
) -> float | None:
    """1 / rank of the first item with relevance >= threshold; ``None`` if there is none."""
    ranked, _ = _ranked(scores, relevance)
    hits = np.flatnonzero(ranked >= threshold)
    if hits.size == 0:
        return None
    return 1.0 / float(hits[0] + 1)


def mean_by_query(
    values: Sequence[float | None], query_keys: Sequence[Hashable]
) -> tuple[float, int, int]:
    """Mean over queries of the per-query mean of the defined values.

    Returns ``(mean, queries_used, lists_skipped)``; ``None`` values are skipped and
    counted, and the mean is NaN when no value is left.
    """
    if len(values) != len(query_keys):
        raise ValueError(f"{len(values)} values but {len(query_keys)} query keys")
    per_query: dict[Hashable, list[float]] = {}
    skipped = 0
    for value, key in zip(values, query_keys, strict=True):
        if value is None:
            skipped += 1
        else:
            per_query.setdefault(key, []).append(float(value))
    if not per_query:
        return math.nan, 0, skipped
    means = [sum(v) / len(v) for v in per_query.values()]
    return sum(means) / len(means), len(means), skipped
