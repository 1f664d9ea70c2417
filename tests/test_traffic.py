"""Live traffic: simulated users search a real HTTP service and act on its answers."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from app.settings import Settings
from bestmatch.demo import build_demo
from tests.live_service import live_service
from training.dataset import read_served
from training.simulator.traffic import TrafficConfig, drive_traffic

pytestmark = pytest.mark.integration
EXPLORE = """
experiments:
  - name: loop
    salt: loop
    traffic: 1.0
    arms:
      - {name: control, explore: {rate: 0.3, top: 10}}
"""


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    """A small simulated marketplace in the embedded engine, served over HTTP."""
    root = tmp_path_factory.mktemp("traffic")
    (root / "experiments.yaml").write_text(EXPLORE)
    settings = Settings(engine="embedded", feature_store="snapshot",
                        embedded_index_dir=root / "index", snapshot_dir=root / "features",
                        feature_log_dir=root / "served", onnx_device="cpu",
                        experiments_file=root / "experiments.yaml")
    build_demo(1500, seed=3, workdir=root, sessions=400, settings=settings)
    with live_service(settings) as url:
        yield {"root": root, "url": url, "sim_dir": root / "sim-1500-seed3"}


@pytest.fixture(scope="module")
def traffic(demo_world):
    out = demo_world["root"] / "traffic"
    summary = drive_traffic(TrafficConfig(url=demo_world["url"], sim_dir=demo_world["sim_dir"],
                                          out_dir=out, sessions=300, concurrency=4, seed=1))
    return {"summary": summary, "events": pl.read_parquet(out / "events.parquet"),
            "truth": pl.read_parquet(out / "truth.parquet"), "out": out}


def test_every_session_is_answered_and_logged(traffic):
    s = traffic["summary"]
    assert s["answered"] == 300 and s["failed"] == {}
    assert json.loads((traffic["out"] / "summary.json").read_text())["answered"] == 300
    events = traffic["events"]
    assert set(events["event"].unique()) >= {"impression", "click"}
    pages = events.filter(pl.col("event") == "impression")["request_id"].n_unique()
    assert pages == traffic["truth"]["request_id"].n_unique() > 280  # a few answers are empty
    assert (events["experiment"] == "loop").all() and (events["arm"] == "control").all()
    # every engagement follows its impression
    imp = events.filter(pl.col("event") == "impression").select(
        "request_id", "item_id", pl.col("ts").alias("shown"))
    later = events.filter(pl.col("event") != "impression").join(
        imp, on=["request_id", "item_id"], how="left")
    assert later["shown"].null_count() == 0 and (later["ts"] >= later["shown"]).all()


def test_users_see_the_page_in_the_order_the_service_served(traffic, demo_world):
    served, rejected = read_served(sorted((demo_world["root"] / "served").glob("*.jsonl")))
    assert not rejected
    shown = traffic["events"].filter(pl.col("event") == "impression").select(
        "request_id", "item_id", "position")
    joined = shown.join(served.select("request_id", "item_id", pl.col("position")
                                      .alias("served_position")),
                        on=["request_id", "item_id"], how="left")
    assert joined["served_position"].null_count() == 0  # request ids match the service's
    assert (joined["position"] == joined["served_position"]).all()


def test_clicks_follow_true_relevance_and_position(traffic):
    events, truth = traffic["events"], traffic["truth"]
    clicks = events.filter(pl.col("event") == "click").select("request_id", "item_id")
    t = truth.join(clicks.with_columns(clicked=pl.lit(True)), on=["request_id", "item_id"],
                   how="left").with_columns(pl.col("clicked").fill_null(False))
    rate = t.group_by(pl.col("relevance") >= 3).agg(pl.col("clicked").mean())
    by = dict(rate.iter_rows())
    assert by[True] > 2 * by[False]
    top = t.filter(pl.col("position") <= 5)["clicked"].mean()
    tail = t.filter(pl.col("position") > 20)["clicked"].mean()
    assert top > 2 * tail
    assert np.all(truth["expected_purchases"].to_numpy() >= 0)
    assert truth["expected_purchases"].sum() > 0


def test_a_ranker_trains_from_what_was_served(traffic, demo_world):
    from pathlib import Path

    from training.fit import FitConfig
    from training.train_ltr import LtrConfig, train_served

    root = demo_world["root"]
    config = LtrConfig(out_dir=root / "ltr", models_dir=root / "models", version="s1",
                       fit=FitConfig(epochs=1, min_steps=20, max_steps=20, batch_lists=16,
                                     embed_dim=8, hidden=(16,)))
    summary = train_served(config, sorted((root / "served").glob("served-*.jsonl")),
                           traffic["out"] / "events.parquet", traffic["out"] / "truth.parquet",
                           shipped=Path("models/ltr/1"))
    results = summary["results"]
    assert list(results)[:3] == ["served_order", "shipped ltr/1", "lightgbm_lambdarank"]
    assert "mlp_true_labels (ceiling)" in results
    assert summary["dataset"]["rejected_events"] == {}
    assert summary["propensity"]["shuffled_pages"] > 40  # the explored pages
    assert 0.3 < summary["propensity"]["eta"] < 2.0  # simulated with eta = 1
    assert summary["parity_max_abs_diff"] < 1e-5
    assert (root / "models" / "ltr" / "s1" / "model.onnx").exists()
    assert (root / "ltr" / "s1" / "report.md").exists()
