"""The DARTS search space on token sequences: cell shapes, mixing, derivation, guard."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from training.moderation.darts import (
    OPS,
    Cell,
    MixedOp,
    TextNetwork,
    derive,
    n_edges,
    reduction_layers,
)


@pytest.mark.parametrize("length", [16, 15])
def test_normal_cells_keep_the_length_and_reduction_cells_halve_it(length):
    torch.manual_seed(0)
    x = torch.randn(2, 8, length)
    w = F.softmax(torch.randn(n_edges(3), len(OPS)), -1)
    assert Cell(8, 3, reduction=False, reduce_prev=False)(x, x, w).shape == (2, 8, length)
    half = (length + 1) // 2
    assert Cell(8, 3, reduction=True, reduce_prev=False)(x, x, w).shape == (2, 8, half)
    # after a reduction, the next cell gets s0 at the full and s1 at the halved length
    s1 = torch.randn(2, 8, half)
    assert Cell(8, 3, reduction=False, reduce_prev=True)(x, s1, w).shape == (2, 8, half)


def test_every_op_keeps_or_halves_the_length():
    x = torch.randn(2, 4, 11)
    for stride, want in ((1, 11), (2, 6)):
        mixed = MixedOp(4, stride)
        for op in mixed.ops:
            assert op(x).shape == (2, 4, want)


def test_mixed_op_weights_sum_to_one_and_mix_linearly():
    net = TextNetwork(vocab=50, layers=3)
    for alpha in net.arch_parameters():
        assert torch.allclose(F.softmax(alpha, -1).sum(-1), torch.ones(alpha.shape[0]))
    x = torch.randn(2, 4, 9)
    mixed = MixedOp(4, 1).eval()
    one_hot = torch.zeros(len(OPS))
    one_hot[OPS.index("skip")] = 1.0
    assert torch.allclose(mixed(x, one_hot), x)  # all weight on skip: the identity


def test_reductions_sit_at_a_third_and_two_thirds_of_depth():
    assert reduction_layers(6) == {2, 4}
    net = TextNetwork(vocab=50, layers=6)
    assert [c.reduction for c in net.cells] == [False, False, True, False, True, False]
    ids = torch.randint(1, 50, (3, 24))
    assert net(ids).shape == (3, net.out_dim)


def test_derivation_picks_the_two_strongest_inputs_and_their_strongest_non_zero_op():
    nodes = 2
    alpha = torch.full((n_edges(nodes), len(OPS)), -5.0)
    strong = {0: "conv_3", 1: "max_pool_3", 2: "dil_conv_5", 3: "skip", 4: "avg_pool_3"}
    for edge, op in strong.items():
        alpha[edge, OPS.index(op)] = 3.0
    alpha[0, OPS.index("zero")] = 9.0  # zero never counts
    alpha[2, OPS.index("dil_conv_5")] = 4.0  # node 1's strongest input is node 0
    alpha[4, OPS.index("avg_pool_3")] = 3.5
    genotype = derive(alpha, nodes)
    assert genotype[:2] == [("conv_3", 0), ("max_pool_3", 1)]
    assert genotype[2:] == [("dil_conv_5", 0), ("avg_pool_3", 2)]


def test_the_skip_cap_guards_against_all_skip_cells():
    nodes = 3
    alpha = torch.zeros(n_edges(nodes), len(OPS))
    alpha[:, OPS.index("skip")] = 4.0  # the collapse: skip wins every edge
    alpha[:, OPS.index("conv_5")] = 2.0
    assert [op for op, _ in derive(alpha, nodes)] == ["skip"] * 6
    guarded = [op for op, _ in derive(alpha, nodes, max_skip=1)]
    assert guarded.count("skip") == 1 and guarded.count("conv_5") == 5


def test_a_derived_network_has_only_the_derived_ops():
    geno = {"normal": [("conv_3", 0), ("skip", 1), ("avg_pool_3", 0), ("conv_5", 2)],
            "reduce": [("max_pool_3", 0), ("dil_conv_3", 1), ("skip", 2), ("conv_3", 1)]}
    net = TextNetwork(vocab=50, layers=3, nodes=2, genotypes=geno)
    assert net.arch_parameters() == []
    assert len(net.cells[0].edges) == 4
    assert net(torch.randint(1, 50, (2, 20))).shape == (2, net.out_dim)


def test_search_and_evaluation_run_end_to_end_on_a_tiny_set():
    from training.moderation.train import ModerationConfig, build_data, evaluate, search
    from training.simulator.violations import CATEGORIES

    config = ModerationConfig(positives_per_category=12, negatives_per_positive=3,
                              search_epochs=1, eval_epochs=1, layers=3, nodes=2)
    data = build_data(config)  # text and price only: no image encoder in this test
    found = search(data, config, say=lambda msg: None)
    assert set(found["genotypes"]) == {"normal", "reduce"}
    assert len(found["genotypes"]["normal"]) == 2 * config.nodes
    assert all(op != "zero" for op, _ in found["genotypes"]["normal"])
    results, detectors = evaluate(data, found["genotypes"], config, say=lambda msg: None)
    assert set(detectors) == set(CATEGORIES)
    assert set(results) == set(CATEGORIES)
    for metrics in results.values():
        assert 0.0 <= metrics["nas"]["ap"] <= 1.0 and 0.0 <= metrics["baseline"]["ap"] <= 1.0
        assert metrics["nas"]["positives"] * 4 == metrics["nas"]["test"]  # the 1:3 ratio


def test_simulated_violations_have_labels_variation_and_hard_negatives():
    from training.simulator.violations import CATEGORIES, generate_violations

    listings = generate_violations(20, negatives_per_positive=5, seed=1)
    assert len(listings) == 20 * 6 * 6
    assert {x.category for x in listings} == {"", *CATEGORIES}
    assert any(x.hard_negative_of == "weapons" for x in listings)
    titles = {x.title for x in listings if x.category == "tobacco"}
    assert len(titles) > 5  # variation and misspellings, not five fixed strings


def test_second_order_search_moves_the_architecture_weights():
    from training.moderation.train import ModerationConfig, build_data, search

    config = ModerationConfig(positives_per_category=8, negatives_per_positive=2,
                              search_epochs=1, layers=3, nodes=2, second_order=True)
    data = build_data(config)
    found = search(data, config, say=lambda msg: None)
    alphas = torch.tensor(found["alpha_normal"])
    assert torch.allclose(alphas.sum(-1), torch.ones(len(alphas)))
    assert alphas.std() > 0  # moved away from the near-uniform start
