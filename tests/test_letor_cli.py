"""The ranker trainer as a general tool: LETOR files from the CLI, input normalisation."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bestmatch.cli import main


def _write_letor(path, queries: int, seed: int, first_qid: int = 0) -> None:
    """Feature 1: label + noise; 2: heavy-tailed (log-normal of the label); 3: constant;
    4: noise. A malformed line at the end."""
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(first_qid, first_qid + queries):
        for _ in range(12):
            latent = rng.normal()
            label = int(np.clip(np.floor(latent + 1.5), 0, 4))
            feats = [latent + rng.normal(0, 0.5), np.exp(2 * latent + rng.normal()) * 100, 5.0,
                     rng.normal()]
            lines.append(f"{label} qid:{q} " + " ".join(f"{i + 1}:{v:.4f}"
                                                        for i, v in enumerate(feats)))
    lines.append("x qid:1 1:0")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def letor_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("letor")
    _write_letor(root / "train.txt", 50, seed=0)
    _write_letor(root / "test.txt", 20, seed=1, first_qid=1000)
    code = main(["train", "ltr", "--letor", str(root / "train.txt"), "--test",
                 str(root / "test.txt"), "--out", str(root / "out"), "--version", "t1"])
    run = root / "out" / "t1"
    return {"code": code, "run": run, "summary": json.loads((run / "results.json").read_text())}


def test_cli_trains_every_model_on_a_letor_file(letor_run):
    assert letor_run["code"] == 0
    s, run = letor_run["summary"], letor_run["run"]
    names = list(s["results"])
    assert names[0] == "random" and names[1].startswith("best single feature: f")
    assert names[2:] == ["lightgbm_lambdarank", "mlp_approx_ndcg"]
    assert all(r["queries"] == 20 for r in s["results"].values())
    # the learnable structure is learnt: both models beat random clearly
    assert s["results"]["mlp_approx_ndcg"]["ndcg@10"] > s["results"]["random"]["ndcg@10"] + 0.15
    assert s["results"]["mlp_approx_ndcg"]["steps"] >= 1000  # the step floor on 40 queries
    report = (run / "report.md").read_text()
    for name in names:
        assert f"| {name} |" in report
    assert (run / "learning_curves.png").stat().st_size > 0


def test_cli_splits_validation_from_training_queries_and_reports_rejects(letor_run):
    data, run = letor_run["summary"]["dataset"], letor_run["run"]
    assert (data["train_queries"], data["valid_queries"], data["test_queries"]) == (40, 10, 20)
    assert data["rejected_lines"] == {"train": 1, "test": 1}
    lines = (run / "rejected_lines.jsonl").read_text().splitlines()
    rejected = [json.loads(line) for line in lines]
    assert {(r["file"], r["line"]) for r in rejected} == {("train", 601), ("test", 241)}


def test_exported_letor_model_carries_only_what_it_uses(letor_run):
    s = letor_run["summary"]
    model = onnx.load(f"{s['model_dir']}/model.onnx")
    assert [i.name for i in model.graph.input] == ["dense"]
    assert "embedding" not in {t.name for t in model.graph.initializer}
    manifest = json.loads((letor_run["run"] / "model" / "manifest.json").read_text())
    assert manifest["kind"] == "letor_ranker" and manifest["features"] == 4
    assert manifest["normalisation"]["log_columns"] == [2]  # the heavy-tailed column
    assert manifest["normalisation"]["constant_columns"] == [3]
    assert s["parity_max_abs_diff"] < 1e-5


def test_cli_refuses_bad_options(tmp_path, capsys):
    _write_letor(tmp_path / "train.txt", 5, seed=0)
    assert main(["train", "ltr", "--letor", str(tmp_path / "train.txt")]) == 2
    assert "--test" in capsys.readouterr().err
    assert main(["train", "ltr", "--letor", str(tmp_path / "train.txt"),
                 "--test", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_validation_split_is_whole_queries_and_seeded():
    from training.letor import read_letor
    from training.train_letor import split_queries

    lines = [f"{q % 3} qid:{q // 4} 1:{q}" for q in range(40)]  # 10 queries of 4 rows
    data = read_letor(lines)
    train, valid = split_queries(data, 0.2, seed=3)
    assert len(set(valid.qids)) == 2 and not set(valid.qids) & set(train.qids)
    assert len(train.qids) + len(valid.qids) == 40
    again, _ = split_queries(data, 0.2, seed=3)
    assert list(again.qids) == list(train.qids)
    with pytest.raises(ValueError, match="at least 2"):
        split_queries(read_letor(["1 qid:a 1:1"]), 0.2, seed=0)


# ---- input normalisation ------------------------------------------------------------------

def _columns(n: int, seed: int) -> np.ndarray:
    """Gaussian, log-normal counts, signed heavy tail, constant, uniform."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(size=n), rng.lognormal(3, 1.5, n).round(),
                     rng.standard_t(2, n) * 50, np.full(n, 7.0), rng.random(n)], axis=1)


def test_normaliser_logs_heavy_tails_and_zeroes_constants():
    from training.normalise import Normaliser

    rows = _columns(5000, seed=0)
    norm = Normaliser.fit(rows)
    assert norm.log.tolist() == [False, True, True, False, False]
    assert norm.scale[3] == 0  # constant: whatever it holds later contributes nothing
    shifted = rows.copy()
    shifted[:, 3] = 1000.0
    assert np.allclose(norm.apply(shifted)[:, 3], 0)
    out = norm.apply(rows)
    assert np.allclose(out[:, [0, 1, 2, 4]].mean(axis=0), 0, atol=1e-9)
    assert np.allclose(out[:, [0, 1, 2, 4]].std(axis=0), 1, atol=1e-9)
    assert not Normaliser.fit(rows, "none").log.any()
    # fitted on training rows only: other data is mapped with the training statistics
    other = _columns(100, seed=1)
    assert np.allclose(norm.apply(other)[:, 0], (other[:, 0] - norm.mu[0]) * norm.scale[0])


@pytest.mark.parametrize("tokens", [False, True])
def test_normalisation_parity_torch_onnx_numpy(tmp_path, tokens):
    import torch

    from training.normalise import Normaliser
    from training.ranker_graph import build_onnx, forward
    from training.ranker_torch import RankerMLP

    rows = _columns(2000, seed=2).astype(np.float32)
    torch.manual_seed(0)
    model = RankerMLP(Normaliser.fit(rows), embed_dim=4, hidden=(16, 8), buckets=50,
                      tokens=tokens).eval()
    weights = model.to_weights()
    path = tmp_path / "m.onnx"
    path.write_bytes(build_onnx(weights).SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dense = _columns(300, seed=3).astype(np.float32)
    dense[:5, 1] = 0.0  # sparse LETOR zeros
    feeds = {"dense": dense}
    q, t = np.array([[3, 7, 0]], np.int64), np.random.default_rng(4).integers(0, 50, (300, 5))
    if tokens:
        feeds.update(query_ids=q, title_ids=t)
    assert [i.name for i in session.get_inputs()] == list(feeds)
    (onnx_scores,) = session.run(None, feeds)
    with torch.no_grad():
        torch_scores = model(torch.from_numpy(dense)[None], torch.from_numpy(q),
                             torch.from_numpy(t)[None])[0].numpy()
    reference = forward(weights, dense, q, t) if tokens else forward(weights, dense)
    assert np.abs(onnx_scores - torch_scores).max() < 1e-5
    assert np.abs(onnx_scores - reference).max() < 1e-4
