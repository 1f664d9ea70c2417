"""The embedded search engine: the :class:`app.engines.Engine` interface on tantivy.

Zero-setup mode (``BESTMATCH_ENGINE=embedded``): no server, indices on disk under
``BESTMATCH_EMBEDDED_INDEX_DIR``, one directory per versioned index and an alias file
moved by an atomic rename, so :mod:`feature_jobs.index_catalog` and the service run
unchanged on it. It runs the typed :class:`app.recall.RecallQuery` as tantivy queries:

- text: per field a disjunction of the tokens' BM25 term scores, times the field
  boost, combined with a disjunction-max and tie breaker (``multi_match best_fields``);
  the tokens are indexed with a whitespace tokenizer, as in the engine's mapping;
- filter clauses (:class:`~app.recall.Term`, ``Terms``, ``Range``) as zero-score clauses;
- best_match, BM25 x the ``gauss`` recency decay: tantivy cannot multiply a
  custom function into its top-k collection, so the ``bm25_top_n`` best BM25 matches
  are decayed and re-sorted. That equals the engine's order whenever the engine's
  top K are among those N BM25 matches; an old, strongly matching listing can
  otherwise displace a newer one (README, "Embedded mode");
- newest: sorted by ``created_at``, ties broken by id.

Tantivy's BM25 is Lucene's (k1 1.2, b 0.75): on the test fixture the scores agree with
OpenSearch's within about 1% (document-count and field-length statistics differ
slightly), and the orders agree. ``_source`` fields come from a column file written
next to each index.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import tantivy

from app.interfaces import BulkResult, EngineRequestError
from app.recall import TEXT_FIELDS, BestMatch, Clause, Range, RecallQuery, Term, Terms, gauss_decay

KEYWORDS = ("id", "status", "category", "brand", "condition")
NUMBERS = ("price", "violation_score", "image_score")
COLUMNS = "columns.npz"


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    for field, _ in TEXT_FIELDS:
        sb.add_text_field(field, tokenizer_name="whitespace",
                          index_option="freq")
    for name in KEYWORDS:
        sb.add_text_field(name, tokenizer_name="raw", index_option="basic")
    for name in NUMBERS:
        sb.add_float_field(name, indexed=True, fast=True)
    sb.add_integer_field("created_at", indexed=True, fast=True)
    sb.add_unsigned_field("row", fast=True)
    return sb.build()


SCHEMA = _schema()


class _Index:
    """One versioned index: tantivy plus the ``_source`` columns by row."""

    def __init__(self, path: Path):
        self.index = tantivy.Index(SCHEMA, path=str(path))
        self.index.reload()
        with np.load(path / COLUMNS) as cols:
            self.ids = cols["id"]
            self.price = cols["price"]
            self.created_at = cols["created_at"]
            self.condition = cols["condition"]
            self.image_score = cols["image_score"]
            self.token_ids = np.split(cols["token_ids"], cols["token_offsets"][1:-1])
            self.titles = cols["title"]

    def source(self, row: int, fields: list[str]) -> dict:
        src = {"price": float(self.price[row]), "created_at": int(self.created_at[row]),
               "condition": str(self.condition[row]),
               "image_score": float(self.image_score[row]),
               "title_token_ids": self.token_ids[row].tolist()}
        if "title" in fields:
            src["title"] = str(self.titles[row])
        return src


class EmbeddedEngine:
    kind = "embedded"

    def __init__(self, root: Path, bm25_top_n: int = 4000):
        self.root = Path(root)
        self.bm25_top_n = bm25_top_n
        self._open: dict[str, _Index] = {}
        self._writers: dict[str, tuple[tantivy.IndexWriter, list[dict]]] = {}

    # --- aliases and lifecycle ---------------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        try:
            return orjson.loads((self.root / "aliases.json").read_bytes())
        except FileNotFoundError:
            return {}

    def _resolve(self, name: str) -> str:
        index = self._aliases().get(name, name)
        if not (self.root / index / COLUMNS).exists():
            raise EngineRequestError(f"embedded: no index or alias '{name}' in {self.root}", 404)
        return index

    def _get(self, name: str) -> _Index:
        index = self._resolve(name)
        if index not in self._open:
            self._open = {index: _Index(self.root / index)}  # the alias moved: drop the old
        return self._open[index]

    async def health(self, index: str | None = None) -> dict:
        if index is not None:
            self._resolve(index)
        return {"status": "green"}

    async def create_index(self, name: str, body: dict) -> None:
        path = self.root / name
        path.mkdir(parents=True)
        index = tantivy.Index(SCHEMA, path=str(path))
        self._writers[name] = (index.writer(heap_size=128_000_000, num_threads=1), [])

    async def bulk(self, actions: Iterable[dict], chunk_size: int = 1000) -> BulkResult:
        count = 0
        for action in actions:
            if action.get("_op_type", "index") != "index":
                raise EngineRequestError("embedded: no partial updates; put the field in the "
                                         "catalog and re-index", 400)
            writer, rows = self._writers[action["_index"]]
            src = action["_source"]
            doc = tantivy.Document()
            doc.add_unsigned("row", len(rows))
            doc.add_integer("created_at", int(src["created_at"]))
            for field, _ in TEXT_FIELDS:
                doc.add_text(field, src[field])
            for name in KEYWORDS:
                doc.add_text(name, str(src[name]))
            for name in NUMBERS:
                doc.add_float(name, float(src[name]))
            writer.add_document(doc)
            rows.append(src)
            count += 1
        return BulkResult(indexed=count, errors=[])

    async def refresh(self, index: str) -> None:
        """Commit the documents and write the ``_source`` columns next to them."""
        writer, rows = self._writers.pop(index)
        writer.commit()
        writer.wait_merging_threads()
        token_ids = [r["title_token_ids"] for r in rows]
        offsets = np.cumsum([0] + [len(t) for t in token_ids])
        tmp = self.root / index / f".{COLUMNS}.tmp.npz"
        np.savez(tmp, id=np.array([r["id"] for r in rows]),
                 price=np.array([r["price"] for r in rows], np.float64),
                 created_at=np.array([r["created_at"] for r in rows], np.int64),
                 condition=np.array([r["condition"] for r in rows]),
                 image_score=np.array([r["image_score"] for r in rows], np.float32),
                 title=np.array([r["title"] for r in rows]),
                 token_ids=np.array([i for t in token_ids for i in t], np.int32),
                 token_offsets=offsets)
        os.replace(tmp, self.root / index / COLUMNS)

    async def count(self, index: str) -> int:
        return len(self._get(index).ids)

    async def indices(self, pattern: str) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and fnmatch.fnmatch(p.name, pattern))

    async def delete_index(self, name: str) -> None:
        self._writers.pop(name, None)
        self._open.pop(name, None)
        shutil.rmtree(self.root / name, ignore_errors=True)

    async def alias_targets(self, alias: str) -> list[str]:
        target = self._aliases().get(alias)
        return [target] if target else []

    async def point_alias(self, alias: str, index: str) -> list[str]:
        aliases = self._aliases()
        old = [aliases[alias]] if aliases.get(alias) not in (None, index) else []
        aliases[alias] = index
        tmp = self.root / ".aliases.json.tmp"
        tmp.write_bytes(orjson.dumps(aliases))
        os.replace(tmp, self.root / "aliases.json")
        return old

    async def close(self) -> None:
        self._open.clear()

    # --- search ------------------------------------------------------------------------

    async def search(self, index: str, query: RecallQuery) -> list[dict]:
        idx = self._get(index)
        searcher = idx.index.searcher()
        flow = query.flow
        if isinstance(flow, BestMatch):
            hits = searcher.search(_match(query), limit=max(self.bm25_top_n, flow.k),
                                   count=False).hits
            if not hits:
                return []
            addresses = [a for _, a in hits]
            rows = np.array(searcher.fast_field_values("row", addresses), np.int64)
            bm25 = np.array([s for s, _ in hits])
            r = flow.recency
            score = bm25 * gauss_decay(idx.created_at[rows] - float(r.origin_ms),
                                       r.scale, r.offset, r.decay)
            order = np.lexsort((rows, -score))[: flow.k]
            rows, score = rows[order], score[order]
        else:  # newest: by created_at desc, id asc
            hits = searcher.search(_match(query), limit=flow.offset + flow.size,
                                   count=False, order_by_field="created_at").hits
            rows = np.array(searcher.fast_field_values("row", [a for _, a in hits]), np.int64)
            rows = rows[np.lexsort((idx.ids[rows], -idx.created_at[rows]))][flow.offset:]
            score = np.zeros(len(rows))
        fields = list(query.source)
        return [{"_id": str(idx.ids[r]), "_score": float(s), "_source": idx.source(r, fields)}
                for r, s in zip(rows.tolist(), score.tolist(), strict=True)]


def _match(query: RecallQuery) -> tantivy.Query:
    """The text match and the zero-score filter clauses, all required."""
    per_field = []
    for field, boost in query.fields:
        terms = tantivy.Query.boolean_query([
            (tantivy.Occur.Should, tantivy.Query.term_query(SCHEMA, field, t, "freq"))
            for t in query.tokens])
        per_field.append(tantivy.Query.boost_query(terms, boost))
    must = [(tantivy.Occur.Must,
             tantivy.Query.disjunction_max_query(per_field, query.tie_breaker))]
    must += [(tantivy.Occur.Must, tantivy.Query.const_score_query(_filter(c), 0.0))
             for c in query.filters]
    return tantivy.Query.boolean_query(must)


def _filter(clause: Clause) -> tantivy.Query:
    match clause:
        case Term(field, value):
            return tantivy.Query.term_query(SCHEMA, field, value, "basic")
        case Terms(field, values):
            return tantivy.Query.term_set_query(SCHEMA, field, list(values))
        case Range(field, bounds):
            b = dict(bounds)
            lower, upper = b.get("gte", b.get("gt")), b.get("lte", b.get("lt"))
            return tantivy.Query.range_query(
                SCHEMA, field, tantivy.FieldType.Float, lower, upper,
                include_lower="gt" not in b, include_upper="lt" not in b)
