"""Exploration: the RandTop-N shuffle, its propensities, and what the service logs."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pytest

from app.experiments import ExploreSpec, parse
from app.exploration import explore
from training.dataset import ServedSpecMismatch, read_served

ORDER = np.arange(100, 0, -1)  # a model order of 100 candidates


def test_no_exploration_keeps_the_order_with_propensity_one():
    served, shuffled, propensity = explore(ORDER, None, "r1")
    assert served is ORDER and not shuffled and (propensity == 1).all()


def test_the_shuffle_is_fixed_by_the_request_and_touches_only_the_top():
    spec = ExploreSpec(rate=1.0, top=10)
    a, shuffled, _ = explore(ORDER, spec, "r1")
    assert shuffled and np.array_equal(a, explore(ORDER, spec, "r1")[0])
    assert not np.array_equal(a, explore(ORDER, spec, "r2")[0])
    assert sorted(a[:10]) == sorted(ORDER[:10]) and np.array_equal(a[10:], ORDER[10:])


def test_share_of_shuffled_requests_and_propensities():
    spec = ExploreSpec(rate=0.2, top=5)
    runs = [explore(ORDER, spec, f"r{i}") for i in range(4000)]
    assert 0.18 < np.mean([s for _, s, _ in runs]) < 0.22
    kept, moved = spec.rate / spec.top + 1 - spec.rate, spec.rate / spec.top
    for served, _, propensity in runs[:200]:
        at_rank = served[:5] == ORDER[:5]
        assert np.allclose(propensity[:5], np.where(at_rank, kept, moved))
        assert (propensity[5:] == 1).all()
    # the logged propensity is the real frequency: item ORDER[0] at each top position
    counts = np.zeros(5)
    for served, _, _ in runs:
        counts[np.flatnonzero(served[:5] == ORDER[0])] += 1
    assert np.allclose(counts / len(runs), [kept, moved, moved, moved, moved], atol=0.015)


def test_the_explore_option_is_validated():
    good = parse("experiments: [{name: e, salt: s, traffic: 1, arms: [{name: x, "
                 "explore: {rate: 0.05, top: 20}}]}]")
    assert good.experiments[0].arms[0].explore == ExploreSpec(rate=0.05, top=20)
    for bad in ("{rate: 0}", "{rate: 1.5}", "{rate: 0.1, top: 1}", "{rate: 0.1, n: 3}"):
        with pytest.raises(Exception, match="invalid experiments config"):
            parse(f"experiments: [{{name: e, salt: s, traffic: 1, arms: [{{name: x, "
                  f"explore: {bad}}}]}}]")


EXPLORE_ALL = """
experiments:
  - {name: exp, salt: x, traffic: 1.0, arms: [{name: explore, explore: {rate: 1.0, top: 3}}]}
"""


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["real", "embedded"], indirect=True)
def test_the_service_shuffles_and_logs_propensities(client_for, tmp_path):
    path, logs = tmp_path / "experiments.yaml", tmp_path / "served"
    path.write_text(EXPLORE_ALL)
    with client_for(feature_log_dir=logs) as plain:
        reference = plain.post("/v1/search", json={"query": "sneakers スニーカー",
                                                    "size": 10}).json()
    with client_for(experiments_file=path, feature_log_dir=logs) as client:
        answers = [client.post("/v1/search", headers={"X-Request-ID": f"x{i}"}, json={
            "query": "sneakers スニーカー", "size": 10, "user_id": f"u{i}"}).json()
            for i in range(8)]
    ids = [i["id"] for i in reference["items"]]
    assert len(ids) >= 5
    for a in answers:
        assert a["experiment"] == {"name": "exp", "arm": "explore"}
        got = [i["id"] for i in a["items"]]
        assert sorted(got[:3]) == sorted(ids[:3]) and got[3:] == ids[3:]
    assert any([i["id"] for i in a["items"]][:3] != ids[:3] for a in answers)
    records = {r["request_id"]: r for path in logs.glob("served-*.jsonl")
               for r in map(orjson.loads, path.read_bytes().splitlines())}
    for i, a in enumerate(answers):
        rec = records[f"x{i}"]
        assert rec["explored"] is True and rec["items"]["id"] == [j["id"] for j in a["items"]]
        p = rec["items"]["propensity"]
        assert all(x == pytest.approx(1 / 3) for x in p[:3]) and p[3:] == [1.0] * (len(p) - 3)
    served, _ = read_served(sorted(logs.glob("served-*.jsonl")))
    assert set(served.filter(served["explored"])["request_id"]) == {f"x{i}" for i in range(8)}


def test_served_logs_of_another_feature_spec_are_refused(tmp_path):
    record = {"request_id": "r", "ts": "2026-12-01T00:00:00+00:00", "query": "q",
              "feature_spec": "0000000000000000", "query_ids": [1],
              "items": {"id": ["a"], "position": [1], "dense": [[0.0] * 12],
                        "title_ids": [[1]]}}
    path = tmp_path / "served.jsonl"
    path.write_bytes(orjson.dumps(record) + b"\n")
    with pytest.raises(ServedSpecMismatch, match="served with feature spec 0000000000000000"):
        read_served([path])


def test_propensity_formula_matches_enumeration():
    """With rate 1 every arrangement of the top 3 is equally likely: 1/3 at each position."""
    spec = ExploreSpec(rate=1.0, top=3)
    seen = {tuple(explore(ORDER[:3], spec, f"r{i}")[0]) for i in range(300)}
    assert seen == set(itertools.permutations(ORDER[:3]))
