"""A/B experiments: bucketing (pure), config validation, and on the real engine and
Redis: per-arm models, the admin-only override, reload of good and bad files."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.experiments import Arm, ExperimentConfigError, Experiments, bucket, parse
from training.baseline_model import baseline_weights
from training.export import write_model

UNITS = [f"user-{i}" for i in range(100_000)]


def config(traffic: float = 0.3, weights=(1, 2), salt: str = "s1") -> Experiments:
    text = f"""
experiments:
  - name: exp
    salt: {salt}
    traffic: {traffic}
    arms:
      - {{name: a, weight: {weights[0]}, ranker: recall}}
      - {{name: b, weight: {weights[1]}, ranker: recall}}
"""
    spec = parse(text).experiments[0]
    arms = {("exp", a.name): Arm("exp", a.name, 0.0, recall_only=True) for a in spec.arms}
    return Experiments((spec,), arms, Arm("none", "default", 0.1))


def shares(experiments: Experiments) -> dict[str, float]:
    names = [experiments.assign(u).name for u in UNITS]
    values, counts = np.unique(names, return_counts=True)
    return dict(zip(values.tolist(), (counts / len(UNITS)).tolist(), strict=True))


def test_bucketing_is_deterministic_and_close_to_the_configured_shares():
    got = shares(config(traffic=0.3, weights=(1, 2)))
    assert got["default"] == pytest.approx(0.7, abs=0.01)
    assert got["a"] == pytest.approx(0.1, abs=0.01)
    assert got["b"] == pytest.approx(0.2, abs=0.01)
    again = config(traffic=0.3, weights=(1, 2))  # a new instance, as on another replica
    assert all(again.assign(u) == config().assign(u) for u in UNITS[:2000])


def test_raising_traffic_keeps_every_assigned_unit_in_its_arm():
    small, large = config(traffic=0.2), config(traffic=0.6)
    for unit in UNITS[:20_000]:
        arm = small.assign(unit).name
        if arm != "default":
            assert large.assign(unit).name == arm


def test_experiments_with_different_salts_are_independent():
    in_a = np.array([bucket("salt-a", "traffic", u) < 0.5 for u in UNITS])
    in_b = np.array([bucket("salt-b", "traffic", u) < 0.5 for u in UNITS])
    assert (in_a & in_b).mean() == pytest.approx(0.25, abs=0.01)
    arm_a = np.array([bucket("salt-a", "arm", u) < 0.5 for u in UNITS])
    assert (in_a & arm_a).mean() == pytest.approx(0.25, abs=0.01)  # gate and arm draws too


def test_requests_without_user_or_session_get_the_default():
    assert config(traffic=1.0).assign(None).name == "default"


@pytest.mark.parametrize(("text", "field"), [
    ("experiments:\n  - name: e\n    salt: s\n    traffic: 1.5\n    arms: [{name: a}]",
     "experiments.0.traffic"),
    ("experiments:\n  - name: e\n    salt: s\n    traffic: 0.5\n    arms: []",
     "experiments.0.arms"),
    ("experiments:\n  - name: e\n    salt: s\n    traffic: 0.5\n    arms: [{name: a, "
     "ranker: magic}]", "experiments.0.arms.0.ranker"),
    ("experiments:\n  - {name: e, salt: s, traffic: 0.5, arms: [{name: a}, {name: a}]}",
     "experiments.0"),
    ("experiments:\n  - {name: e, salt: s, traffic: 0.5, arms: [{name: a}], color: red}",
     "experiments.0.color"),
])
def test_invalid_configs_name_the_field(text, field):
    with pytest.raises(ExperimentConfigError) as caught:
        parse(text)
    assert field in [f["field"] for f in caught.value.fields]


def test_a_file_that_is_not_yaml_is_refused():
    with pytest.raises(ExperimentConfigError, match="not valid YAML"):
        parse("experiments: [unclosed")


# --- the service ------------------------------------------------------------------------

TWO_ARMS = """
experiments:
  - name: rank
    salt: rank-1
    traffic: 1.0
    arms:
      - {name: baseline, ranker: default}
      - {name: reverse, ranker: {model: reverse, version: "1"}, image_weight: 0.0}
      - {name: recall, ranker: recall, image_weight: 0.0}
"""


@pytest.fixture(scope="module")
def models_with_reverse(models_dir):
    """The baseline, and a model scoring exactly its negation (the opposite order)."""
    weights = baseline_weights()
    w, b = weights.layers[-1]
    weights.layers[-1] = (-w, -b)
    if not (models_dir / "reverse" / "1").exists():
        write_model(models_dir, "reverse", "1", weights, training={"kind": "test"})
    return models_dir


def ask(client, arm: str | None = None, token: str | None = "secret", **body):
    headers = {}
    if arm is not None:
        headers["X-Experiment-Arm"] = arm
    if token is not None:
        headers["X-Admin-Token"] = token
    return client.post("/v1/search", headers=headers,
                       json={"query": "スニーカー", "size": 10, **body})


@pytest.mark.integration
def test_each_arm_scores_with_its_own_model(client_for, models_with_reverse, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TWO_ARMS)
    with client_for(experiments_file=path, image_weight=0.0) as client:
        base = ask(client, "rank/baseline", size=50).json()
        rev = ask(client, "rank/reverse", size=50).json()
        recall = ask(client, "rank/recall", size=50).json()
        assert base["experiment"] == {"name": "rank", "arm": "baseline"}
        assert (base["model"]["name"], rev["model"]["name"]) == ("baseline", "reverse")
        assert recall["model"] is None
        base_scores = {i["id"]: i["model_score"] for i in base["items"]}
        assert len(base_scores) >= 3
        for item in rev["items"]:  # the reverse model scores each item -baseline
            assert item["model_score"] == pytest.approx(-base_scores[item["id"]], abs=1e-5)
        assert [i["recall_rank"] for i in recall["items"]] == list(range(len(recall["items"])))
        arms = client.app.state.services.experiments.current.arms.values()
        sessions = {id(a.model.session) for a in arms if a.model is not None}
        default_session = client.app.state.services.models.current.session
        assert len(sessions) == 1 and id(default_session) not in sessions

        # users are bucketed without any header, the answer and metrics name the arm
        arms = {ask(client, token=None, user_id=f"u{n}").json()["experiment"]["arm"]
                for n in range(30)}
        assert arms == {"baseline", "reverse", "recall"}
        assert ('bestmatch_requests_total{arm="reverse",experiment="rank",flow="best_match",'
                'status="ok"}') in client.get("/metrics").text


@pytest.mark.integration
def test_the_arm_override_needs_the_admin_token(client_for, models_with_reverse, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TWO_ARMS)
    with client_for(experiments_file=path) as client:
        assert ask(client, "rank/reverse", token=None).status_code == 403
        assert ask(client, "rank/reverse", token="wrong").status_code == 403
        assert ask(client, "rank/reverse").json()["experiment"]["arm"] == "reverse"
        unknown = ask(client, "rank/nope")
        assert unknown.status_code == 422
        assert unknown.json()["fields"][0]["field"] == "X-Experiment-Arm"
        assert ask(client, "none/default").json()["experiment"] == {"name": "none",
                                                                    "arm": "default"}


@pytest.mark.integration
def test_reload_takes_good_files_and_refuses_bad_ones(client_for, models_with_reverse,
                                                      tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TWO_ARMS)
    admin = {"X-Admin-Token": "secret"}
    with client_for(experiments_file=path, experiments_poll_s=0.1) as client:
        path.write_text(TWO_ARMS.replace("traffic: 1.0", "traffic: 7"))
        refused = client.post("/admin/experiments/reload", headers=admin)
        assert refused.status_code == 409
        assert refused.json()["fields"][0]["field"] == "experiments.0.traffic"
        assert ask(client, "rank/reverse").json()["model"]["name"] == "reverse"  # still served
        assert client.get("/readyz", headers=admin).json()["checks"]["experiments"]["ok"] is False

        path.write_text(TWO_ARMS.replace('{model: reverse, version: "1"}',
                                         '{model: reverse, version: "9"}'))
        refused = client.post("/admin/experiments/reload", headers=admin)
        assert refused.status_code == 409
        assert refused.json()["fields"][0]["field"] == "experiments.0.arms.1.ranker"

        assert client.post("/admin/experiments/reload").status_code == 401

        reverse = client.app.state.services.experiments.current.arms["rank", "reverse"].model
        path.write_text(TWO_ARMS.replace("name: rank", "name: rank2"))
        loaded = client.post("/admin/experiments/reload", headers=admin)
        assert loaded.status_code == 200
        arms = client.app.state.services.experiments.current.arms
        assert arms["rank2", "reverse"].model is reverse
        assert ask(client, "rank2/recall").json()["experiment"]["name"] == "rank2"
        assert client.get("/readyz", headers=admin).json()["checks"]["experiments"]["ok"] is True

        # hot reload: the file is polled; no admin call
        path.write_text(TWO_ARMS.replace("name: rank", "name: rank3"))
        deadline = time.monotonic() + 10
        while ask(client, "rank3/recall").status_code != 200:
            assert time.monotonic() < deadline, "the changed file was not picked up"
            time.sleep(0.1)
