"""Fast tests of the pure logic: tokeniser, feature spec, recall query, model files."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import pytest

from app import feature_spec, tokenizer
from app.feature_spec import DENSE_NAMES, dense_matrix, spec_hash
from app.listings import Listing
from app.recall import (
    Bound,
    Match,
    Range,
    RecallParams,
    Term,
    best_match_query,
    filter_clauses,
    newest_query,
    to_engine_json,
)
from app.schemas import Filters
from app.scoring import ModelError, load_model, resolve_version
from app.search import Candidates, blend_scores
from feature_jobs.rows import Rejects, ValidRows
from training.baseline_model import baseline_weights
from training.export import write_model
from training.ranker_graph import forward


def test_tokenizer_normalises_width_and_case():
    assert tokenizer.tokenize("ｽﾏﾎｹｰｽ　手帳型!!") == tokenizer.tokenize("スマホケース 手帳型")
    assert tokenizer.tokenize("IPHONE 15") == tokenizer.tokenize("iphone 15")
    assert "ナイキ" in tokenizer.tokenize("Nike Air Max")  # Sudachi's normalised form
    assert tokenizer.tokenize("  ") == []


def test_token_ids_are_stable_and_in_range():
    ids = tokenizer.token_ids(["ナイキ", "スニーカー", "x"], 10)
    assert ids == tokenizer.token_ids(["ナイキ", "スニーカー", "x"], 10)
    assert all(1 <= i < tokenizer.TOKEN_BUCKETS for i in ids)
    # pinned values: a change here silently breaks every index and model built before
    assert tokenizer.token_id("ナイキ") == 6641
    assert tokenizer.token_ids(list("abcdef"), 4) == tokenizer.token_ids(list("abcd"), 10)


def test_dense_matrix_applies_the_spec_transforms():
    raw = {name: np.array([0.0, 3.0]) for name in DENSE_NAMES}
    raw["age_hours"] = np.array([-5.0, 3.0])  # clock skew must not give NaN
    raw["query_tokens"] = 2  # scalars broadcast
    x = dense_matrix(raw)
    assert x.dtype == np.float32 and x.shape == (2, feature_spec.DENSE_DIM)
    col = {n: x[:, j] for j, n in enumerate(DENSE_NAMES)}
    np.testing.assert_allclose(col["price"], np.log1p([0.0, 3.0]), rtol=1e-6)
    np.testing.assert_allclose(col["ctr"], [0.0, 3.0])
    np.testing.assert_allclose(col["age_hours"], [0.0, np.log1p(3.0)], rtol=1e-6)
    np.testing.assert_allclose(col["impression_prob"], np.log1p([0.0, 3e6]), rtol=1e-6)
    np.testing.assert_allclose(col["query_tokens"], np.log1p([2.0, 2.0]), rtol=1e-6)


def test_raw_features_are_extracted_as_declared():
    block = feature_spec.CandidateBlock(
        recall_score=np.array([2.0, 1.0]), recall_rank=np.array([0.0, 1.0]),
        price=np.array([100.0, 200.0]), created_ms=np.array([0.0, 3_600_000.0]),
        now_ms=7_200_000, store={"ctr": np.array([0.1, 0.2]), "impressions": np.zeros(2),
                                 "impression_prob": np.zeros(2)},
        missing=np.array([False, True]), image_score=np.array([0.5, 0.9]),
        condition=np.array([0.0, 1.0]), title_ids=np.array([[3, 4, 5], [6, 0, 0]]),
        query_tokens=2)
    raw = feature_spec.raw_features(block)
    assert tuple(raw) == DENSE_NAMES
    np.testing.assert_array_equal(raw["age_hours"], [2.0, 1.0])
    np.testing.assert_array_equal(raw["title_tokens"], [3, 1])  # 0 = padding
    np.testing.assert_array_equal(raw["ctr"], [0.1, 0.2])
    np.testing.assert_array_equal(raw["features_missing"], [False, True])
    assert raw["query_tokens"] == 2


def test_spec_hash_tracks_the_spec(monkeypatch):
    before = spec_hash()
    assert before == spec_hash()
    monkeypatch.setattr(tokenizer, "TOKEN_BUCKETS", 1 << 16)
    assert spec_hash() != before


MULTI_MATCH = {"multi_match": {
    "query": "coach *:*", "fields": ["title_tokens^3", "brand_tokens^2", "description_tokens"],
    "type": "best_fields", "tie_breaker": 0.3}}
SOURCE = ["price", "created_at", "condition", "image_score", "title_token_ids"]


def test_recall_json_is_the_engine_body_with_all_filters():
    """The typed query as engine JSON: exactly the body the engines were tested with."""
    filters = Filters(category="bags", brands=["Coach"], price_min=10, price_max=20,
                      conditions=["new"], on_sale_only=True)
    query = best_match_query(("coach", "*:*"), filters, RecallParams(candidates=123), 1_000,
                             ("title",))
    assert to_engine_json(query) == {
        "size": 123, "track_total_hits": False, "_source": [*SOURCE, "title"],
        "query": {"function_score": {
            "query": {"bool": {"must": [MULTI_MATCH], "filter": [
                {"range": {"violation_score": {"lt": 0.5}}},
                {"term": {"status": "on_sale"}},
                {"term": {"category": "bags"}},
                {"terms": {"brand": ["Coach"]}},
                {"terms": {"condition": ["new"]}},
                {"range": {"price": {"gte": 10.0, "lte": 20.0}}}]}},
            "functions": [{"gauss": {"created_at": {
                "origin": "1000", "scale": "14d", "offset": "1d", "decay": 0.5}}}],
            "score_mode": "multiply", "boost_mode": "multiply"}}}
    newest = newest_query(("coach", "*:*"), Filters(on_sale_only=False, price_max=5),
                          RecallParams(), 5, 10)
    assert to_engine_json(newest) == {
        "size": 5, "from": 10, "track_total_hits": False, "_source": SOURCE,
        "query": {"bool": {"must": [MULTI_MATCH], "filter": [
            {"range": {"violation_score": {"lt": 0.5}}},
            {"range": {"price": {"lte": 5.0}}}]}},
        "sort": [{"created_at": "desc"}, {"id": "asc"}]}
    assert "query_string" not in json.dumps(to_engine_json(query))


class DummyFilters(Filters):
    """A new filter is one declared field (README, "Adding a filter")."""

    image_score_min: Annotated[float | None, Bound("image_score", "gte")] = None
    exact_condition: Annotated[str | None, Match("condition")] = None


def test_a_new_filter_is_one_declaration():
    clauses = filter_clauses(DummyFilters(image_score_min=0.9, exact_condition="new"), 0.5)
    assert clauses == (Range("violation_score", (("lt", 0.5),)), Term("status", "on_sale"),
                       Term("condition", "new"), Range("image_score", (("gte", 0.9),)))
    assert filter_clauses(DummyFilters(on_sale_only=False), 0.2) == (
        Range("violation_score", (("lt", 0.2),)),)


def test_candidates_pad_title_ids():
    hits = [
        {"_id": "a", "_score": 2.0, "_source": {"price": 1, "created_at": 5, "condition": "new",
                                               "image_score": 0.5, "title_token_ids": [3, 4, 5]}},
        {"_id": "b", "_score": 1.0, "_source": {"price": 2, "created_at": 6, "condition": "poor",
                                               "title_token_ids": [7]}},
    ]
    c = Candidates.from_hits(hits)
    np.testing.assert_array_equal(c.title_ids, [[3, 4, 5], [7, 0, 0]])
    np.testing.assert_array_equal(c.condition, [0.0, 1.0])
    assert c.ids == ["a", "b"] and c.image_score[1] == 0.0


def test_blend():
    np.testing.assert_allclose(blend_scores(np.array([1.0, 2.0]), np.array([0.5, 0.0]), 2.0),
                               [2.0, 2.0])


def test_onnx_model_matches_the_numpy_reference(tmp_path):
    path = write_model(tmp_path, "m", "1", baseline_weights(), training={})
    model = load_model(path, device="cpu")
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(400, feature_spec.DENSE_DIM)).astype(np.float32)
    title_ids = rng.integers(0, tokenizer.TOKEN_BUCKETS, (400, 24))
    title_ids[:, 10:] = 0
    title_ids[5] = 0  # a title without tokens
    query_ids = np.array([[17, 99, 0]])
    got = model.score(dense, query_ids, title_ids)
    np.testing.assert_allclose(got, forward(baseline_weights(), dense, query_ids, title_ids),
                               atol=1e-5)


def test_model_versions_and_refusals(tmp_path):
    for v in ("2", "10", "9"):
        write_model(tmp_path, "m", v, baseline_weights(), training={})
    assert resolve_version(tmp_path, "m", "latest").name == "10"
    with pytest.raises(FileExistsError):
        write_model(tmp_path, "m", "2", baseline_weights(), training={})
    with pytest.raises(ModelError, match="no model versions"):
        resolve_version(tmp_path, "nothing", "latest")
    manifest = tmp_path / "m" / "9" / "manifest.json"
    manifest.write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(manifest.parent)


def test_rows_are_validated_and_rejects_kept(tmp_path):
    good = json.dumps({"id": "a", "title": "t", "category": "c", "condition": "new",
                       "price": 1, "created_at": "2026-01-01T00:00:00+09:00"})
    naive = good.replace("+09:00", "")
    rejects = Rejects(tmp_path / "rejects.jsonl")
    rows = ValidRows([good, "", "{oops", naive, good.replace('"new"', '"mint"')], Listing,
                     rejects)
    assert [r.id for r in rows] == ["a"]
    rejects.close()
    assert rows.accepted == 1 and rejects.count == 3
    assert rejects.reasons == {"malformed JSON": 1, "invalid fields": 2}
    lines = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [x["line"] for x in lines] == [3, 4, 5]
    assert "created_at" in lines[1]["reason"] and "condition" in lines[2]["reason"]


def test_every_backend_implements_its_declared_interface(tmp_path):
    import redis.asyncio as aioredis

    from app.embedded_engine import EmbeddedEngine
    from app.engines import connect
    from app.feature_store import FeatureStore
    from app.interfaces import FeatureSource, SearchEngine
    from app.snapshot_store import SnapshotFeatureStore

    for engine in (EmbeddedEngine(tmp_path), connect("opensearch", "http://127.0.0.1:1", 1.0),
                   connect("elasticsearch", "http://127.0.0.1:1", 1.0)):
        assert isinstance(engine, SearchEngine), engine
    for store in (FeatureStore(aioredis.Redis()), SnapshotFeatureStore(tmp_path)):
        assert isinstance(store, FeatureSource), store
