"""Generated LETOR / SVMlight ranking data of known structure (for the trainer's checks).

Per query q: a latent per-query offset ``o_q ~ N(0, 1)`` and 10 to 40 documents. Per
document, 20 features:

======  =========================================================================
f1      x1 ~ N(0, 1)                                   informative, linear
f2      x2 ~ N(0, 1)                                   informative, through a step
f3      x3 ~ N(0, 1)                                   informative with f4 (product)
f4      x4 ~ N(0, 1)
f5      x5 + 2 o_q, x5 ~ N(0, 1)                       informative within a query only
f6      round(exp(1.5 z6 + 3)), z6 ~ N(0, 1)            heavy-tailed count (clicks-like)
f7      sinh(2 z7), z7 ~ N(0, 1)                       signed heavy tail, informative
f8      5.0                                            constant
f9-f20  N(0, 1) or log-normal noise                   uninformative
======  =========================================================================

Latent relevance ``s = 0.8 x1 + 0.8 [x2 > 0.5] + 0.6 x3 x4 + 0.7 x5 + 0.5 log1p(f6)/3
+ 0.4 z7 + N(0, 0.6)``, graded by fixed cut points (1.0, 1.8, 2.5, 3.1) into 0..4, so
most documents are 0 as in public LETOR sets. A linear model of the raw features
misses the step, the product and the heavy-tailed columns' shapes; the best single
feature is well above random and well below what the structure allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = 20
CUTS = (1.0, 1.8, 2.5, 3.1)


def _documents(rng: np.random.Generator, n: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 5))
    z6, z7 = rng.normal(size=n), rng.normal(size=n)
    count = np.round(np.exp(1.5 * z6 + 3.0))
    signed = np.sinh(2.0 * z7)
    noise = np.concatenate([rng.normal(size=(n, 6)),
                            rng.lognormal(1.0, 1.0, size=(n, 6))], axis=1)
    latent = (0.8 * x[:, 0] + 0.8 * (x[:, 1] > 0.5) + 0.6 * x[:, 2] * x[:, 3] + 0.7 * x[:, 4]
              + 0.5 * np.log1p(count) / 3.0 + 0.4 * z7 + rng.normal(0, 0.6, n))
    features = np.column_stack([x[:, :4], x[:, 4] + 2.0 * offset, count, signed,
                                np.full(n, 5.0), noise])
    return features, np.digitize(latent, CUTS)


def write_synthetic_letor(path: Path, queries: int, seed: int, first_qid: int = 0,
                          docs_per_query: tuple[int, int] = (10, 40)) -> dict:
    """Write ``queries`` queries (qids from ``first_qid``) to ``path``; a description."""
    rng = np.random.default_rng(seed)
    rows = 0
    labels = np.zeros(5, np.int64)
    with open(path, "w") as out:
        for q in range(first_qid, first_qid + queries):
            n = int(rng.integers(docs_per_query[0], docs_per_query[1] + 1))
            features, grade = _documents(rng, n, float(rng.normal()))
            labels += np.bincount(grade, minlength=5)
            rows += n
            for g, f in zip(grade, features, strict=True):
                cells = " ".join(f"{j + 1}:{v:.6g}" for j, v in enumerate(f) if v != 0)
                out.write(f"{g} qid:{q} {cells}\n")
    return {"path": str(path), "queries": queries, "rows": rows, "features": FEATURES,
            "labels": labels.tolist(), "seed": seed}


def write_synthetic_splits(directory: Path, train_queries: int, seed: int) -> dict[str, Path]:
    """Train and test files with disjoint queries; the test file has max(30, train / 4)
    queries (enough for a stable nDCG@10 mean). Validation is the trainer's own split."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    held = max(30, train_queries // 4)
    sizes = {"train": train_queries, "test": held}
    files, first = {}, 0
    for k, (name, n) in enumerate(sizes.items()):
        path = directory / f"{name}.txt"
        if not path.exists():
            write_synthetic_letor(path, n, seed * 1000 + k, first_qid=first)
        files[name] = path
        first += n
    return files
