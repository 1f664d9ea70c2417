"""The simulator's stand-in for the engine's recall query (``app.recall``).

Same tokens (the shared tokeniser), same fields and boosts, Lucene's BM25 (k1 1.2,
b 0.75), ``best_fields`` with the same tie breaker, the same Gaussian recency decay and
the same filters (on sale, violation score). It differs from the engine in Lucene's
lossy field-length encoding and per-shard statistics, so scores are close to, not
equal to, the engine's. The served-feature log (the service's own scores) is the
source to train on once it exists; this is what makes simulated logs possible.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse

from app.recall import TEXT_FIELDS, TIE_BREAKER, RecallParams, gauss_decay
from app.tokenizer import tokenize, tokenize_query
from training.simulator.catalog import Catalog

K1, B = 1.2, 0.75


class TextIndex:
    """BM25 over the catalog's tokenised title, brand and description fields."""

    def __init__(self, catalog: Catalog):
        texts = {"title": catalog.titles, "brand": catalog.brands,
                 "description": catalog.descriptions}
        cache: dict[str, list[str]] = {}
        self.vocab: dict[str, int] = {}
        postings = []
        for name, boost in TEXT_FIELDS:
            rows, cols = [], []
            for i, text in enumerate(texts[name.removesuffix("_tokens")]):
                tokens = cache.get(text)
                if tokens is None:
                    tokens = cache[text] = tokenize(text)
                for t in tokens:
                    rows.append(i)
                    cols.append(self.vocab.setdefault(t, len(self.vocab)))
            postings.append((boost, rows, cols))
        self.fields = [(boost, self._bm25(rows, cols, len(catalog)))
                       for boost, rows, cols in postings]

    def _bm25(self, rows: list[int], cols: list[int], n_docs: int) -> sparse.csc_matrix:
        tf = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)),
                               shape=(n_docs, max(len(self.vocab), 1))).tocsr()
        tf.sum_duplicates()
        length = np.asarray(tf.sum(axis=1)).ravel()
        norm = K1 * (1 - B + B * length / max(length.mean(), 1e-9))
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        w = tf.copy()
        row_of = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        w.data = idf[tf.indices] * tf.data / (tf.data + norm[row_of])
        return w.tocsc()

    @lru_cache(maxsize=1024)  # noqa: B019 (one index per simulation run)
    def match(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(doc indices, BM25 best_fields scores) of documents matching ``query``."""
        cols = [self.vocab[t] for t in tokenize_query(query)[0] if t in self.vocab]
        if not cols:
            return np.zeros(0, np.int64), np.zeros(0)
        s = np.vstack([boost * np.asarray(w[:, cols].sum(axis=1)).ravel()
                       for boost, w in self.fields])
        best = s.max(axis=0)
        score = best + TIE_BREAKER * (s.sum(axis=0) - best)
        docs = np.flatnonzero(score > 0)
        return docs, score[docs]


def recall(index: TextIndex, catalog: Catalog, query: str, now_ms: int, params: RecallParams,
           size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``size`` (doc indices, scores) by BM25 x recency among listings live at ``now_ms``."""
    docs, bm25 = index.match(query)
    live = ((catalog.created_ms[docs] <= now_ms) & catalog.on_sale[docs]
            & (catalog.violation_score[docs] < params.max_violation_score))
    docs, bm25 = docs[live], bm25[live]
    score = bm25 * gauss_decay(now_ms - catalog.created_ms[docs], params.recency_scale,
                               params.recency_offset, params.recency_decay)
    if len(docs) > size:
        top = np.argpartition(-score, size)[:size]
        docs, score = docs[top], score[top]
    order = np.argsort(-score, kind="stable")
    return docs[order], score[order]
