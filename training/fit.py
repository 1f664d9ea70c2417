"""Training the torch ranker on lists, and scoring / evaluating any ranker on lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from training.dataset import Lists
from training.losses import approx_ndcg_loss, listnet_loss
from training.metrics import mean_by_query, ndcg_at_k, reciprocal_rank
from training.ranker_torch import RankerMLP, standardisation


@dataclass(frozen=True)
class FitConfig:
    loss: str = "approx_ndcg"  # or "listnet"
    temperature: float = 1.0  # ApproxNDCG smooth-rank temperature (1 / alpha; allRank default)
    epochs: int = 12
    batch_lists: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-6
    embed_dim: int = 32
    hidden: tuple[int, ...] = (128, 64)
    ips: bool = False  # weight gains by 1 / P(examined at the shown position)
    ips_max_weight: float = 20.0
    seed: int = 0

    def describe(self) -> dict:
        return asdict(self)


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

    Returns the model and a history row per epoch (loss, valid nDCG@10 on engagement
    labels, query-document pairs per second).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    labels = train.labels if labels is None else labels
    weights = None
    if config.ips:
        if propensity is None:
            raise ValueError("IPS needs propensities")
        weights = ips_weights(train, propensity, config.ips_max_weight)
    mu, sigma = standardisation(train.dense, train.mask)
    model = RankerMLP(mu, sigma, config.embed_dim, config.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0, total, n_batches = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(train))
        for start in range(0, len(train), config.batch_lists):
            rows = order[start: start + config.batch_lists]
            scores = model(*_batch(train, rows))
            y = torch.from_numpy(labels[rows])
            mask = torch.from_numpy(train.mask[rows])
            w = None if weights is None else torch.from_numpy(weights[rows])
            if config.loss == "approx_ndcg":
                loss = approx_ndcg_loss(scores, y, mask, config.temperature, w)
            elif config.loss == "listnet":
                loss = listnet_loss(scores, y, mask, w)
            else:
                raise ValueError(f"unknown loss {config.loss!r}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.detach().item()
            n_batches += 1
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": round(total / max(n_batches, 1), 5),
               "pairs_per_s": round(train.pairs() / seconds)}
        if valid is not None and len(valid):
            row["valid_ndcg@10"] = evaluate(predict(model, valid), valid.labels, valid)["ndcg@10"]
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return model, history
