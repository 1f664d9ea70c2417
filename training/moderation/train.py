"""Multimodal DARTS for prohibited-item detection: data, search, evaluation, baseline.

1. Data: :func:`training.simulator.violations.generate_violations`; text = the shared
   tokeniser's ids of title + description, image = the frozen Image Score encoder's
   embedding of the listing's photo, price = log price. Split 60/20/20 within each label;
   the held-out test set of a category has its positives and 3 negatives per positive
   (the published evaluation's 1:3), drawn from every other listing (hard negatives
   and other categories included).
2. Search phase on a balanced proxy set stratified over categories (every category's
   training positives and as many negatives; one output per category): first-order
   DARTS, alternating an Adam step of the architecture weights on one half with a step
   of the network weights on the other (``second_order``: the unrolled gradient). Then
   :func:`training.moderation.darts.derive` with the skip cap (the collapse guard); the
   unguarded derivation is reported too.
3. Evaluation phase: per category, the derived architecture is trained from scratch as
   a binary detector (training negatives downsampled to 3 per positive), and so is the
   fixed hand-designed baseline (:class:`TextCNN`) on the same inputs and budget.
4. Per category: average precision, precision and recall at threshold 0.9.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app import tokenizer
from app.moderation import listing_token_ids, price_input
from training.moderation.darts import TextNetwork, derive
from training.simulator.violations import CATEGORIES, PHOTO_SOURCES, generate_violations


@dataclass
class ModerationConfig:
    positives_per_category: int = 300
    negatives_per_positive: int = 10
    channels: int = 16
    layers: int = 5
    nodes: int = 3
    search_epochs: int = 6
    eval_epochs: int = 8
    max_skip: int = 2
    threshold: float = 0.9
    seed: int = 0
    second_order: bool = False  # DARTS's unrolled architecture gradient (slower)


class TextCNN(nn.Module):
    """The hand-designed baseline text branch: conv 3 and conv 5 in parallel, max-pooled."""

    def __init__(self, vocab: int, dim: int = 32, c: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(dim, c, k, padding=k // 2) for k in (3, 5))
        self.project = nn.Linear(2 * c, c)
        self.out_dim = c

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).transpose(1, 2)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return F.relu(self.project(torch.cat(pooled, dim=1)))


class Detector(nn.Module):
    """Text branch + projected image embedding + price -> one logit per output."""

    def __init__(self, text: nn.Module, image_dim: int, outputs: int = 1):
        super().__init__()
        self.text = text
        self.image = nn.Sequential(nn.Linear(image_dim, 32), nn.ReLU()) if image_dim else None
        joined = text.out_dim + (32 if image_dim else 0) + 1
        self.head = nn.Sequential(nn.Linear(joined, 32), nn.ReLU(), nn.Linear(32, outputs))

    def forward(self, ids, image, price) -> torch.Tensor:
        parts = [self.text(ids), price[:, None]]
        if self.image is not None:
            parts.append(self.image(image))
        return self.head(torch.cat(parts, dim=1))


@dataclass
class Data:
    ids: torch.Tensor
    image: torch.Tensor
    price: torch.Tensor
    category: np.ndarray  # str, "" = legitimate
    split: np.ndarray  # train / valid / test


def stratified_split(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """train / valid / test at 60/20/20 within every label (so each category is tested)."""
    split = np.empty(len(labels), dtype="<U5")
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut = np.cumsum([int(round(0.6 * len(rows))), int(round(0.2 * len(rows)))])
        split[rows[: cut[0]]], split[rows[cut[0]: cut[1]]] = "train", "valid"
        split[rows[cut[1]:]] = "test"
    return split


def build_data(config: ModerationConfig, encoder=None) -> Data:
    listings = generate_violations(config.positives_per_category,
                                   config.negatives_per_positive, seed=config.seed)
    ids = np.stack([listing_token_ids(x.title, x.description) for x in listings])
    if encoder is not None:
        from training.image_score.model import embed
        from training.image_score.photos import base_images

        rng = np.random.default_rng(config.seed)
        photos = {name: base_images(name, 1, rng)[0] for name in PHOTO_SOURCES}
        table = dict(zip(photos, embed(encoder, list(photos.values())), strict=True))
        image = np.stack([table[listing.photo] for listing in listings])
    else:
        image = np.zeros((len(listings), 0), np.float32)
    category = np.array([x.category for x in listings])
    split = stratified_split(category, np.random.default_rng(config.seed + 1))
    return Data(torch.from_numpy(ids), torch.from_numpy(image.astype(np.float32)),
                torch.from_numpy(price_input([x.price for x in listings])), category, split)


def _batches(rows: np.ndarray, size: int, rng: np.random.Generator):
    rows = rng.permutation(rows)
    return [rows[i: i + size] for i in range(0, len(rows), size)]


def search(data: Data, config: ModerationConfig, say=print) -> dict:
    """The search phase; returns the derived genotypes, weights and cost."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train = np.flatnonzero(data.split == "train")
    pos = train[data.category[train] != ""]
    neg = rng.choice(train[data.category[train] == ""], len(pos), replace=False)
    proxy = rng.permutation(np.concatenate([pos, neg]))
    half_w, half_a = proxy[: len(proxy) // 2], proxy[len(proxy) // 2:]
    target = torch.tensor(np.array([[c == k for k in CATEGORIES] for c in data.category]),
                          dtype=torch.float32)
    net = TextNetwork(tokenizer.TOKEN_BUCKETS, c=config.channels, layers=config.layers,
                      nodes=config.nodes)
    model = Detector(net, data.image.shape[1], len(CATEGORIES))
    arch = net.arch_parameters()
    arch_ids = {id(p) for p in arch}
    w_opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in arch_ids], 3e-3)
    a_opt = torch.optim.Adam(arch, 3e-3, betas=(0.5, 0.999), weight_decay=1e-3)

    def loss(rows):
        logits = model(data.ids[rows], data.image[rows], data.price[rows])
        return F.binary_cross_entropy_with_logits(logits, target[rows])

    weights = [p for p in model.parameters() if id(p) not in arch_ids]
    t0 = time.perf_counter()
    for epoch in range(config.search_epochs):
        model.train()
        for rows_w, rows_a in zip(_batches(half_w, 64, rng), _batches(half_a, 64, rng),
                                  strict=False):
            a_opt.zero_grad()
            if config.second_order:
                grads = unrolled_arch_grads(arch, weights, loss, rows_w, rows_a,
                                            w_opt.param_groups[0]["lr"])
                for a, g in zip(arch, grads, strict=True):
                    a.grad = g
            else:
                loss(rows_a).backward()  # first-order: architecture step at the current w
            a_opt.step()
            w_opt.zero_grad()
            loss(rows_w).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            w_opt.step()
        say(f"search epoch {epoch + 1}/{config.search_epochs}: loss {loss(half_a).item():.4f}")
    seconds = time.perf_counter() - t0
    genotypes = {"normal": derive(net.alpha_normal, config.nodes, config.max_skip),
                 "reduce": derive(net.alpha_reduce, config.nodes, config.max_skip)}
    unguarded = {"normal": derive(net.alpha_normal, config.nodes),
                 "reduce": derive(net.alpha_reduce, config.nodes)}
    return {"genotypes": genotypes, "unguarded": unguarded, "seconds": round(seconds, 1),
            "alpha_normal": F.softmax(net.alpha_normal, -1).tolist(),
            "alpha_reduce": F.softmax(net.alpha_reduce, -1).tolist(),
            "proxy_size": len(proxy)}


def unrolled_arch_grads(arch: list, weights: list, loss, rows_w, rows_a, xi: float
                        ) -> list[torch.Tensor]:
    """DARTS's second-order architecture gradient: the validation loss after one virtual
    step w' = w - xi * grad_w L_train, minus xi times the Hessian-vector term taken by
    finite differences at w +- eps * grad_w' L_val (Liu et al., eq. 7-8)."""
    backup = [p.detach().clone() for p in weights]

    def grads(value, params):
        return [torch.zeros_like(p) if g is None else g
                for p, g in zip(params, torch.autograd.grad(value, params, allow_unused=True),
                                strict=True)]

    def set_weights(delta_sign: float, direction) -> None:
        with torch.no_grad():
            for p, b, d in zip(weights, backup, direction, strict=True):
                p.copy_(b + delta_sign * d)

    set_weights(-xi, grads(loss(rows_w), weights))  # the virtual step
    g = grads(loss(rows_a), arch + weights)
    d_arch, d_w = g[: len(arch)], g[len(arch):]
    eps = 0.01 / (torch.sqrt(sum((d ** 2).sum() for d in d_w)) + 1e-12)
    set_weights(eps, d_w)
    plus = grads(loss(rows_w), arch)
    set_weights(-eps, d_w)
    minus = grads(loss(rows_w), arch)
    set_weights(0.0, d_w)  # restore w
    return [da - xi * (gp - gm) / (2 * eps)
            for da, gp, gm in zip(d_arch, plus, minus, strict=True)]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = labels[order].astype(float)
    if not hits.sum():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def precision_recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float
                        ) -> tuple[float, float]:
    flagged = scores >= threshold
    precision = float(labels[flagged].mean()) if flagged.any() else float("nan")
    return precision, float(flagged[labels == 1].mean())


def category_rows(data: Data, category: str, split: str, negatives_per_positive: int,
                  rng: np.random.Generator) -> np.ndarray:
    rows = np.flatnonzero(data.split == split)
    pos = rows[data.category[rows] == category]
    others = rows[data.category[rows] != category]
    neg = rng.choice(others, min(len(others), negatives_per_positive * len(pos)), replace=False)
    return np.concatenate([pos, neg])


def train_detector(make_text, data: Data, category: str, config: ModerationConfig
                   ) -> tuple[Detector, dict]:
    """Train one binary detector from scratch; its held-out metrics at 1:3."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = Detector(make_text(), data.image.shape[1], 1)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    train = category_rows(data, category, "train", 3, rng)
    y = torch.tensor(data.category == category, dtype=torch.float32)
    for _ in range(config.eval_epochs):
        model.train()
        for rows in _batches(train, 64, rng):
            logits = model(data.ids[rows], data.image[rows], data.price[rows])[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = category_rows(data, category, "test", 3, rng)
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(data.ids[test], data.image[test],
                                     data.price[test])[:, 0]).numpy()
    labels = y[test].numpy()
    precision, recall = precision_recall_at(scores, labels, config.threshold)
    return model, {"ap": average_precision(scores, labels), "precision": precision,
                   "recall": recall, "test": len(test), "positives": int(labels.sum()),
                   "scores": scores.tolist(), "labels": labels.tolist()}


def evaluate(data: Data, genotypes: dict, config: ModerationConfig, say=print
             ) -> tuple[dict, dict[str, Detector]]:
    """Per category: the derived architecture and the baseline, trained from scratch;
    (metrics, the derived detectors)."""
    def nas():
        return TextNetwork(tokenizer.TOKEN_BUCKETS, c=config.channels, layers=config.layers,
                           nodes=config.nodes, genotypes=genotypes)

    def baseline():
        return TextCNN(tokenizer.TOKEN_BUCKETS, c=config.channels)

    out, detectors = {}, {}
    for category in CATEGORIES:
        out[category] = {}
        for name, make in (("nas", nas), ("baseline", baseline)):
            t0 = time.perf_counter()
            model, metrics = train_detector(make, data, category, config)
            if name == "nas":
                detectors[category] = model
            metrics["seconds"] = round(time.perf_counter() - t0, 1)
            out[category][name] = metrics
            say(f"{category:>18} {name:>8}: AP {metrics['ap']:.3f}  P@{config.threshold} "
                f"{metrics['precision']:.3f}  R@{config.threshold} {metrics['recall']:.3f}")
    return out, detectors
