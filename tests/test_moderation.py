"""Moderation detectors: ONNX parity of the exported bundle, the /v1/moderate endpoint
(input validation, answers), and the batch job writing violation scores into the real
index."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from PIL import Image

from app.moderation import Moderator
from feature_jobs.violation_scores import write_violation_scores
from tests.conftest import RUN_ID, indexed, run, write_jsonl
from tests.moderation_bundle import TinyEncoder
from training.image_score.photos import base_images
from training.moderation.export import parity
from training.moderation.train import ModerationConfig
from training.simulator.violations import CATEGORIES


def photos(n: int):
    import numpy as np

    return base_images("coins", n, np.random.default_rng(0))


def test_exported_detectors_match_torch(bundle):
    model_dir, encoder, detectors = bundle
    titles = ["Amazonギフト券 10000円分", "ナイキ スニーカー 27cm", "stun gun high voltage"]
    worst = parity(model_dir, encoder, detectors, titles, ["", "美品です", "thanks"],
                   [9800.0, 12000.0, 5000.0], photos(3))
    assert worst < 1e-5
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["categories"] == list(CATEGORIES)
    assert set(manifest["sha256"]) == {"encoder.onnx", *(f"{c}.onnx" for c in CATEGORIES)}


def _photo_b64() -> str:
    buf = io.BytesIO()
    photos(1)[0].save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.integration
def test_moderate_endpoint_answers_per_category_and_validates_input(client_for, bundle):
    model_dir, _, _ = bundle
    body = {"title": "タバコ カートン 未開封", "description": "", "price": 5000,
            "photo": _photo_b64()}
    with client_for(moderation_model_dir=model_dir) as client:
        ok = client.post("/v1/moderate", json=body)
        assert ok.status_code == 200
        answer = ok.json()
        assert set(answer["categories"]) == set(CATEGORIES)
        assert all(0.0 <= p <= 1.0 for p in answer["categories"].values())
        assert answer["flagged"] == [c for c, p in answer["categories"].items() if p >= 0.5]
        bad_photo = client.post("/v1/moderate", json={**body, "photo": "bm90IGFuIGltYWdl"})
        assert bad_photo.status_code == 422 and bad_photo.json()["fields"][0]["field"] == "photo"
        missing = client.post("/v1/moderate", json={"title": "", "price": -1})
        fields = {f["field"] for f in missing.json()["fields"]}
        assert missing.status_code == 422 and {"title", "price", "photo"} <= fields
    with client_for() as client:  # no model configured
        assert client.post("/v1/moderate", json=body).status_code == 503


@pytest.mark.integration
def test_batch_job_writes_violation_scores_into_the_real_index(bundle, engine_url, listings,
                                                               tmp_path):

    model_dir, _, _ = bundle
    moderator = Moderator(model_dir)
    alias = f"test-violations-{RUN_ID}"
    photo = tmp_path / "photo.jpg"
    photos(1)[0].save(photo)
    rows = [{"id": x["id"], "title": x["title"], "description": x.get("description", ""),
             "price": x["price"], "photo": str(photo)} for x in listings[:5]]
    rows += [{"id": listings[5]["id"], "title": "x", "price": "free", "photo": str(photo)},
             {"id": "not-in-index", "title": "x", "price": 1, "photo": str(photo)}]
    path = write_jsonl(tmp_path / "listings.jsonl", rows)

    async def go():
        async with indexed(engine_url, alias, listings) as engine:
            summary = await write_violation_scores(engine, alias, path, moderator,
                                                   tmp_path / "state", batch=3)
            docs = [(await engine.client.get(index=alias, id=r["id"]))["_source"]
                    for r in rows[:5]]
            return summary, docs

    summary, docs = run(go())
    assert (summary["updated"], summary["rejected"]) == (5, 2)
    want = moderator.score([r["title"] for r in rows[:5]],
                           [r["description"] for r in rows[:5]],
                           [r["price"] for r in rows[:5]],
                           [Image.open(photo).convert("RGB")] * 5)  # as saved (JPEG)
    for k, doc in enumerate(docs):
        best = max(CATEGORIES, key=lambda c, k=k: want[c][k])
        assert doc["violation_score"] == pytest.approx(float(want[best][k]), abs=1e-6)
        assert doc["violation_category"] == (best if want[best][k] >= 0.5 else "")


def test_a_new_category_is_one_call_from_labelled_data_to_a_served_detector(bundle, tmp_path):
    from training.moderation.pipeline import add_category

    model_dir, _, _ = bundle
    rng = __import__("numpy").random.default_rng(3)
    photo = tmp_path / "p.jpg"
    photos(1)[0].save(photo)
    rows = [{"title": f"生体 {'ハムスター' if k % 2 else 'インコ'} 販売 {k}", "price": 3000,
             "photo": str(photo), "label": 1} for k in range(40)]
    rows += [{"title": f"ペット用品 ケージ {k}", "price": float(rng.integers(500, 9000)),
              "photo": str(photo), "label": 0} for k in range(120)]
    labelled = tmp_path / "live_animals.jsonl"
    write_jsonl(labelled, rows)
    summary = add_category(model_dir, "live_animals", labelled, tmp_path / "models", "2",
                           ModerationConfig(eval_epochs=2), say=lambda msg: None)
    served = Moderator(tmp_path / "models" / "moderation" / "2")
    assert served.categories == [*CATEGORIES, "live_animals"]
    probs = served.score(["生体 ハムスター 販売", "ペット用品 ケージ"], ["", ""], [3000, 3000],
                         photos(1) * 2)
    assert probs["live_animals"][0] > probs["live_animals"][1]
    assert 0.0 <= summary["metrics"]["ap"] <= 1.0


def test_training_command_writes_the_report_and_a_served_bundle(tmp_path, monkeypatch):
    from training.image_score import model as image_model
    from training.moderation.pipeline import train_moderation

    monkeypatch.setitem(image_model.ENCODERS, "tiny", TinyEncoder)
    torch.manual_seed(0)
    config = ModerationConfig(positives_per_category=12, negatives_per_positive=3,
                              search_epochs=1, eval_epochs=1, layers=3, nodes=2)
    summary = train_moderation(config, tmp_path / "out", tmp_path / "models", "1",
                               encoder_name="tiny", say=lambda msg: None)
    report = (tmp_path / "out" / "1" / "report.md").read_text()
    assert all(f"| {c} | nas |" in report and f"| {c} | baseline |" in report
               for c in CATEGORIES)
    assert report.count("node 2 = ") >= 2  # both derived cells written out
    assert (tmp_path / "out" / "1" / "pr_curves.png").stat().st_size > 0
    assert summary["parity_max_abs_diff"] < 1e-5
    assert Moderator(tmp_path / "models" / "moderation" / "1").categories == list(CATEGORIES)
