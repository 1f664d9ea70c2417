"""The ranker in PyTorch: the same architecture as the ONNX graph (``ranker_graph``).

Lists are scored in batches: dense [B, P, D], query ids [B, Q], title ids [B, P, T]
give scores [B, P]. :meth:`RankerMLP.to_weights` hands the trained parameters to
:func:`training.ranker_graph.build_onnx`, so the exported graph computes the same
function (checked by the parity test and at export).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from app.tokenizer import TOKEN_BUCKETS
from training.normalise import Normaliser
from training.ranker_graph import RankerWeights


def _mean_embedding(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    mask = (ids > 0).unsqueeze(-1).to(table.weight.dtype)
    summed = (table(ids) * mask).sum(dim=-2)
    return summed / mask.sum(dim=-2).clamp(min=1.0)


class RankerMLP(nn.Module):
    """``tokens=False`` leaves out the embedding table: the model scores dense features only
    (e.g. a LETOR file) and carries nothing it does not use."""

    def __init__(self, norm: Normaliser, embed_dim: int = 32, hidden: tuple[int, ...] = (128, 64),
                 buckets: int = TOKEN_BUCKETS, tokens: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(buckets, embed_dim, padding_idx=0) if tokens else None
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
        self.register_buffer("log_columns", torch.as_tensor(norm.log, dtype=torch.bool))
        self.register_buffer("mu", torch.as_tensor(norm.mu, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(norm.scale, dtype=torch.float32))
        sizes = (len(norm.mu) + (3 * embed_dim if tokens else 0), *hidden, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def normalise(self, dense: torch.Tensor) -> torch.Tensor:
        """As the ONNX graph: sign(x) * log(1 + |x|) on the log columns, then (x - mu) * scale."""
        slog = torch.sign(dense) * torch.log(1.0 + torch.abs(dense))
        return (torch.where(self.log_columns, slog, dense) - self.mu) * self.scale

    def forward(self, dense: torch.Tensor, query_ids: torch.Tensor | None = None,
                title_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.normalise(dense)
        if self.embedding is not None:
            t = _mean_embedding(self.embedding, title_ids)  # [B, P, d]
            q = _mean_embedding(self.embedding, query_ids).unsqueeze(1).expand_as(t)
            x = torch.cat([x, q, t, q * t], dim=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)

    def to_weights(self) -> RankerWeights:
        def np32(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        return RankerWeights(
            norm=Normaliser(self.log_columns.cpu().numpy(), np32(self.mu), np32(self.scale)),
            embedding=None if self.embedding is None else np32(self.embedding.weight),
            layers=[(np32(layer.weight).T.copy(), np32(layer.bias)) for layer in self.layers],
        )


def standardise_scores(model: RankerMLP, scores: np.ndarray, mask: np.ndarray) -> dict:
    """Rescale the last layer so scores have mean 0 and unit within-list spread.

    Ranking is unchanged. A fixed score scale gives the image-score blend weight the same
    meaning for every model version, and keeps float32 rounding of ONNX and torch far
    below the parity tolerance (raw ApproxNDCG scores grow to hundreds).
    """
    real = np.where(mask, scores, np.nan).astype(np.float64)
    spread = float(np.nanstd(real - np.nanmean(real, axis=1, keepdims=True)))
    scale = spread if spread > 0 else 1.0
    offset = float(np.nanmean(real))
    last = model.layers[-1]
    with torch.no_grad():
        last.weight /= scale
        last.bias.sub_(offset).div_(scale)
    return {"score_offset": offset, "score_scale": scale}
