"""Hostile and careless input, on both backends: each reproduction of issue 14 is here.

A request must never take the service down, be answered as a server error, reach the
file system outside the models directory, or echo paths and internals to the public.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("backend", ["real", "embedded"], indirect=True)]

ADMIN = {"X-Admin-Token": "secret"}


def fields_of(resp) -> list[str]:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_request" and body["message"]
    return [f["field"] for f in body["fields"]]


@pytest.mark.parametrize("flow", ["newest", "best_match"])
def test_a_huge_offset_is_a_422_not_a_crash(client, flow):
    # embedded: tantivy aborted the process allocating offset + size hits
    body = {"query": "nike", "flow": flow, "offset": 1_000_000_000}
    assert "offset" in fields_of(client.post("/v1/search", json=body))
    assert "offset" in fields_of(client.get("/v1/search", params=body))
    assert client.get("/healthz").status_code == 200  # still alive


def test_newest_pages_up_to_the_result_window_and_no_further(client):
    # OpenSearch's index.max_result_window (10,000) used to fail in the engine as a 500
    deep = client.post("/v1/search", json={"query": "nike", "flow": "newest",
                                           "offset": 9_980, "size": 20})
    assert deep.status_code == 200, deep.text
    assert deep.json()["items"] == []
    too_deep = {"query": "nike", "flow": "newest", "offset": 9_990, "size": 20}
    resp = client.post("/v1/search", json=too_deep)
    assert "offset" in fields_of(resp)
    assert "10000" in resp.json()["fields"][0]["message"]


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"NaN", b"1e309", b"1e300"])
def test_non_finite_or_absurd_prices_are_a_422(client, raw):
    body = b'{"query": "nike", "filters": {"price_max": ' + raw + b"}}"
    resp = client.post("/v1/search", content=body, headers={"Content-Type": "application/json"})
    assert "filters.price_max" in fields_of(resp)


@pytest.mark.parametrize("value", ["inf", "nan", "1e309"])
def test_non_finite_prices_in_the_query_string_are_a_422(client, value):
    resp = client.get("/v1/search", params={"query": "nike", "price_min": value})
    assert "filters.price_min" in fields_of(resp)


def test_the_highest_price_filter_is_answered(client):
    resp = client.post("/v1/search", json={"query": "nike",
                                           "filters": {"price_max": 9_999_999}})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("filters", [
    {"conditions": ["new"] * 6},
    {"brands": ["x" * 101]},
    {"brands": [""]},
    {"brands": ["nike"] * 51},
])
def test_list_filters_are_bounded(client, filters):
    resp = client.post("/v1/search", json={"query": "nike", "filters": filters})
    assert any(f.startswith("filters") for f in fields_of(resp))


@pytest.mark.parametrize("version", ["1\x002", "9" * 5000, "/tmp/x", "..", ".hidden",
                                     "a/b", "1\\2"])
def test_reload_refuses_unsafe_versions(client, version):
    resp = client.post("/admin/model/reload", json={"version": version}, headers=ADMIN)
    assert "version" in fields_of(resp)
    assert client.post("/v1/search", json={"query": "nike"}).status_code == 200


@pytest.mark.parametrize("name", ["../../etc", "/etc", "", "x" * 65])
def test_reload_refuses_unsafe_names(client, name):
    resp = client.post("/admin/model/reload", json={"name": name}, headers=ADMIN)
    assert "name" in fields_of(resp)


def test_refusals_name_the_model_not_the_path(client_for, models_dir, tmp_path):
    models = tmp_path / "models-with-a-secret-path"
    shutil.copytree(models_dir, models)
    broken = models / "baseline" / "7"
    shutil.copytree(models / "baseline" / "1", broken)
    (broken / "model.onnx").write_bytes(b"not onnx")
    with client_for(models_dir=models, model_version="1") as client:
        for body in ({"version": "7"}, {"version": "99"}, {"name": "nothing"}):
            resp = client.post("/admin/model/reload", json=body, headers=ADMIN)
            assert resp.status_code == 409, resp.text
            assert str(tmp_path) not in resp.text and "secret-path" not in resp.text
            assert resp.json()["serving"]["name"] == "baseline"
        assert "baseline/7" in client.post("/admin/model/reload", json={"version": "7"},
                                           headers=ADMIN).json()["message"]


@pytest.mark.parametrize("request_id", ["x" * 129, "a b", "id\x01", "ü".encode()])
def test_request_ids_are_validated(client, request_id):
    resp = client.post("/v1/search", json={"query": "nike"},
                       headers={"X-Request-ID": request_id})
    assert "x-request-id" in fields_of(resp)


def test_a_valid_request_id_is_echoed(client):
    resp = client.post("/v1/search", json={"query": "nike"},
                       headers={"X-Request-ID": "frontend-42.a:b"})
    assert resp.headers["X-Request-ID"] == "frontend-42.a:b"
    assert resp.json()["request_id"] == "frontend-42.a:b"


def test_readyz_details_need_the_admin_token(client):
    public = client.get("/readyz")
    assert public.status_code == 200 and set(public.json()) == {"status"}
    for token in ("wrong", "secre", "secret-and-more", ""):
        assert set(client.get("/readyz", headers={"X-Admin-Token": token}).json()) == {
            "status"}
    detailed = client.get("/readyz", headers=ADMIN).json()
    assert {"engine", "feature_store", "model", "experiments"} <= set(detailed["checks"])


@pytest.mark.parametrize("token", ["wrong", "secre", "secretsecret", ""])
def test_wrong_admin_tokens_are_refused(client, token):
    resp = client.post("/admin/model/reload", json={}, headers={"X-Admin-Token": token})
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("content", "status"), [
    (b'{"query": "\xff\xfe"}', 400),  # not UTF-8
    (b'{"query": ' * 100_000 + b'"a"' + b"}" * 100_000, 400),  # nested past the parser
    (b"[1, 2]", 422),
    (b"", 422),
])
def test_unparseable_bodies_get_the_service_error_shape(client, content, status):
    resp = client.post("/v1/search", content=content,
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    assert set(resp.json()) >= {"error", "message"} and "detail" not in resp.json()


def test_unknown_paths_and_methods_get_the_service_error_shape(client):
    for resp, status in ((client.get("/no/such/path"), 404),
                         (client.delete("/v1/search"), 405)):
        assert resp.status_code == status
        assert resp.json()["error"] in ("not_found", "method_not_allowed")


def test_the_openapi_document_states_answers_and_limits(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # 422 is the service's own error shape
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            ok = op["responses"]["200"]["content"]
            body = ok.get("application/json", {}).get("schema")
            assert path == "/metrics" or body and body != {}, (method, path)
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith(("/ErrorResponse", "/Readiness")), (path, status)
    search = doc["paths"]["/v1/search"]["post"]["responses"]
    assert {"200", "400", "401", "403", "422", "503", "504"} <= set(search)
    assert {"401", "403", "409", "422"} <= set(doc["paths"]["/admin/model/reload"]["post"][
        "responses"])
    request = schemas["SearchRequest"]["properties"]
    assert request["query"]["maxLength"] == 200 and request["size"]["maximum"] == 100
    assert "offset + size at most 400" in request["offset"]["description"]
    assert schemas["Filters"]["properties"]["conditions"]["maxItems"] == 5
    get_params = {p["name"]: p for p in doc["paths"]["/v1/search"]["get"]["parameters"]}
    assert get_params["price_max"]["schema"]["maximum"] == 9_999_999
