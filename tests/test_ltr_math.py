"""Unit tests for the ranking losses, metrics and the LETOR reader (no servers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_svmlight_file
from sklearn.metrics import label_ranking_average_precision_score, ndcg_score

from training.letor import read_letor
from training.losses import PAIR_ELEMENTS, approx_ndcg_loss, listnet_loss, pair_block_rows
from training.metrics import mean_by_query, ndcg_at_k, reciprocal_rank

LOSSES = [approx_ndcg_loss, listnet_loss]


def batch(scores, labels, mask=None):
    s = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.float64)
    m = torch.ones_like(y, dtype=torch.bool) if mask is None else torch.tensor(mask)
    return s, y, m


def random_batch(seed: int, b: int = 4, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (b, n), generator=g).to(torch.float64)
    labels[:, 0] = 1.0  # every list has some gain
    return scores, labels, torch.ones(b, n, dtype=torch.bool)


# ---- losses ----------------------------------------------------------------------------


def test_approx_ndcg_matches_allrank_reference():
    s, y, m = batch([[0.5, 0.3, 0.5]], [[0.5, 0.3, 0.5]])
    assert approx_ndcg_loss(s, y, m, temperature=1.0).item() == pytest.approx(
        -0.8499219417, abs=1e-7
    )


def test_approx_ndcg_matches_tf_ranking_reference():
    s, y, m = batch([[0.6, 0.8]], [[1.0, 0.0]])
    assert approx_ndcg_loss(s, y, m, temperature=0.1).item() == pytest.approx(-0.655107, abs=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_padding_does_not_change_loss_or_gradient(loss):
    scores, labels, mask = random_batch(0)
    base = scores.clone().requires_grad_(True)
    expected = loss(base, labels, mask)
    expected.backward()

    pad = 3
    padded = torch.cat([scores, torch.tensor([[1e30, -1e30, math.inf]] * 4)], dim=1)
    padded.requires_grad_(True)
    padded_labels = torch.cat([labels, torch.full((4, pad), 1e6)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(4, pad, dtype=torch.bool)], dim=1)
    weights = torch.cat([torch.ones(4, 6), torch.full((4, pad), 1e9)], dim=1)
    got = loss(padded, padded_labels, padded_mask, gain_weights=weights.double())
    got.backward()

    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    assert torch.allclose(padded.grad[:, :6], base.grad, atol=1e-12)
    assert torch.all(padded.grad[:, 6:] == 0)


@pytest.mark.parametrize("budget", [1, 42, 63, 147])  # rows per block: 1, 2, 3, all 7
def test_blocked_approx_ndcg_equals_all_pairs(budget):
    scores, labels, mask = random_batch(2, b=3, n=7)
    mask[2, 4:] = False
    weights = torch.rand(3, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = []
    for limit in (None, budget):
        s = scores.clone().requires_grad_(True)
        value = approx_ndcg_loss(s, labels, mask, 0.5, weights, max_pair_elements=limit)
        value.backward()
        results.append((value.item(), s.grad))
    (full, full_grad), (blocked, blocked_grad) = results
    assert blocked == pytest.approx(full, abs=1e-12)
    assert torch.allclose(blocked_grad, full_grad, atol=1e-12)


def test_approx_ndcg_memory_is_bounded_on_long_lists(monkeypatch):
    """A 4,000-item list: no pairwise tensor above the budget, forward or backward."""
    b, n, budget = 2, 4000, 1 << 18  # all pairs would be 32 M elements
    assert pair_block_rows(b, n, budget) == 32 and pair_block_rows(b, n, None) == n
    assert pair_block_rows(64, 20, PAIR_ELEMENTS) == 20  # service-sized pages: one block
    sizes = []
    sigmoid = torch.sigmoid

    def spy(x):
        sizes.append(x.numel())
        return sigmoid(x)

    monkeypatch.setattr(torch, "sigmoid", spy)
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(b, n, generator=g, dtype=torch.float32, requires_grad=True)
    labels = torch.randint(0, 3, (b, n), generator=g).float()
    loss = approx_ndcg_loss(scores, labels, torch.ones(b, n, dtype=torch.bool),
                            max_pair_elements=budget)
    forward_calls = len(sizes)
    loss.backward()
    assert forward_calls == math.ceil(n / 32) and len(sizes) == 2 * forward_calls  # recomputed
    assert max(sizes) <= budget
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_are_finite(loss):
    scores, labels, mask = random_batch(1)
    scores = (scores * 50).requires_grad_(True)  # saturated sigmoids / softmax
    mask[1, 3:] = False
    loss(scores, labels, mask).backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", LOSSES)
def test_lists_without_gain_are_excluded(loss):
    scores, labels, mask = random_batch(2, b=2)
    alone = loss(scores[:1], labels[:1], mask[:1])
    labels[1] = 0.0
    assert loss(scores, labels, mask).item() == pytest.approx(alone.item(), abs=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_batch_without_gain_gives_connected_zero(loss):
    scores, labels, mask = random_batch(3)
    scores.requires_grad_(True)
    value = loss(scores, torch.zeros_like(labels), mask)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(scores.grad == 0)


@pytest.mark.parametrize("loss", LOSSES)
def test_unit_gain_weights_equal_none(loss):
    scores, labels, mask = random_batch(4)
    weighted = loss(scores, labels, mask, gain_weights=torch.ones_like(scores))
    assert weighted.item() == pytest.approx(loss(scores, labels, mask).item(), abs=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_upweighting_an_item_pushes_it_up_harder(loss):
    s, y, m = batch([[2.0, 0.0, -2.0]], [[1.0, 0.0, 1.0]])
    s.requires_grad_(True)
    loss(s, y, m).backward()
    plain = s.grad[0, 2].item()
    s.grad = None
    loss(s, y, m, gain_weights=torch.tensor([[1.0, 1.0, 3.0]], dtype=torch.float64)).backward()
    assert s.grad[0, 2].item() < plain < 0


@pytest.mark.parametrize("loss", LOSSES)
def test_weights_survive_normalisation_on_single_item_lists(loss):
    """IPS must reweight lists with one engaged item (a weighted normaliser would cancel it)."""
    s, y, m = batch([[0.5, 1.0], [0.3, -1.0]], [[1.0, 0.0], [0.0, 2.0]])
    per_list = [loss(s[i: i + 1], y[i: i + 1], m[i: i + 1]).item() for i in range(2)]
    w = torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    weighted = loss(s, y, m, gain_weights=w).item()
    assert weighted == pytest.approx((per_list[0] + 2.0 * per_list[1]) / 2.0, abs=1e-12)


def test_listnet_hand_case():
    # softmax([0, ln 2, 0]) = [1/4, 1/2, 1/4]; target [1/2, 1/2, 0].
    s, y, m = batch([[0.0, math.log(2.0), 0.0]], [[1.0, 1.0, 0.0]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))
    assert listnet_loss(s, y, m).item() == pytest.approx(expected, abs=1e-12)


# ---- metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("gain", ["exp2", "linear"])
@pytest.mark.parametrize("k", [1, 3, 5, 10, 20])
def test_ndcg_matches_sklearn(gain, k):
    rng = np.random.default_rng(k)
    for _ in range(30):
        n = int(rng.integers(2, 15))
        scores = rng.permutation(n).astype(float) + rng.uniform(0, 0.5, n)  # no ties
        relevance = rng.integers(0, 5, n).astype(float)
        relevance[rng.integers(n)] = 3.0
        y_true = np.exp2(relevance) - 1 if gain == "exp2" else relevance
        expected = ndcg_score(y_true[None], scores[None], k=k)
        assert ndcg_at_k(scores, relevance, k, gain=gain) == pytest.approx(expected, abs=1e-12)


def test_ndcg_ties_keep_input_order_and_no_relevance_is_none():
    # Tied scores: the first item ranks first, so the relevant second item is at rank 2.
    assert ndcg_at_k([1.0, 1.0], [0.0, 1.0], k=2) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([0.3, 0.1, 0.2], [0, 0, 0], k=3) is None


def test_reciprocal_rank_matches_sklearn_lrap():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        scores = rng.permutation(n).astype(float)
        relevance = np.zeros(n)
        relevance[rng.integers(n)] = 1.0
        expected = label_ranking_average_precision_score(relevance[None], scores[None])
        assert reciprocal_rank(scores, relevance) == pytest.approx(expected, abs=1e-12)


def test_reciprocal_rank_hand_case():
    scores = [0.9, 0.8, 0.7, 0.1]
    assert reciprocal_rank(scores, [0, 1, 2, 0], threshold=2) == pytest.approx(1 / 3)
    assert reciprocal_rank(scores, [0, 1, 2, 0]) == pytest.approx(1 / 2)
    assert reciprocal_rank(scores, [0, 0, 0, 0]) is None


def test_mean_by_query_averages_per_query_first():
    values = [1.0, 0.0, None, 0.5, None]
    keys = ["a", "a", "a", "b", "c"]
    # a: mean(1, 0) = 0.5; b: 0.5; c has nothing left.
    assert mean_by_query(values, keys) == (0.5, 2, 2)
    mean, used, skipped = mean_by_query([None], ["x"])
    assert math.isnan(mean) and (used, skipped) == (0, 1)


# ---- LETOR reader ----------------------------------------------------------------------


def test_read_letor_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for row in range(40):
        qid = [10, 3, 77][row // 15]
        label = int(rng.integers(0, 5))
        present = sorted(rng.choice(np.arange(1, 9), size=int(rng.integers(0, 8)), replace=False))
        pairs = " ".join(f"{i}:{rng.normal():.6g}" for i in present)
        lines.append(f"{label} qid:{qid} {pairs} # doc-{row}".replace("  ", " "))
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")

    data = read_letor(path, n_features=8)
    x, y, qid = load_svmlight_file(str(path), n_features=8, zero_based=False, query_id=True)
    assert data.rejected == []
    assert data.features.dtype == np.float32 and data.labels.dtype == np.float32
    np.testing.assert_array_equal(data.labels, y.astype(np.float32))
    np.testing.assert_array_equal(data.qids.astype(int), qid)
    np.testing.assert_array_equal(data.features, x.toarray().astype(np.float32))


def test_read_letor_skips_comments_and_blank_lines():
    data = read_letor(["# header", "", "2 qid:q1 3:1.5 # trailing", "   ", "0 qid:q1 1:-1"])
    assert data.rejected == []
    assert data.qids.tolist() == ["q1", "q1"]
    assert data.labels.tolist() == [2.0, 0.0]
    np.testing.assert_array_equal(data.features, [[0, 0, 1.5], [-1, 0, 0]])


def test_read_letor_reports_bad_lines_and_keeps_good_ones():
    lines = [
        "1 qid:1 1:0.5",
        "abc qid:1 1:0.5",
        "1 1:0.5",
        "1 qid:1 1:x",
        "1 qid:1 0:1",
        "1 qid:1 5:1",
        "1 qid:1 2:nan",
        "1 qid:1 foo",
        "0 qid:2 4:2",
    ]
    data = read_letor(lines, n_features=4)
    assert data.qids.tolist() == ["1", "2"]
    np.testing.assert_array_equal(data.features, [[0.5, 0, 0, 0], [0, 0, 0, 2]])
    assert [number for number, _ in data.rejected] == [2, 3, 4, 5, 6, 7, 8]
    reasons = [reason for _, reason in data.rejected]
    for reason, word in zip(
        reasons,
        ["label", "qid", "not a number", "< 1", "> n_features", "not finite", "pair"],
        strict=True,
    ):
        assert word in reason


def test_groups_follow_first_appearance_with_non_contiguous_qids():
    data = read_letor(["1 qid:b 1:1", "0 qid:a 1:1", "2 qid:b 1:1", "0 qid:c 1:1", "1 qid:a 1:1"])
    assert [g.tolist() for g in data.groups()] == [[0, 2], [1, 4], [3]]
    assert read_letor([]).groups() == []
