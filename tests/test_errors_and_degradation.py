"""Bad input gets field-level 4xx; failing parts degrade the answer or give clear 5xx."""

from __future__ import annotations

import json
import shutil

import pytest
import redis

import devstack
from app.feature_spec import spec_hash
from tests.conftest import publish_features

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 201}, "query"),
        ({"query": "a", "size": 0}, "size"),
        ({"query": "a", "size": 101}, "size"),
        ({"query": "a", "offset": -1}, "offset"),
        ({"query": "a", "offset": 395, "size": 10}, "offset"),
        ({"query": "a", "flow": "cheapest"}, "flow"),
        ({"query": "a", "filters": {"price_min": -5}}, "filters.price_min"),
        ({"query": "a", "filters": {"price_min": 10, "price_max": 5}}, "filters"),
        ({"query": "a", "filters": {"conditions": ["mint"]}}, "filters.conditions.0"),
        ({"query": "a", "filters": {"colour": "red"}}, "filters.colour"),
        ({"query": "a", "unknown": 1}, "unknown"),
    ],
)
def test_bad_requests_get_field_messages(client, body, field):
    resp = client.post("/v1/search", json=body)
    assert resp.status_code == 422
    detail = resp.json()
    assert detail["error"] == "invalid_request"
    assert field in [f["field"] for f in detail["fields"]], detail
    assert all(f["message"] for f in detail["fields"])


def test_malformed_json_is_a_422(client):
    resp = client.post("/v1/search", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_request"


def test_get_form_validates_too(client):
    for params, field in (({"query": "a", "size": 0}, "size"),
                          ({"query": "a", "conditions": ["mint"]}, "filters.conditions.0"),
                          ({"query": "a", "offset": 395, "size": 10}, "offset")):
        resp = client.get("/v1/search", params=params)
        assert resp.status_code == 422
        assert field in {f["field"] for f in resp.json()["fields"]}


def test_redis_stopped_mid_test_degrades_to_priors(client_for, tmp_path):
    own = devstack.start_redis(tmp_path / "redis")
    try:
        with client_for(redis_url=own.url, feature_prefix="deg") as client:
            publish_features(own.url, "deg", "v1", [("p1", 0.4, 50.0, 0.01)])
            first = client.post("/v1/search", json={"query": "iphone", "debug": True}).json()
            assert first["degraded"] == []
            devstack.stop(own.pid)
            # items seen before come from the local cache of the version; the rest: priors
            resp = client.post("/v1/search", json={"query": "iphone スニーカー", "debug": True})
            assert resp.status_code == 200
            answer = resp.json()
            assert answer["degraded"] == ["feature_store_unavailable"]
            feats = {i["id"]: i["features"] for i in answer["items"]}
            assert feats["p1"]["ctr"] == pytest.approx(0.4)
            assert feats["s1"]["features_missing"] == 1.0
            assert feats["s1"]["ctr"] == pytest.approx(0.02)
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            metrics = client.get("/metrics").text
            assert 'bestmatch_degraded_total{reason="feature_store_unavailable"}' in metrics
    finally:
        devstack.stop(own.pid)


def test_a_redis_that_lost_its_data_degrades_to_priors_and_says_so(client, redis_url,
                                                                     feature_prefix):
    publish_features(redis_url, feature_prefix, "v1", [("p1", 0.4, 50.0, 0.01)])
    assert client.post("/v1/search", json={"query": "iphone"}).json()["degraded"] == []
    assert client.get("/readyz").json() == {"status": "ready"}
    r = redis.Redis.from_url(redis_url)  # a restart without persistence: nothing left
    r.delete(*r.keys(f"{feature_prefix}:*"))
    r.close()
    answer = client.post("/v1/search", json={"query": "iphone", "debug": True}).json()
    assert answer["degraded"] == ["no_feature_version"]
    assert all(i["features"]["features_missing"] == 1.0 for i in answer["items"])
    assert "bestmatch_feature_store_ready 0.0" in client.get("/metrics").text
    ready = client.get("/readyz", headers={"X-Admin-Token": "secret"})
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    store = ready.json()["checks"]["feature_store"]
    assert (store["ok"], store["error"], store["feature_version"]) == (
        False, "no_feature_version", None)


def test_engine_down_gives_503_json(client_for):
    port = devstack.free_port()
    with client_for(engine_url=f"http://127.0.0.1:{port}", engine_timeout_s=1.0) as client:
        resp = client.post("/v1/search", json={"query": "iphone"})
        assert resp.status_code == 503
        assert resp.json()["error"] == "engine_unavailable"
        assert client.get("/readyz").status_code == 503


def test_missing_index_gives_503_json(client_for):
    with client_for(index_alias="no-such-alias") as client:
        resp = client.post("/v1/search", json={"query": "iphone"})
        assert resp.status_code == 503
        assert resp.json()["error"] == "index_unavailable"
        ready = client.get("/readyz", headers={"X-Admin-Token": "secret"})
        assert ready.status_code == 503
        assert ready.json()["checks"]["engine"]["ok"] is False


def _reload(client, **body):
    return client.post("/admin/model/reload", json=body, headers={"X-Admin-Token": "secret"})


def test_bad_models_are_refused_and_the_previous_keeps_serving(client_for, models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    good = models / "baseline" / "1"
    wrong_spec = models / "baseline" / "2"
    shutil.copytree(good, wrong_spec)
    manifest = json.loads((wrong_spec / "manifest.json").read_text())
    manifest.update(version="2", feature_spec_hash="0" * 16)
    (wrong_spec / "manifest.json").write_text(json.dumps(manifest))
    broken = models / "baseline" / "3"
    shutil.copytree(good, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    manifest.update(version="3", feature_spec_hash=spec_hash())
    (broken / "manifest.json").write_text(json.dumps(manifest))

    with client_for(models_dir=models, model_version="1") as client:
        for version, reason in (("2", "feature spec hash"), ("3", "cannot be loaded"),
                                ("9", "not found")):
            resp = _reload(client, version=version)
            assert resp.status_code == 409, resp.text
            assert reason in resp.json()["message"]
            assert resp.json()["serving"]["version"] == "1"
            answer = client.post("/v1/search", json={"query": "iphone"}).json()
            assert answer["model"]["version"] == "1" and "no_model" not in answer["degraded"]
        assert _reload(client, version="1").status_code == 200


def test_reload_needs_the_admin_token(client):
    assert client.post("/admin/model/reload", json={}).status_code == 401
    assert client.post("/admin/model/reload", json={},
                       headers={"X-Admin-Token": "wrong"}).status_code == 401


def test_service_without_a_usable_model_answers_in_recall_order(client_for, tmp_path):
    with client_for(models_dir=tmp_path, image_weight=0.0) as client:
        answer = client.post("/v1/search", json={"query": "スニーカー"}).json()
        assert answer["degraded"][-1] == "no_model" and answer["model"] is None
        ranks = [i["recall_rank"] for i in answer["items"]]
        assert len(ranks) >= 3 and ranks == sorted(ranks)
        assert client.get("/readyz").status_code == 503


def test_readyz_and_metrics(client):
    client.post("/v1/search", json={"query": "iphone"})
    ready = client.get("/readyz", headers={"X-Admin-Token": "secret"}).json()
    assert ready["checks"]["model"]["provider"] == "CPUExecutionProvider"
    assert ready["checks"]["engine"]["ok"] is True
    text = client.get("/metrics").text
    for name in ("bestmatch_stage_seconds_bucket", "bestmatch_candidates_bucket",
                 "bestmatch_requests_total", 'bestmatch_model_info{name="baseline"'):
        assert name in text
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]
