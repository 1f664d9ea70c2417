"""The generated LETOR data of known structure."""

from __future__ import annotations

import numpy as np

from training.fit import evaluate
from training.letor import letor_lists, read_letor
from training.letor_synth import FEATURES, write_synthetic_letor, write_synthetic_splits


def test_generation_is_seeded_and_reads_back(tmp_path):
    a = write_synthetic_letor(tmp_path / "a.txt", 40, seed=1)
    write_synthetic_letor(tmp_path / "b.txt", 40, seed=1)
    write_synthetic_letor(tmp_path / "c.txt", 40, seed=2)
    text = (tmp_path / "a.txt").read_text()
    assert text == (tmp_path / "b.txt").read_text() != (tmp_path / "c.txt").read_text()
    data = read_letor(tmp_path / "a.txt", n_features=FEATURES)
    assert not data.rejected and len(np.unique(data.qids)) == 40 == a["queries"]
    assert data.features.shape == (a["rows"], FEATURES)
    assert (data.features[:, 7] == 5.0).all()  # the constant column
    labels = np.bincount(data.labels.astype(int), minlength=5)
    assert labels.tolist() == a["labels"] and labels[0] == labels.max()  # mostly 0


def test_splits_have_disjoint_queries_and_headroom(tmp_path):
    files = write_synthetic_splits(tmp_path, 120, seed=0)
    train, test = (read_letor(files[k]) for k in ("train", "test"))
    assert len(np.unique(test.qids)) == 30 and not set(train.qids) & set(test.qids)
    lists = letor_lists(test)
    random = evaluate(np.random.default_rng(0).random(lists.labels.shape), lists.labels, lists)
    best = evaluate(lists.dense[:, :, 0], lists.labels, lists)  # f1, the linear signal
    noise = evaluate(lists.dense[:, :, 10], lists.labels, lists)
    assert best["ndcg@10"] > random["ndcg@10"] + 0.2 and abs(noise["ndcg@10"] - random[
        "ndcg@10"]) < 0.1
