"""The zero-setup demo: build a small marketplace into the embedded backends, serve it,
and build again (everything reused)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.api import create_app
from app.settings import Settings
from bestmatch.demo import build_demo

REPO = Path(__file__).resolve().parent.parent


def test_demo_builds_a_searchable_marketplace_and_reuses_it(tmp_path, capsys):
    settings = Settings(embedded_index_dir=tmp_path / "index",
                        snapshot_dir=tmp_path / "features", models_dir=REPO / "models",
                        onnx_device="cpu", admin_token="secret")
    assert (settings.engine, settings.feature_store, settings.model_name) == (
        "embedded", "snapshot", "ltr")  # the defaults: no server needed
    build_demo(600, 3, tmp_path / "work", sessions=400, settings=settings)

    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz", headers={"X-Admin-Token": "secret"}).json()
        assert ready["status"] == "ready"
        assert ready["checks"]["feature_store"]["feature_version"].startswith("demo-600-seed3")
        for query in ("スニーカー", "iphone"):  # Japanese and English listings
            answer = client.post("/v1/search", json={"query": query, "debug": True}).json()
            assert answer["items"] and answer["degraded"] == []
            assert answer["model"]["name"] == "ltr"
            missing = [i["features"]["features_missing"] for i in answer["items"]]
            assert 0.0 in missing  # item features came from the simulated logs

    capsys.readouterr()
    build_demo(600, 3, tmp_path / "work", sessions=400, settings=settings)
    log = capsys.readouterr().err
    assert log.count("already") == 3  # simulated, indexed, published: all reused
