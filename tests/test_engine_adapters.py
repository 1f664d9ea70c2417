"""Both engine adapters against the real engine, and the embedded engine against it.

The OpenSearch adapter talks to OpenSearch directly. The Elasticsearch adapter (the
official ``elasticsearch`` async client) talks to the same OpenSearch node through
``devstack.es_compat_proxy``, which only rewrites the compatibility media types and
adds the product header; requests, bodies, bulk and errors are the client's own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import asynccontextmanager

import orjson
import pytest

from app.embedded_engine import EmbeddedEngine
from app.engines import connect
from app.interfaces import EngineRequestError
from app.recall import RecallParams, best_match_query, newest_query
from app.schemas import Filters
from app.tokenizer import tokenize_query
from feature_jobs.index_catalog import IndexingFailed, index_catalog
from tests.conftest import RUN_ID, drop_indices, index_rows, run
from tests.test_unit import DummyFilters

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def es_proxy_url(engine_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.es_compat_proxy", "--upstream", engine_url],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("LISTENING "), line
    yield line.split()[1]
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def es_alias(es_proxy_url, listings):
    """The fixture catalog indexed through the Elasticsearch adapter."""
    name = f"test-es-{RUN_ID}"
    report = run(index_rows("elasticsearch", es_proxy_url, name, listings))
    assert report.indexed == len(listings)
    yield name
    run(drop_indices("elasticsearch", es_proxy_url, name))


@pytest.mark.parametrize("query", ["ナイキ エアマックス95", "iPhone 15 Pro", "louis vuitton"])
def test_elasticsearch_adapter_answers_like_opensearch(client_for, es_proxy_url, es_alias, query):
    with client_for() as os_client, client_for(
        engine="elasticsearch", engine_url=es_proxy_url, index_alias=es_alias
    ) as es_client:
        via_os = os_client.post("/v1/search", json={"query": query}).json()
        via_es = es_client.post("/v1/search", json={"query": query}).json()
    assert via_es["items"] and [i["id"] for i in via_es["items"]] == [
        i["id"] for i in via_os["items"]]


def test_elasticsearch_client_without_proxy_is_refused(engine_url):
    async def go():
        engine = connect("elasticsearch", engine_url, 5.0)
        try:
            await engine.health()
        finally:
            await engine.close()

    with pytest.raises(EngineRequestError):
        run(go())


@asynccontextmanager
async def refusing_engine(engine_url: str, alias: str):
    """Make the engine refuse every document written to new ``alias`` indices (an index
    template that sets a write block)."""
    admin = connect("opensearch", engine_url, 30.0).client
    name = f"refuse-{alias}"
    await admin.indices.put_index_template(name=name, body={
        "index_patterns": [f"{alias}-*"], "priority": 500,
        "template": {"settings": {"index.blocks.write": True}},
    })
    try:
        yield
    finally:
        await admin.indices.delete_index_template(name=name)
        await admin.close()


@pytest.mark.parametrize("kind", ["opensearch", "elasticsearch"])
def test_reindex_moves_alias_only_when_complete(kind, engine_url, es_proxy_url, listings, tmp_path):
    url = engine_url if kind == "opensearch" else es_proxy_url
    alias = f"test-swap-{kind}-{RUN_ID}"
    rows = [orjson.dumps(r) for r in listings]
    bad = rows[:3] + [b"{broken json", orjson.dumps({**listings[0], "price": -1})]

    async def go():
        engine = connect(kind, url, 30.0)
        try:
            first = await index_catalog(engine, alias, rows)
            second = await index_catalog(engine, alias, bad, tmp_path / "rejects.jsonl")
            assert second.rejected == 2 and second.indexed == 3
            assert await engine.alias_targets(alias) == [second.index]
            assert second.previous == [first.index]
            lines = (tmp_path / "rejects.jsonl").read_bytes().splitlines()
            rejects = [orjson.loads(x) for x in lines]
            reasons = sorted(r["reason"].split(":")[0] for r in rejects)
            assert reasons == ["invalid fields", "malformed JSON"]
            # a document the engine refuses: the new index is dropped, alias untouched
            before = await engine.indices(f"{alias}-*")
            async with refusing_engine(engine_url, alias):
                with pytest.raises(IndexingFailed, match="refused by the engine"):
                    await index_catalog(engine, alias, rows)
            assert await engine.alias_targets(alias) == [second.index]
            assert await engine.indices(f"{alias}-*") == before
            third = await index_catalog(engine, alias, rows)
            assert third.deleted == [first.index]  # keep_previous=1
        finally:
            for index in await engine.indices(f"{alias}-*"):
                await engine.delete_index(index)
            await engine.close()

    run(go())


QUERIES = ["ナイキ エアマックス95", "iPhone 15 Pro", "louis vuitton bag", "スニーカー", "iphone",
           "Nintendo Switch", "美品 バッグ"]


@pytest.mark.parametrize("filters", [
    Filters(), Filters(on_sale_only=False), Filters(price_max=50000),
    Filters(category="sneakers", brands=["Nike", "adidas"], conditions=["new", "like_new"],
            price_min=5000, price_max=15000),
    DummyFilters(image_score_min=0.6, exact_condition="like_new")])
def test_embedded_engine_orders_and_scores_like_the_engine(engine_url, alias,
                                                           embedded_index_dir, filters):
    """The same recall queries on the shared fixture: the same order, and scores within
    2% (document-count and field-length statistics differ slightly)."""
    now_ms = int(time.time() * 1000)
    matched: set[str] = set()

    async def go():
        engine, embedded = connect("opensearch", engine_url, 30.0), EmbeddedEngine(
            embedded_index_dir)
        try:
            for query in QUERIES:
                q = best_match_query(tokenize_query(query)[0], filters, RecallParams(), now_ms)
                want, got = await engine.search(alias, q), await embedded.search(alias, q)
                assert [h["_id"] for h in got] == [h["_id"] for h in want], query
                matched.update(h["_id"] for h in got)
                assert [h["_score"] for h in got] == pytest.approx(
                    [h["_score"] for h in want], rel=0.02), query
                q = newest_query(tokenize_query(query)[0], filters, RecallParams(), 3, 1)
                want, got = await engine.search(alias, q), await embedded.search(alias, q)
                assert [h["_id"] for h in got] == [h["_id"] for h in want], query
        finally:
            await engine.close()

    run(go())
    assert matched, "the filters leave nothing to compare"
