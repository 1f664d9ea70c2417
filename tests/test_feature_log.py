"""The served-feature log: the sink (never blocks, drops and counts, rotates), what the
service writes to it, and training lists built from it joined with later engagement."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from app.feature_log import FeatureLog
from app.feature_spec import DENSE_NAMES
from tests.conftest import publish_features
from training.dataset import load_served_logs, to_lists


def dropped() -> float:
    return REGISTRY.get_sample_value("bestmatch_feature_log_records_total",
                                     {"outcome": "dropped"}) or 0.0


def read_records(directory) -> list[dict]:
    return [orjson.loads(line) for path in sorted(directory.glob("served-*.jsonl"))
            for line in path.read_bytes().splitlines()]


def test_records_are_written_in_order_to_rotating_files(tmp_path):
    sink = FeatureLog(tmp_path, queue_size=1000, max_bytes=500)
    sink.start()
    dense = np.array([0.1, 1 / 3, 1e-7], dtype=np.float32)
    for n in range(60):
        assert sink.put({"n": n, "dense": dense})
    sink.close()
    assert len(list(tmp_path.glob("served-*.jsonl"))) > 3
    records = read_records(tmp_path)
    assert [r["n"] for r in records] == list(range(60))
    assert np.array_equal(np.array(records[0]["dense"], dtype=np.float32), dense)  # exact


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    sink = FeatureLog(tmp_path, queue_size=2)  # not started: nothing drains the queue
    before = dropped()
    t0 = time.perf_counter()
    results = [sink.put({"n": n}) for n in range(5)]
    assert time.perf_counter() - t0 < 0.05
    assert results == [True, True, False, False, False]
    assert dropped() - before == 3


@pytest.mark.integration
def test_service_logs_what_it_served_and_training_joins_later_engagement(
        client_for, redis_url, feature_prefix, tmp_path):
    publish_features(redis_url, feature_prefix, "v1", [("p1", 0.25, 1000.0, 0.001)])
    logs = tmp_path / "served"
    with client_for(feature_log_dir=logs) as client:
        answers = []
        for rid, query, user in (("r1", "iphone", "u1"), ("r2", "スニーカー", None)):
            resp = client.post("/v1/search", headers={"X-Request-ID": rid}, json={
                "query": query, "user_id": user, "size": 3, "offset": 1, "debug": True})
            assert resp.status_code == 200
            answers.append(resp.json())
    records = {r["request_id"]: r for r in read_records(logs)}  # flushed on shutdown
    assert set(records) == {"r1", "r2"}
    r1, a1 = records["r1"], answers[0]
    assert (r1["query"], r1["user_id"], r1["feature_version"]) == ("iphone", "u1", "v1")
    assert r1["model"]["name"] == "baseline"
    assert (r1["experiment"], r1["arm"]) == ("none", "default")
    items = r1["items"]
    assert items["id"] == [item["id"] for item in a1["items"]]
    assert items["position"] == list(range(2, 2 + len(a1["items"])))
    assert np.array_equal(np.array(items["dense"], np.float32), np.array(  # exact float32s
        [[item["features"][name] for name in DENSE_NAMES] for item in a1["items"]], np.float32))

    # Engagement from the event log, joined by request id: a click then a purchase of the
    # second item after the serve; a like of the first item stamped before the serve
    # (clock trouble) must not become a label.
    served_at = datetime.fromisoformat(r1["ts"])
    first, second = items["id"][:2]
    events = [
        ("r1", second, "click", served_at + timedelta(seconds=5)),
        ("r1", second, "purchase", served_at + timedelta(minutes=3)),
        ("r1", first, "like", served_at - timedelta(seconds=30)),
        ("r2", records["r2"]["items"]["id"][0], "click", served_at + timedelta(seconds=9)),
        ("r1", second, "click", served_at + timedelta(seconds=5)),  # sent twice
        ("r9", second, "click", served_at + timedelta(seconds=5)),  # never served
    ]
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"".join(orjson.dumps(
        {"request_id": r, "item_id": i, "event": e, "ts": t.isoformat()}) + b"\n"
        for r, i, e, t in events))
    with open(next(logs.glob("served-*.jsonl")), "ab") as f:
        f.write(b'{"request_id": "r3", "items": [{"id"')  # a line cut short by a crash

    data = load_served_logs(sorted(logs.glob("served-*.jsonl")), events_path,
                            rejects_path=tmp_path / "rejects.jsonl",
                            event_rejects_path=tmp_path / "event-rejects.jsonl")
    assert data.summary["rejected_records"] == {"not JSON (a line cut short?)": 1}
    assert (tmp_path / "rejects.jsonl").exists()
    assert data.summary["rejected_events"] == {
        "before_impression": 1, "duplicate": 1, "unknown_request_or_item": 1}
    assert len((tmp_path / "event-rejects.jsonl").read_text().splitlines()) == 3
    assert data.summary["dropped_requests"] == {"click_only": 1}  # r2: a click alone
    assert data.summary["kept_requests"] == 1

    lists = to_lists(data.impressions, page_size=3)
    row, n = list(lists.request_ids).index("r1"), len(items["id"])
    assert n >= 2 and lists.mask[row].sum() == n
    assert lists.labels[row, :2].tolist() == [0.0, 4.0]  # the purchase; the like ignored
    assert lists.position[row, :n].tolist() == list(range(2, 2 + n))
    assert np.array_equal(lists.dense[row, :n], np.array(items["dense"], dtype=np.float32))
    assert lists.query_ids[row, :len(r1["query_ids"])].tolist() == r1["query_ids"]
    assert lists.title_ids[row, :n].tolist() == [  # the logged ids, padded alike
        ids + [0] * (lists.title_ids.shape[2] - len(ids)) for ids in items["title_ids"]]
