"""Ranking training: simulator, label rules and hygiene, point-in-time features, the
pipeline end to end, ONNX parity, and the service serving the exported model."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from app.feature_spec import DEFAULT_PRIORS, DENSE_NAMES, spec_hash
from app.recall import RecallParams, gauss_decay
from feature_jobs.item_stats import PRIOR_STRENGTH
from tests.conftest import write_jsonl
from training.dataset import LabelConfig, load_logs, to_lists
from training.simulator import generate_catalog
from training.simulator.queries import Intent, true_relevance
from training.simulator.run import SimConfig
from training.simulator.sessions import SessionConfig
from training.train_ltr import MODEL_NAME, LtrConfig, parity, train_ltr

NOW = datetime(2026, 11, 1, tzinfo=UTC)
TINY = SimConfig(listings=3000, queries=300, seed=3, now=NOW.isoformat(),
                 sessions=SessionConfig(sessions=1500, seed=3, page_size=20, shuffle_share=0.2))


# ---- simulator ---------------------------------------------------------------------------


def test_catalog_is_seeded_and_reproducible():
    a, b = generate_catalog(500, seed=5, now=NOW), generate_catalog(500, seed=5, now=NOW)
    assert a.titles == b.titles and np.array_equal(a.price, b.price)
    assert generate_catalog(500, seed=6, now=NOW).titles != a.titles
    assert (a.price == 9_999_999).sum() <= 5 and a.english.any() and (~a.english).any()


def test_true_relevance_prefers_the_product_asked_for():
    cat = generate_catalog(3000, seed=1, now=NOW)
    k = int(cat.product[0])
    items = np.arange(len(cat))
    _, grade = true_relevance(Intent("product", int(cat.category[0]), "", k), cat, items)
    exact = (cat.product == k) & (cat.accessory < 0)
    accessory = (cat.product == k) & (cat.accessory >= 0)
    other_category = cat.category != cat.category[0]
    assert grade[exact].mean() > 2.5
    assert grade[accessory].max() <= 1
    assert grade[other_category].max() == 0


def test_recency_decay_matches_the_engine_definition():
    params = RecallParams(recency_scale="14d", recency_offset="1d", recency_decay=0.5)
    day = 86_400_000
    decay = (params.recency_scale, params.recency_offset, params.recency_decay)
    assert gauss_decay(np.array([0.0, 1 * day]), *decay) == pytest.approx([1.0, 1.0])
    assert gauss_decay(np.array([15.0 * day]), *decay)[0] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ltr")
    config = LtrConfig(sim_dir=root / "sim", out_dir=root / "out", models_dir=root / "models",
                       version="t1", sim=TINY)
    config.fit = type(config.fit)(epochs=2, batch_lists=32, min_steps=0)  # keep it fast
    return {"summary": train_ltr(config, say=lambda _m: None), "root": root}


def test_simulated_clicks_fall_with_position(tiny_run):
    events = pl.read_parquet(tiny_run["root"] / "sim" / "events.parquet")
    clicks = events.filter((pl.col("event") == "click") & (pl.col("ranker") == "recall")
                           & pl.col("user_id").str.starts_with("u"))
    by_pos = clicks.group_by("position").len().sort("position")["len"].to_list()
    assert by_pos[0] > 2 * by_pos[4] > 0
    assert set(events["event"].unique()) == {"impression", "click", "like", "comment",
                                             "purchase"}


# ---- the pipeline ----------------------------------------------------------------------------


def test_pipeline_reports_every_model_and_exports(tiny_run):
    s, root = tiny_run["summary"], tiny_run["root"]
    assert set(s["results"]) == {"recall_order", "lightgbm_lambdarank", "mlp_approx_ndcg",
                                 "mlp_approx_ndcg_ips", "mlp_listnet",
                                 "mlp_true_labels (ceiling)"}
    for r in s["results"].values():
        assert 0 < r["ndcg@10"] <= 1 and r["queries"] > 0
    out = root / "out" / "t1"
    assert (out / "report.md").read_text().count("|") > 20
    for png in ("learning_curves.png", "ndcg_by_model.png", "propensity.png"):
        assert (out / png).stat().st_size > 1000
    manifest = json.loads((root / "models" / MODEL_NAME / "t1" / "manifest.json").read_text())
    assert manifest["feature_spec_hash"] == spec_hash()
    assert manifest["training"]["dataset"]["train_lists"] > 0
    assert manifest["metrics"]["test"]["recall_order"]["ndcg@10"] > 0
    assert s["parity_max_abs_diff"] < 1e-5
    assert 0.5 < s["propensity"]["eta"] < 1.5  # simulated with eta = 1
    # click-label validation never picks the epoch: every model trains to the end
    for history in s["histories"].values():
        assert len(history) == 2 and not any(h.get("best") for h in history)


def test_exported_model_matches_torch(tiny_run):
    """Parity on freshly built lists, through the service's own model loader."""
    import torch

    from training.normalise import Normaliser
    from training.ranker_torch import RankerMLP

    root = tiny_run["root"]
    data = load_logs(root / "sim" / "events.parquet", root / "sim" / "listings.jsonl")
    lists = to_lists(data.impressions.head(2000), 20)
    torch.manual_seed(0)
    # "auto" picks a signed log1p for some columns: the graph's transform is checked too
    model = RankerMLP(Normaliser.fit(lists.dense[lists.mask]), embed_dim=8, hidden=(16,))
    from training.export import write_model

    model_dir = write_model(root / "models", "parity", "1", model.to_weights(), training={})
    assert parity(model, lists, model_dir, n=50) < 1e-5


# ---- labels, hygiene and point-in-time features on a hand-made log -----------------------


def _listing(item: str, price: float = 1000.0, age_days: float = 3.0) -> dict:
    return {"id": item, "title": f"ナイキ スニーカー {item}", "price": price, "category": "x",
            "condition": "good", "created_at": (NOW - timedelta(days=age_days)).isoformat(),
            "image_score": 0.5}


def _page(rows: list, req: str, user: str, query: str, ts: datetime, items: list[str],
          events: dict[str, list[str]] | None = None) -> None:
    for pos, item in enumerate(items, start=1):
        rows.append({"request_id": req, "session_id": req, "user_id": user, "query": query,
                     "ts": ts.isoformat(), "event": "impression", "item_id": item,
                     "position": pos, "recall_rank": pos - 1, "recall_score": 10.0 - pos,
                     "ranker": "recall"})
        for event in (events or {}).get(item, []):
            rows.append({**rows[-1], "event": event,
                         "ts": (ts + timedelta(seconds=30)).isoformat()})


@pytest.fixture
def hand_log(tmp_path) -> tuple[Path, Path]:
    items = [f"i{k}" for k in range(6)]
    listings = [_listing(i) for i in items] + [_listing("outlier", price=9_999_999),
                                               _listing("ancient", age_days=2000)]
    day1, day2 = NOW - timedelta(days=2), NOW - timedelta(days=1)
    rows: list[dict] = []
    # day 1: i0 is shown 10 times and clicked 5 times by ordinary users
    for r in range(10):
        _page(rows, f"d1-{r}", f"u{r}", "ナイキ", day1 + timedelta(minutes=r), ["i0", "i1"],
              {"i0": ["click"]} if r < 5 else None)
    # day 2: the graded page, a click-only page, a page without clicks
    _page(rows, "graded", "ua", "ナイキ", day2, ["i0", "i1", "i2", "outlier", "ancient"],
          {"i0": ["click", "like"], "i1": ["click", "like", "comment", "purchase"],
           "i2": ["click"]})
    _page(rows, "clickonly", "ub", "ナイキ", day2, ["i3", "i4"], {"i3": ["click"]})
    _page(rows, "noclick", "uc", "ナイキ", day2, ["i3", "i4"])
    # a bot: the same query every 5 seconds
    for r in range(25):
        _page(rows, f"bot-{r}", "bot", "ナイキ", day2 + timedelta(seconds=5 * r), ["i5"],
              {"i5": ["click", "like"]})
    # a tapper: clicks (and likes) everything on 40 impressions
    for r in range(8):
        _page(rows, f"tap-{r}", "tapper", f"q{r}", day2 + timedelta(hours=1 + r), items[:5],
              {i: ["click", "like"] for i in items[:5]})
    # the same impression logged twice
    rows.append(dict(next(r for r in rows if r["request_id"] == "graded")))
    # malformed rows
    bad = dict(rows[0], request_id="graded")
    rows += [dict(bad, event="hover"), dict(bad, item_id="unknown"), dict(bad, position=0)]
    events_path, listings_path = tmp_path / "events.jsonl", tmp_path / "listings.jsonl"
    write_jsonl(events_path, rows)
    write_jsonl(listings_path, listings)
    return events_path, listings_path


def test_labels_are_the_highest_grade_reached(hand_log, tmp_path):
    data = load_logs(*hand_log, rejects_path=tmp_path / "rejects.jsonl")
    graded = data.impressions.filter(pl.col("request_id") == "graded").sort("position")
    assert graded["item_id"].to_list() == ["i0", "i1", "i2"]  # outliers removed
    assert graded["label"].to_list() == [2, 4, 1]
    custom = load_logs(*hand_log, config=LabelConfig(
        grades={"click": 1, "like": 1, "comment": 2, "purchase": 5}))
    custom_graded = custom.impressions.filter(pl.col("request_id") == "graded").sort("position")
    assert custom_graded["label"].to_list() == [1, 5, 1]


def test_hygiene_rules_are_applied_and_counted(hand_log, tmp_path):
    data = load_logs(*hand_log, rejects_path=tmp_path / "rejects.jsonl")
    reason = dict(data.requests.select("request_id", "reason").iter_rows())
    assert reason["graded"] == ""
    assert reason["clickonly"] == "click_only"
    assert reason["noclick"] == "no_click"
    assert reason["bot-3"] == "bot" and reason["tap-0"] == "tapper"
    s = data.summary
    assert s["dropped_requests"]["bot"] == 25 and s["dropped_requests"]["tapper"] == 8
    # day 1: five pages with a click only, five without; day 2: one of each
    assert s["dropped_requests"]["click_only"] == 6 and s["dropped_requests"]["no_click"] == 6
    assert s["bot_users"] == 1 and s["tapper_users"] == 1
    assert s["outlier_items_removed"] == 2
    assert s["duplicate_impressions"] == 1
    assert s["rejected_rows"] == {"unknown event type": 1, "item not in the catalog": 1,
                                  "position missing or < 1": 1}
    rejected = [orjson.loads(line) for line in (tmp_path / "rejects.jsonl").read_bytes().split(
        b"\n") if line]
    assert len(rejected) == 3 and all(r["reject_reason"] for r in rejected)


def test_features_are_point_in_time(hand_log):
    data = load_logs(*hand_log)
    imps = data.impressions
    day1 = imps.filter(pl.col("request_id") == "d1-9", pl.col("item_id") == "i0").row(0, named=True)
    assert day1["features_missing"] == 1.0  # nothing published before day 1
    assert day1["ctr"] == DEFAULT_PRIORS["ctr"]
    day2 = imps.filter(pl.col("request_id") == "graded", pl.col("item_id") == "i0").row(
        0, named=True)
    # day 1 only: 10 impressions, 5 clicks; day 2's own clicks must not leak in
    expected = (5 + PRIOR_STRENGTH * DEFAULT_PRIORS["ctr"]) / (10 + PRIOR_STRENGTH)
    assert day2["features_missing"] == 0.0
    assert day2["ctr"] == pytest.approx(expected)
    assert day2["impressions"] == 10
    assert day2["impression_prob"] == pytest.approx(10 / 20)  # i0 and i1 shown 10 times each
    lists = to_lists(imps.filter(pl.col("request_id") == "graded"))
    row = dict(zip(DENSE_NAMES, lists.dense[0, 0].tolist(), strict=True))
    assert row["ctr"] == pytest.approx(expected, rel=1e-6)
    assert row["recall_rank"] == 0.0 and lists.labels[0].tolist() == [2, 4, 1]


# ---- the service serves the exported model ---------------------------------------------------


@pytest.mark.integration
def test_service_serves_the_trained_model(tiny_run, client_for):
    models = tiny_run["root"] / "models"
    with client_for(models_dir=models, model_name=MODEL_NAME, model_version="t1") as client:
        resp = client.post("/v1/search", json={"query": "ナイキ スニーカー", "debug": True})
        ready = client.get("/readyz", headers={"X-Admin-Token": "secret"}).json()
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"]["name"] == MODEL_NAME and answer["model"]["version"] == "t1"
    assert answer["degraded"] == ["no_feature_version"] and answer["items"]
    scores = [i["model_score"] for i in answer["items"]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    assert "ltr" in json.dumps(ready)


def test_the_ranker_trains_on_a_letor_file(tmp_path):
    """A public-format data set goes through the same trainer: feature 1 carries the label."""
    from training.fit import FitConfig, evaluate, fit, predict
    from training.letor import letor_lists, read_letor

    rng = np.random.default_rng(0)
    lines = []
    for q in range(60):
        for _ in range(10):
            label = int(rng.integers(0, 4))
            lines.append(f"{label} qid:{q} 1:{label + rng.normal(0, 0.3):.4f} "
                         f"2:{rng.normal():.4f} 3:{rng.random():.4f}")
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    lists = letor_lists(read_letor(path))
    assert lists.dense.shape == (60, 10, 3) and lists.mask.all()
    model, _ = fit(lists, FitConfig(epochs=15, embed_dim=4, hidden=(16,), batch_lists=16))
    trained = evaluate(predict(model, lists), lists.labels, lists)["ndcg@10"]
    noise = evaluate(lists.dense[:, :, 1], lists.labels, lists)["ndcg@10"]
    assert trained > noise + 0.15


def test_standardised_scores_keep_the_order():
    import torch

    from training.normalise import Normaliser
    from training.ranker_torch import RankerMLP, standardise_scores

    torch.manual_seed(1)
    model = RankerMLP(Normaliser.identity(12), embed_dim=8, hidden=(16,))
    dense, q, t = torch.randn(6, 9, 12) * 50, torch.randint(1, 99, (6, 3)), torch.randint(
        0, 99, (6, 9, 4))
    mask = np.ones((6, 9), bool)
    before = model(dense, q, t).detach().numpy()
    standardise_scores(model, before, mask)
    after = model(dense, q, t).detach().numpy()
    assert (np.argsort(before, axis=1) == np.argsort(after, axis=1)).all()
    assert abs(after.mean()) < 1e-4
    assert np.std(after - after.mean(axis=1, keepdims=True)) == pytest.approx(1.0, abs=1e-3)


RECALL_ONLY = """
experiments:
  - {name: parity, salt: p, traffic: 1.0, arms: [{name: recall, ranker: recall}]}
"""


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["real", "embedded"], indirect=True)
def test_service_and_dataset_extract_identical_features(client_for, listings, tmp_path):
    """The same candidates through the service and through dataset building (catalog +
    impression log) give the same float32 matrix: raw features are extracted once."""
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(RECALL_ONLY)
    with client_for(experiments_file=experiments, feature_log_dir=tmp_path / "served") as client:
        resp = client.post("/v1/search", json={"query": "ナイキ スニーカー", "debug": True,
                                               "size": 50, "user_id": "u1"})
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert len(items) >= 4
    served = orjson.loads(next((tmp_path / "served").glob("*.jsonl")).read_bytes())
    # a recall-only arm: model_score is the engine's raw recall score
    events = [{"request_id": "r1", "session_id": "r1", "user_id": "u1",
               "query": "ナイキ スニーカー", "ts": served["ts"], "event": "impression",
               "item_id": item["id"], "position": pos, "recall_rank": item["recall_rank"],
               "recall_score": item["model_score"], "ranker": "recall"}
              for pos, item in enumerate(items, start=1)]
    data = load_logs(write_jsonl(tmp_path / "events.jsonl", events),
                     write_jsonl(tmp_path / "listings.jsonl", listings))
    lists = to_lists(data.impressions)
    assert lists.item_ids[0].tolist() == [item["id"] for item in items]
    service = np.array([[item["features"][n] for n in DENSE_NAMES] for item in items],
                       dtype=np.float32)
    np.testing.assert_array_equal(lists.dense[0], service)


def _letor_lists(tmp_path, name: str, queries: int, sign: float, width: int = 3, seed: int = 0):
    """A generated LETOR file where feature 1 carries ``sign`` x the label."""
    from training.letor import letor_lists, read_letor

    rng = np.random.default_rng(seed)
    lines = []
    for q in range(queries):
        for _ in range(8):
            label = int(rng.integers(0, 4))
            feats = [sign * label + rng.normal(0, 0.3)] + list(rng.normal(size=width - 1))
            lines.append(f"{label} qid:{q} " + " ".join(f"{i + 1}:{v:.4f}"
                                                        for i, v in enumerate(feats)))
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return letor_lists(read_letor(path))


def test_early_stopping_restores_the_best_validation_epoch(tmp_path):
    """Validation ranks by the opposite of what training learns, so it gets worse as
    training goes on: the model returned must be the best validation epoch's, not the last."""
    from training.fit import FewStepsWarning, FitConfig, evaluate, fit, predict

    train = _letor_lists(tmp_path, "train", 24, +1.0)
    valid = _letor_lists(tmp_path, "valid", 24, -1.0, seed=1)
    config = FitConfig(epochs=1, min_steps=40, batch_lists=8, embed_dim=4, hidden=(8,),
                       lr=1e-2, warmup_steps=0, patience_steps=None)
    with pytest.warns(FewStepsWarning, match="3 optimiser step"):
        model, history = fit(train, config, valid=valid)
    scores = [h["valid_ndcg@10"] for h in history]
    assert history[-1]["step"] == 40 and len(history) == 14  # 3 steps an epoch, 40 steps
    assert scores[-1] < max(scores) - 0.02  # the last epoch is clearly not the best
    best = [i for i, h in enumerate(history) if h.get("best")]
    assert best == [scores.index(max(scores))]
    assert evaluate(predict(model, valid), valid.labels, valid)["ndcg@10"] == max(scores)
    # where validation cannot choose (the simulator's click labels) the last epoch stays
    last, kept = fit(train, replace(config, select_best=False), valid=valid)
    assert not any(h.get("best") for h in kept) and len(kept) == 14
    assert evaluate(predict(last, valid), valid.labels, valid)["ndcg@10"] == scores[-1]

    # With patience: stops once 9 steps pass without a gain over the best epoch ...
    patient = replace(config, epochs=14, min_steps=6, patience_steps=9)  # 42 steps planned
    stopped, short = fit(train, patient, valid=valid)
    best_step = next(h["step"] for h in short if h.get("best"))
    assert short[-1]["step"] - best_step >= 9 > short[-2]["step"] - best_step
    assert short[-1]["step"] < 40
    # ... but never before min_steps.
    _, minimum = fit(train, replace(patient, min_steps=30), valid=valid)
    assert minimum[-1]["step"] == 30 and minimum[-2]["step"] - best_step >= 9
    assert evaluate(predict(stopped, valid), valid.labels, valid)["ndcg@10"] == max(
        h["valid_ndcg@10"] for h in short)


def test_training_length_and_schedule_are_in_steps():
    from training.fit import FitConfig, learning_rate, planned_steps

    config = FitConfig(epochs=12, batch_lists=64, min_steps=1000)
    assert planned_steps(30, config) == (1, 1000, 1000)  # tiny data: many short epochs
    assert planned_steps(64 * 100, config) == (100, 12, 1200)  # large: epochs decide
    assert planned_steps(30, replace(config, max_steps=200)) == (1, 200, 200)
    lrs = [learning_rate(s, 1000, config) for s in range(1000)]
    assert lrs[0] < lrs[config.warmup_steps - 1] == pytest.approx(config.lr)
    assert lrs[-1] == pytest.approx(config.lr * config.final_lr_ratio)
    assert all(a >= b for a, b in itertools.pairwise(lrs[config.warmup_steps:]))


@pytest.mark.parametrize("width", [1, 5, 40])
def test_lightgbm_baseline_takes_any_feature_width(tmp_path, width):
    from training.baselines import feature_names, lightgbm_lambdarank, lightgbm_scores
    from training.fit import evaluate

    train = _letor_lists(tmp_path, "train", 40, +1.0, width=width)
    test = _letor_lists(tmp_path, "test", 20, +1.0, width=width, seed=1)
    model = lightgbm_lambdarank(train, train.labels, rounds=20)
    assert model.booster_.feature_name() == feature_names(width) == [
        f"f{i}" for i in range(1, width + 1)]
    scores = lightgbm_scores(model, test)
    assert scores.shape == test.labels.shape and np.isfinite(scores[test.mask]).all()
    noise = evaluate(np.random.default_rng(2).random(test.labels.shape), test.labels, test)
    assert evaluate(scores, test.labels, test)["ndcg@10"] > noise["ndcg@10"] + 0.1
