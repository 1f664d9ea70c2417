"""Listwise ranking losses on padded batches of lists.

Every loss takes ``scores`` [B, N], graded ``labels`` [B, N] (>= 0) and ``mask`` [B, N]
(True = real item, False = padding), and returns a scalar to minimise.

- :func:`approx_ndcg_loss` is ApproxNDCG (Qin, Liu & Li 2008): nDCG with each item's rank
  replaced by a smooth one, ``1 + sum_{j != i} sigmoid((s_j - s_i) / temperature)``, and the
  loss is minus the mean approximate nDCG. Gains are ``2^label - 1``.
- :func:`listnet_loss` is the softmax (ListNet top-one) cross-entropy, as TF-Ranking's
  SoftmaxLoss: the target distribution is the labels normalised to sum 1 over the list.

Padding: padded positions take no part in anything. Their scores, labels and weights are
replaced before any arithmetic, so arbitrary (even huge or infinite) values there change
neither the loss nor the gradient, and they receive zero gradient.

Empty lists: a list with no gain (ideal DCG 0 for ApproxNDCG, label mass 0 for ListNet)
has nothing to rank and is left out of the mean. If no list in the batch qualifies the loss
is a zero that is still connected to ``scores``, so ``backward()`` works and yields zeros.

IPS weighting: ``gain_weights`` [B, N] multiplies each item's gain (ApproxNDCG) or label
(ListNet). With inverse-propensity weights (1 / probability that the item was examined)
this debiases labels from logged clicks; ``None`` means all ones. The normaliser (ideal
DCG, label mass) is computed from the *unweighted* labels: a weighted normaliser would
cancel the weight of every list with a single engaged item, and IPS would do nothing.

Memory of ApproxNDCG: the smooth ranks need every pair (i, j) of a list, a [B, N, N]
tensor, which grows with the square of the list length N (a batch of 64 lists of 1,000
items is 64 M elements, 256 MB of float32 per temporary, several temporaries and as many
again kept for backward). It is computed in blocks of item rows, [B, c, N] with
``B * c * N <= max_pair_elements`` (default :data:`PAIR_ELEMENTS`, 2^22 = 4 M elements,
16 MB of float32 per temporary), each block under activation checkpointing so backward
recomputes it instead of keeping it: peak extra memory is a few blocks, whatever N.
The limit: a block is at least one row, so with ``B * N > max_pair_elements`` a block
holds ``B * N`` elements. Lists that fit in one block are computed in one go, as before;
the blocked result is the same up to float rounding in the gradient's summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

PAIR_ELEMENTS = 1 << 22  # most elements of one [B, c, N] pairwise block in ApproxNDCG


def _masked_inputs(
    scores: Tensor, labels: Tensor, mask: Tensor, gain_weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores and labels * weights with padded positions set to 0."""
    mask = mask.bool()
    zeros = torch.zeros_like(scores)
    safe_scores = torch.where(mask, scores, zeros)
    safe_labels = torch.where(mask, labels.to(scores.dtype), zeros)
    if gain_weights is None:
        weights = mask.to(scores.dtype)
    else:
        weights = torch.where(mask, gain_weights.to(scores.dtype), zeros)
    return safe_scores, safe_labels, weights


def _mean_over(values: Tensor, keep: Tensor, safe_scores: Tensor) -> Tensor:
    """Mean of ``values`` over lists where ``keep``; a graph-connected zero if none."""
    if not bool(keep.any()):
        return safe_scores.sum() * 0.0
    return values[keep].mean()


def approx_ndcg_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    gain_weights: Tensor | None = None,
    max_pair_elements: int | None = PAIR_ELEMENTS,
) -> Tensor:
    """Minus the mean ApproxNDCG over lists with a positive ideal DCG.

    ``max_pair_elements`` bounds the pairwise block (see the module notes); ``None``
    computes all pairs at once.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mask = mask.bool()
    safe_scores, safe_labels, weights = _masked_inputs(scores, labels, mask, gain_weights)
    raw_gains = (torch.pow(2.0, safe_labels) - 1.0) * mask.to(scores.dtype)
    gains = raw_gains * weights

    n = scores.shape[-1]
    positions = torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    discounts = 1.0 / torch.log2(1.0 + positions)
    ideal = (raw_gains.sort(dim=-1, descending=True).values * discounts).sum(dim=-1)

    approx_rank = _smooth_ranks(safe_scores, mask, temperature, max_pair_elements)
    dcg = (gains / torch.log2(1.0 + approx_rank)).sum(dim=-1)

    keep = ideal > 0
    ndcg = dcg / torch.where(keep, ideal, torch.ones_like(ideal))
    return -_mean_over(ndcg, keep, safe_scores)


def pair_block_rows(batch: int, n: int, max_pair_elements: int | None) -> int:
    """Item rows per pairwise block: ``batch * rows * n <= max_pair_elements``, at least 1."""
    if max_pair_elements is None:
        return max(n, 1)
    return max(1, min(n, max_pair_elements // max(batch * n, 1)))


def _rank_block(safe_scores: Tensor, mask: Tensor, start: int, stop: int,
                temperature: float) -> Tensor:
    """Smooth ranks of items start..stop-1: 1 + sum over real j != i of
    sigmoid((s_j - s_i) / T); a [B, stop - start] tensor."""
    n = safe_scores.shape[-1]
    rows = safe_scores[..., start:stop]
    # pair[b, i, j] = sigmoid((s_j - s_i) / T), counted only for real j != i.
    pair = torch.sigmoid((safe_scores.unsqueeze(-2) - rows.unsqueeze(-1)) / temperature)
    device = safe_scores.device
    not_self = (torch.arange(start, stop, device=device).unsqueeze(-1)
                != torch.arange(n, device=device))
    others = mask.unsqueeze(-2) & not_self
    return 1.0 + torch.where(others, pair, torch.zeros_like(pair)).sum(dim=-1)


def _smooth_ranks(safe_scores: Tensor, mask: Tensor, temperature: float,
                  max_pair_elements: int | None) -> Tensor:
    n = safe_scores.shape[-1]
    step = pair_block_rows(int(safe_scores[..., :1].numel()), n, max_pair_elements)
    if step >= n:
        return _rank_block(safe_scores, mask, 0, n, temperature)
    blocks = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        if safe_scores.requires_grad:
            blocks.append(checkpoint(_rank_block, safe_scores, mask, start, stop, temperature,
                                     use_reentrant=False))
        else:
            blocks.append(_rank_block(safe_scores, mask, start, stop, temperature))
    return torch.cat(blocks, dim=-1)


def listnet_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    gain_weights: Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy against (weighted) labels over their unweighted sum.

    Lists whose label sum is 0 are left out.
    """
    mask = mask.bool()
    safe_scores, safe_labels, weights = _masked_inputs(scores, labels, mask, gain_weights)
    relevance = safe_labels * weights
    mass = safe_labels.sum(dim=-1)
    keep = mass > 0
    target = relevance / torch.where(keep, mass, torch.ones_like(mass)).unsqueeze(-1)

    lowest = torch.full_like(safe_scores, torch.finfo(scores.dtype).min)
    log_norm = torch.logsumexp(torch.where(mask, safe_scores, lowest), dim=-1, keepdim=True)
    log_prob = torch.where(mask, safe_scores - log_norm, torch.zeros_like(safe_scores))
    cross_entropy = -(target * log_prob).sum(dim=-1)
    return _mean_over(cross_entropy, keep, safe_scores)
