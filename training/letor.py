"""Reader for LETOR / SVMlight ranking files (MSLR-WEB10K, Yahoo LTR, Istella).

Each line is ``<label> qid:<id> <index>:<value> ... [# comment]`` with 1-based feature
indices; absent features are 0. Blank lines and lines starting with ``#`` are skipped.
A malformed line is not dropped silently: it is kept out of the data and reported in
:attr:`LetorData.rejected` with its 1-based line number and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.dataset import Lists


@dataclass
class LetorData:
    labels: np.ndarray  # float32 [n]
    qids: np.ndarray  # str [n]
    features: np.ndarray  # float32 [n, d]
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def take(self, rows: np.ndarray) -> LetorData:
        """The rows ``rows`` (indices or a boolean mask); ``rejected`` stays with the file."""
        return LetorData(self.labels[rows], self.qids[rows], self.features[rows], self.rejected)

    def groups(self) -> list[np.ndarray]:
        """Row indices of each query, queries in order of first appearance."""
        if self.qids.size == 0:
            return []
        _, first, inverse = np.unique(self.qids, return_index=True, return_inverse=True)
        rows = np.argsort(inverse, kind="stable")
        per_key = np.split(rows, np.cumsum(np.bincount(inverse))[:-1])
        return [per_key[key] for key in np.argsort(first)]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _BadLine(ValueError):
    pass


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadLine(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _BadLine(f"{what} {text!r} is not finite")
    if abs(value) > _FLOAT32_MAX:
        raise _BadLine(f"{what} {text!r} overflows float32")
    return value


def _parse_line(content: str, n_features: int | None) -> tuple[float, str, list[int], list[float]]:
    tokens = content.split()
    label = _parse_float(tokens[0], "label")
    if label < 0:
        raise _BadLine(f"label {tokens[0]!r} is negative")
    if len(tokens) < 2 or not tokens[1].startswith("qid:"):
        raise _BadLine("missing qid (expected 'qid:<id>' after the label)")
    qid = tokens[1][4:]
    if not qid:
        raise _BadLine("empty qid")
    indices: list[int] = []
    values: list[float] = []
    seen: set[int] = set()
    for pair in tokens[2:]:
        index_text, sep, value_text = pair.partition(":")
        if not sep:
            raise _BadLine(f"bad feature pair {pair!r} (expected '<index>:<value>')")
        try:
            index = int(index_text)
        except ValueError:
            raise _BadLine(f"bad feature index in {pair!r}") from None
        if index < 1:
            raise _BadLine(f"feature index {index} < 1 (indices are 1-based)")
        if n_features is not None and index > n_features:
            raise _BadLine(f"feature index {index} > n_features={n_features}")
        if index in seen:
            raise _BadLine(f"feature index {index} repeated")
        seen.add(index)
        indices.append(index)
        values.append(_parse_float(value_text, f"value of feature {index}"))
    return label, qid, indices, values


def _lines(source: str | Path | Iterable[str]) -> Iterator[str]:
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as handle:
            yield from handle
    else:
        yield from source


def read_letor(source: str | Path | Iterable[str], n_features: int | None = None) -> LetorData:
    """Read a LETOR file (a ``str`` is a path) or an iterable of its lines.

    The feature width is ``n_features`` if given, else the largest index seen.
    """
    if n_features is not None and n_features < 0:
        raise ValueError(f"n_features must be >= 0, got {n_features}")
    labels: list[float] = []
    qids: list[str] = []
    sparse: list[tuple[list[int], list[float]]] = []
    rejected: list[tuple[int, str]] = []
    for number, line in enumerate(_lines(source), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        content = stripped.partition("#")[0]
        try:
            label, qid, indices, values = _parse_line(content, n_features)
        except _BadLine as bad:
            rejected.append((number, str(bad)))
            continue
        labels.append(label)
        qids.append(qid)
        sparse.append((indices, values))

    if n_features is None:
        n_features = max((max(indices) for indices, _ in sparse if indices), default=0)
    features = np.zeros((len(sparse), n_features), dtype=np.float32)
    for row, (indices, values) in enumerate(sparse):
        features[row, np.asarray(indices, dtype=np.int64) - 1] = values
    return LetorData(
        labels=np.asarray(labels, dtype=np.float32),
        qids=np.asarray(qids, dtype=str),
        features=features,
        rejected=rejected,
    )


def letor_lists(data: LetorData, list_size: int | None = None) -> Lists:
    """Padded lists (one per query) for :func:`training.fit.fit`: dense features only.

    There are no tokens, so the embedding part of the ranker sees only padding and the
    MLP learns from the file's features. A query with more than ``list_size`` documents
    keeps its first ``list_size``.
    """
    groups = data.groups()
    width = list_size or max((len(g) for g in groups), default=1)
    n, d = len(groups), data.features.shape[1]
    lists = Lists(
        dense=np.zeros((n, width, d), np.float32), title_ids=np.zeros((n, width, 1), np.int32),
        query_ids=np.zeros((n, 1), np.int32), labels=np.zeros((n, width), np.float32),
        mask=np.zeros((n, width), bool), position=np.zeros((n, width), np.int16),
        request_ids=np.array([data.qids[g[0]] for g in groups], dtype=object),
        queries=np.array([data.qids[g[0]] for g in groups], dtype=object),
        item_ids=np.full((n, width), "", dtype=object))
    for i, rows in enumerate(groups):
        rows = rows[:width]
        k = len(rows)
        lists.dense[i, :k] = data.features[rows]
        lists.labels[i, :k] = data.labels[rows]
        lists.mask[i, :k] = True
        lists.position[i, :k] = np.arange(1, k + 1)
        lists.item_ids[i, :k] = rows.astype(str)
    return lists
