"""Training the torch ranker on lists, and scoring / evaluating any ranker on lists."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from training.dataset import Lists
from training.losses import approx_ndcg_loss, listnet_loss
from training.metrics import mean_by_query, ndcg_at_k, reciprocal_rank
from training.normalise import Normaliser, Transform
from training.ranker_torch import RankerMLP


class FewStepsWarning(UserWarning):
    """The training data gives few optimiser steps per epoch (see :func:`fit`)."""


@dataclass(frozen=True)
class FitConfig:
    """Training options. Length and learning-rate schedule are counted in optimiser steps.

    What each default was chosen on (never on a test split):

    - ``epochs`` 12, ``batch_lists`` 64, ``lr`` 2e-3, ``weight_decay``, ``embed_dim``,
      ``hidden``: kept from the first simulator pipeline (commit bf9db85), which records
      no tuning for them: common MLP/Adam values, not fitted to any data set or split.
      ``temperature`` 1.0 is allRank's ApproxNDCG default.
    - ``min_steps`` 1000: a floor so a small data set (tens of queries, one or two batches
      an epoch) still gets about as many Adam steps as a simulator run of a few thousand
      lists (12 epochs x ~80 batches). A round number from that count, not tuned on any
      data set yet (issue 17 asks for that check across data sets).
    - ``patience_steps`` 300 and ``warmup_steps`` 50: conventional proportions of
      ``min_steps`` (early stopping after ~30 % of the floor without a validation gain;
      ~5 % warm-up), not tuned.
    - ``final_lr_ratio`` 0.1: cosine decay to a tenth of ``lr``, a common default.
    - ``few_steps_per_epoch`` 10: below this an epoch is too coarse a unit to stop on,
      which is what the :class:`FewStepsWarning` says.
    - ``transform`` "auto": the signed log1p on highly skewed columns (|skewness| > 1, a
      textbook convention) where it lowers the skew (:mod:`training.normalise`); not tuned.
    """

    loss: str = "approx_ndcg"  # or "listnet"
    temperature: float = 1.0  # ApproxNDCG smooth-rank temperature (1 / alpha; allRank default)
    epochs: int = 12  # at least this many passes, more if min_steps needs them
    batch_lists: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-6
    embed_dim: int = 32
    hidden: tuple[int, ...] = (128, 64)
    ips: bool = False  # weight gains by 1 / P(examined at the shown position)
    ips_max_weight: float = 20.0
    seed: int = 0
    min_steps: int = 1000  # training runs at least this many optimiser steps
    max_steps: int | None = None  # hard upper bound on optimiser steps (None: no bound)
    # keep the best validation epoch and stop early; off where the validation labels
    # cannot choose (position-biased clicks: BENCHMARKS, "Click-label validation misleads")
    select_best: bool = True
    patience_steps: int | None = 300  # stop after this many steps without a valid gain
    warmup_steps: int = 50  # linear learning-rate warm-up
    final_lr_ratio: float = 0.1  # cosine decay from lr to lr * final_lr_ratio at the last step
    few_steps_per_epoch: int = 10  # warn (FewStepsWarning) when an epoch has fewer steps
    transform: Transform = "auto"  # per-column input transform (training.normalise)

    def describe(self) -> dict:
        return asdict(self)


def planned_steps(n_lists: int, config: FitConfig) -> tuple[int, int, int]:
    """(steps per epoch, epochs, total steps) for ``n_lists`` training lists.

    Total steps = max(epochs x steps per epoch, ``min_steps``), capped by ``max_steps``;
    the number of epochs is what it takes to reach it (the last one may be cut short).
    """
    per_epoch = max(1, math.ceil(n_lists / config.batch_lists))
    total = max(config.epochs * per_epoch, config.min_steps)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    total = max(total, 1)
    return per_epoch, math.ceil(total / per_epoch), total


def learning_rate(step: int, total: int, config: FitConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total``: linear warm-up
    over ``warmup_steps``, then cosine decay to ``lr * final_lr_ratio``."""
    warm = min(config.warmup_steps, max(total - 1, 0))
    if step < warm:
        return config.lr * (step + 1) / warm
    span = max(total - warm - 1, 1)
    progress = min((step - warm) / span, 1.0)
    floor = config.lr * config.final_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ips_weights(lists: Lists, propensity: np.ndarray, max_weight: float) -> np.ndarray:
    """1 / propensity of each slot's shown position, capped at ``max_weight``."""
    pos = np.clip(lists.position, 1, len(propensity) - 1)
    return np.minimum(1.0 / propensity[pos], max_weight).astype(np.float32)


def _batch(lists: Lists, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(lists.dense[rows]),
            torch.from_numpy(lists.query_ids[rows].astype(np.int64)),
            torch.from_numpy(lists.title_ids[rows].astype(np.int64)))


def predict(model: RankerMLP, lists: Lists, batch_lists: int = 256) -> np.ndarray:
    """Scores [L, P] (padding slots get -inf)."""
    model.eval()
    out = np.empty(lists.labels.shape, np.float32)
    with torch.no_grad():
        for start in range(0, len(lists), batch_lists):
            rows = np.arange(start, min(start + batch_lists, len(lists)))
            out[rows] = model(*_batch(lists, rows)).numpy()
    return np.where(lists.mask, out, -np.inf)


def evaluate(scores: np.ndarray, relevance: np.ndarray, lists: Lists, k: int = 10,
             mrr_threshold: float = 3.0) -> dict:
    """nDCG@k and MRR by query (lists without relevant items are skipped and counted)."""
    ndcg, rr = [], []
    for i in range(len(lists)):
        m = lists.mask[i]
        ndcg.append(ndcg_at_k(scores[i, m], relevance[i, m], k))
        rr.append(reciprocal_rank(scores[i, m], relevance[i, m], mrr_threshold))
    mean_ndcg, n_queries, skipped = mean_by_query(ndcg, lists.queries)
    mean_rr, _, _ = mean_by_query(rr, lists.queries)
    return {f"ndcg@{k}": round(mean_ndcg, 4), "mrr": round(mean_rr, 4), "queries": n_queries,
            "lists": len(lists), "lists_without_relevant": skipped}


def fit(train: Lists, config: FitConfig, labels: np.ndarray | None = None,
        propensity: np.ndarray | None = None, valid: Lists | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[RankerMLP, list[dict]]:
    """Train a :class:`RankerMLP`; ``labels`` overrides ``train.labels`` (e.g. true grades).

    Runs :func:`planned_steps` optimiser steps on the :func:`learning_rate` schedule. With
    ``valid``, nDCG@10 on ``valid.labels`` is measured after every epoch; training stops
    early once ``patience_steps`` steps pass without a gain (but not before ``min_steps``
    steps, which a small, noisy validation split would otherwise cut short), and the
    returned model has the weights of the best validation epoch (marked ``"best": True``
    in the history), not the last. Without ``valid``, or with ``select_best`` off (the
    validation curve is then only reported), the last weights are kept. A :class:`FewStepsWarning`
    is issued when an epoch has fewer than ``few_steps_per_epoch`` steps.

    Returns the model and a history row per epoch (loss, optimiser steps so far, learning
    rate at the end of the epoch, valid nDCG@10, query-document pairs per second).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    labels = train.labels if labels is None else labels
    weights = None
    if config.ips:
        if propensity is None:
            raise ValueError("IPS needs propensities")
        weights = ips_weights(train, propensity, config.ips_max_weight)
    if config.loss not in ("approx_ndcg", "listnet"):
        raise ValueError(f"unknown loss {config.loss!r}")
    per_epoch, epochs, total_steps = planned_steps(len(train), config)
    if per_epoch < config.few_steps_per_epoch:
        warnings.warn(
            f"{len(train)} training lists give only {per_epoch} optimiser step(s) an epoch "
            f"(batch_lists={config.batch_lists}); running {epochs} epochs to reach "
            f"{total_steps} steps; validation runs once an epoch (every {per_epoch} step(s))",
            FewStepsWarning, stacklevel=2)
    norm = Normaliser.fit(train.dense[train.mask], config.transform)
    tokens = bool(train.title_ids.any() or train.query_ids.any())  # else no embedding table
    model = RankerMLP(norm, config.embed_dim, config.hidden, tokens=tokens)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    history: list[dict] = []
    step = 0
    best_ndcg, best_step, best_index, best_state = -math.inf, 0, -1, None
    for epoch in range(1, epochs + 1):
        model.train()
        t0, total, n_batches, pairs = time.perf_counter(), 0.0, 0, 0
        order = rng.permutation(len(train))
        for start in range(0, len(train), config.batch_lists):
            if step >= total_steps:
                break
            rows = order[start: start + config.batch_lists]
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, total_steps, config)
            scores = model(*_batch(train, rows))
            y = torch.from_numpy(labels[rows])
            mask = torch.from_numpy(train.mask[rows])
            w = None if weights is None else torch.from_numpy(weights[rows])
            if config.loss == "approx_ndcg":
                loss = approx_ndcg_loss(scores, y, mask, config.temperature, w)
            else:
                loss = listnet_loss(scores, y, mask, w)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.detach().item()
            n_batches += 1
            step += 1
            pairs += int(train.mask[rows].sum())
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "step": step, "lr": round(optimiser.param_groups[0]["lr"], 8),
               "loss": round(total / max(n_batches, 1), 5),
               "pairs_per_s": round(pairs / max(seconds, 1e-9))}
        stop = False
        if valid is not None and len(valid):
            ndcg = evaluate(predict(model, valid), valid.labels, valid)["ndcg@10"]
            row["valid_ndcg@10"] = ndcg
            if config.select_best and ndcg > best_ndcg:
                best_ndcg, best_step, best_index = ndcg, step, len(history)
                best_state = copy.deepcopy(model.state_dict())
            elif (config.select_best and config.patience_steps is not None
                  and step >= config.min_steps and step - best_step >= config.patience_steps):
                stop = True  # never before min_steps: the minimum is a minimum
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if stop or step >= total_steps:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        history[best_index]["best"] = True
    model.eval()
    return model, history
