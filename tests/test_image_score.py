"""Image Score: the focal loss against its formula, OPA, photos ordered by construction,
ONNX parity of the exported model, and the backfill into the real index."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F

from app.image_input import to_input
from feature_jobs.image_backfill import ImageScorer, backfill_image_scores
from tests.conftest import RUN_ID, indexed, run, write_jsonl
from training.export import publish_model
from training.image_score.metrics import classify, fit_thresholds, ordered_pair_accuracy
from training.image_score.model import (
    ENCODERS,
    ImageScoreModel,
    QualityHead,
    focal_loss,
    quality_score,
)
from training.image_score.photos import build_photo_set, degrade, quality_class
from training.image_score.train import export_onnx, onnx_parity


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_follows_its_formula():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    assert focal_loss(logits, target, 0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)
    p = F.softmax(logits, -1)[torch.arange(16), target]
    want = (-((1 - p) ** 2) * torch.log(p)).mean()
    assert focal_loss(logits, target, 2.0).item() == pytest.approx(want.item(), rel=1e-6)
    assert focal_loss(logits, target, 2.0) < focal_loss(logits, target, 0.0)  # easy ones count less


def test_ordered_pair_accuracy_on_a_hand_made_case():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    pairs = np.array([[0, 1], [1, 3], [1, 2], [3, 0]])  # right, right, tie, wrong
    assert ordered_pair_accuracy(scores, pairs) == pytest.approx(2.5 / 4)


def test_brisque_thresholds_classify_ordered_classes():
    quality = np.array([0.1, 0.2, 0.5, 0.6, 0.9, 0.95])
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert classify(quality, fit_thresholds(quality, labels)).tolist() == labels.tolist()


def test_photos_are_ordered_by_construction():
    photos = build_photo_set(crops_per_source=1, seed=0, sources=("astronaut",))
    assert len(photos.images) == 16 and photos.label.tolist().count(2) == 1
    assert [quality_class(s) for s in (0, 1, 2, 3)] == [2, 1, 0, 0]
    pairs = photos.pairs(np.arange(16))
    assert len(pairs) == 5 * 3 + 5 * 3  # clean vs each variant, and 3 per degradation
    assert all(photos.strength[a] < photos.strength[b] for a, b in pairs)
    clean = photos.images[0]
    blurred = [np.asarray(degrade(clean, "blur", s, np.random.default_rng(0)), float)
               for s in (1, 2, 3)]
    sharpness = [np.abs(np.diff(b, axis=1)).mean() for b in blurred]
    assert sharpness[0] > sharpness[1] > sharpness[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exported Image Score model (pretrained encoder, a seeded untrained head)."""
    torch.manual_seed(0)
    encoder = ENCODERS["efficientnet-lite0"]()
    model = ImageScoreModel(encoder, QualityHead(encoder.dim))
    root = tmp_path_factory.mktemp("image-models")
    data = export_onnx(model, root / "model.onnx")
    final = publish_model(root, "image_score", "1", data, {"kind": "image_quality"})
    return model, final


def test_onnx_matches_torch(exported):
    model, final = exported
    photos = build_photo_set(crops_per_source=1, seed=1, sources=("chelsea",))
    x = to_input(photos.images[:4])
    assert onnx_parity(model, final / "model.onnx", x) < 1e-4
    session = ort.InferenceSession(str(final / "model.onnx"), providers=["CPUExecutionProvider"])
    scores, probs = session.run(["score", "probs"], {"image": x})
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(scores, quality_score(torch.log(torch.from_numpy(probs))).numpy(),
                       atol=1e-5)


@pytest.mark.integration
def test_backfill_writes_scores_into_the_real_index_and_resumes(exported, engine_url,
                                                                listings, tmp_path):
    _, model_dir = exported
    alias = f"test-images-{RUN_ID}"
    photos = build_photo_set(crops_per_source=1, seed=2, sources=("rocket",))
    rows = []
    for k, listing in enumerate(listings[:6]):
        path = tmp_path / f"{listing['id']}.jpg"
        photos.images[k * 3].save(path)
        rows.append({"id": listing["id"], "photo": str(path)})
    rows += [{"id": listings[6]["id"], "photo": str(tmp_path / "missing.jpg")},
             {"photo": "no id"}, {"id": "not-in-index", "photo": rows[0]["photo"]}]
    photo_file = write_jsonl(tmp_path / "photos.jsonl", rows)
    scorer = ImageScorer(model_dir)

    async def go():
        async with indexed(engine_url, alias, listings) as engine:
            first = await backfill_image_scores(engine, alias, photo_file, scorer,
                                                tmp_path / "state", batch=4)
            again = await backfill_image_scores(engine, alias, photo_file, scorer,
                                                tmp_path / "state", batch=4)
            docs = {}
            for row in rows[:6]:
                resp = await engine.client.get(index=alias, id=row["id"])
                docs[row["id"]] = resp["_source"]["image_score"]
            return first, again, docs

    first, again, docs = run(go())
    assert (first["updated"], first["rejected"]) == (6, 3)
    reasons = [json.loads(line)["reason"] for line in
               (tmp_path / "state" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r.split(":")[0] for r in reasons) == [
        "malformed row", "refused by the engine", "unreadable photo"]
    assert (again["updated"], again["skipped_done"]) == (0, len(rows))  # resumed: all done
    from PIL import Image

    want = scorer.score([Image.open(r["photo"]) for r in rows[:6]])
    assert [docs[r["id"]] for r in rows[:6]] == pytest.approx(want, abs=1e-6)


def test_pairs_are_mined_from_clicks_at_nearby_positions_and_similar_prices():
    from datetime import UTC, datetime

    import polars as pl

    from training.image_score.pairs import mine_pairs

    ts = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [("r1", "a", "impression", 1), ("r1", "b", "impression", 2),
            ("r1", "c", "impression", 3), ("r1", "d", "impression", 9),
            ("r1", "e", "impression", 4), ("r1", "b", "click", 2)]
    events = pl.DataFrame(rows, schema=["request_id", "item_id", "event", "position"],
                          orient="row").with_columns(pl.lit(ts).alias("ts"))
    prices = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"],
                           "price": [1000.0, 1100.0, 5000.0, 1000.0, 950.0]})
    pairs = mine_pairs(events, prices, max_gap=3, price_tolerance=0.2)
    # a: near and similar; c: price too far; d: position too far; e: near and similar
    assert sorted(pairs["worse"].to_list()) == ["a", "e"]
    assert set(pairs["better"].to_list()) == {"b"}
