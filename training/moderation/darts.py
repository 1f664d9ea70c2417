"""DARTS over 1-D token sequences: the text branch of the prohibited-item detector.

Search space (Liu et al., DARTS, 2019, on sequences instead of images):

- candidate operations :data:`OPS` on [N, C, L]: ``conv_3``, ``conv_5``, ``dil_conv_3``,
  ``dil_conv_5`` (dilation 2), ``max_pool_3``, ``avg_pool_3``, ``skip``, ``zero``;
- a cell takes the outputs of the two previous cells, has ``nodes`` intermediate nodes,
  each the sum of one :class:`MixedOp` per earlier state (the softmax over the
  architecture weights of that edge mixes every op), and outputs the concatenated nodes
  projected back to C channels;
- a *normal* cell keeps the length; a *reduction* cell halves it (its edges from the two
  inputs run with stride 2); reduction cells sit at 1/3 and 2/3 of the depth;
- all normal cells share one architecture matrix, all reduction cells another.

:func:`derive` turns the weights into a discrete cell (per node: the two inputs whose
strongest non-zero op weighs most, with that op). :class:`DerivedNetwork` is the same
stack with only the derived ops, trained from scratch in the evaluation phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

OPS = ("conv_3", "conv_5", "dil_conv_3", "dil_conv_5", "max_pool_3", "avg_pool_3",
       "skip", "zero")


class ConvOp(nn.Module):
    """ReLU -> (depthwise-separable) conv -> batch norm, 'same' padding."""

    def __init__(self, c: int, kernel: int, dilation: int, stride: int):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(c, c, kernel, stride, pad, dilation=dilation, groups=c, bias=False),
            nn.Conv1d(c, c, 1, bias=False),
            nn.BatchNorm1d(c, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """The identity at stride 2: average pairs, then a 1x1 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.AvgPool1d(2, 2, ceil_mode=True),
                                nn.Conv1d(c, c, 1, bias=False), nn.BatchNorm1d(c, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name in ("conv_3", "conv_5"):
        return ConvOp(c, int(name[-1]), 1, stride)
    if name in ("dil_conv_3", "dil_conv_5"):
        return ConvOp(c, int(name[-1]), 2, stride)
    if name == "max_pool_3":
        return nn.MaxPool1d(3, stride, 1)
    if name == "avg_pool_3":
        return nn.AvgPool1d(3, stride, 1, count_include_pad=False)
    if name == "skip":
        return nn.Identity() if stride == 1 else FactorizedReduce(c)
    if name == "zero":
        return Zero(stride)
    raise ValueError(f"unknown op {name!r}")


class MixedOp(nn.Module):
    """Every candidate op on one edge, mixed by the softmax of the edge's weights."""

    def __init__(self, c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, stride) for name in OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))


def n_edges(nodes: int) -> int:
    """Edges of a cell: node i has 2 + i inputs (the two cell inputs and earlier nodes)."""
    return sum(2 + i for i in range(nodes))


class Cell(nn.Module):
    """A cell whose edges are either mixed (search) or fixed ops (``genotype`` given)."""

    def __init__(self, c: int, nodes: int, reduction: bool, reduce_prev: bool,
                 genotype: list[tuple[str, int]] | None = None):
        super().__init__()
        self.reduction, self.nodes = reduction, nodes
        # s0 comes from two cells back: halve it too when the previous cell reduced
        self.pre0 = FactorizedReduce(c) if reduce_prev else nn.Identity()
        self.edges = nn.ModuleList()
        self.genotype = genotype
        if genotype is None:
            for i in range(nodes):
                for j in range(2 + i):
                    self.edges.append(MixedOp(c, 2 if reduction and j < 2 else 1))
        else:  # two (op, input) per node
            for name, j in genotype:
                self.edges.append(make_op(name, c, 2 if reduction and j < 2 else 1))
        self.project = nn.Sequential(nn.Conv1d(c * nodes, c, 1, bias=False),
                                     nn.BatchNorm1d(c, affine=False))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        states = [self.pre0(s0), s1]
        if self.genotype is None:
            k = 0
            for _ in range(self.nodes):
                states.append(sum(self.edges[k + j](h, weights[k + j])
                                  for j, h in enumerate(states)))
                k += len(states) - 1
        else:
            for i in range(self.nodes):
                (_, a), (_, b) = self.genotype[2 * i], self.genotype[2 * i + 1]
                states.append(self.edges[2 * i](states[a]) + self.edges[2 * i + 1](states[b]))
        return self.project(torch.cat(states[2:], dim=1))


def reduction_layers(layers: int) -> set[int]:
    return {layers // 3, 2 * layers // 3}


class TextNetwork(nn.Module):
    """Token ids [N, L] -> text features [N, C]: embedding, stem, cells, pooling.

    ``genotypes`` None: the search network (mixed ops, architecture weights
    ``alpha_normal`` / ``alpha_reduce``); else {"normal": ..., "reduce": ...}, the
    derived network for the evaluation phase.
    """

    def __init__(self, vocab: int, dim: int = 32, c: int = 16, layers: int = 5,
                 nodes: int = 3, genotypes: dict | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.stem = nn.Sequential(nn.Conv1d(dim, c, 3, padding=1, bias=False),
                                  nn.BatchNorm1d(c))
        self.out_dim = c
        reductions = reduction_layers(layers)
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduce = i in reductions
            geno = None if genotypes is None else genotypes["reduce" if reduce else "normal"]
            self.cells.append(Cell(c, nodes, reduce, (i - 1) in reductions, geno))
        self.searching = genotypes is None
        if self.searching:
            self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges(nodes), len(OPS)))
            self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges(nodes), len(OPS)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce] if self.searching else []

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).float()[:, None, :]
        x = self.stem(self.embed(ids).transpose(1, 2) * mask)
        s0 = s1 = x
        for cell in self.cells:
            weights = None
            if self.searching:
                alpha = self.alpha_reduce if cell.reduction else self.alpha_normal
                weights = F.softmax(alpha, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        return s1.mean(dim=2)


@dataclass(frozen=True)
class Derived:
    normal: list[tuple[str, int]]
    reduce: list[tuple[str, int]]

    def as_dict(self) -> dict:
        return {"normal": self.normal, "reduce": self.reduce}


def derive(alpha: torch.Tensor, nodes: int, max_skip: int | None = None
           ) -> list[tuple[str, int]]:
    """The discrete cell of architecture weights ``alpha`` [edges, ops]: per node the two
    inputs whose strongest non-zero op has the largest softmax weight, with that op.

    ``max_skip`` caps the skip connections of the cell (P-DARTS's guard against the
    collapse into parameter-free cells): beyond the cap, the weakest chosen skips are
    replaced by the edge's strongest op that is neither zero nor skip.
    """
    w = F.softmax(alpha.detach(), dim=-1)
    zero, skip = OPS.index("zero"), OPS.index("skip")
    genotype: list[tuple[str, int, float]] = []
    k = 0
    for i in range(nodes):
        edges = w[k: k + 2 + i].clone()
        edges[:, zero] = -1
        best = edges.max(dim=1)
        for j in best.values.argsort(descending=True)[:2].sort().values.tolist():
            genotype.append((OPS[int(best.indices[j])], j, float(best.values[j])))
        k += 2 + i
    if max_skip is not None:
        skips = sorted((g[2], n) for n, g in enumerate(genotype) if g[0] == "skip")
        k_of_node = [sum(2 + i for i in range(n // 2)) for n in range(len(genotype))]
        for _, n in skips[: max(len(skips) - max_skip, 0)]:
            edge = w[k_of_node[n] + genotype[n][1]].clone()
            edge[[zero, skip]] = -1
            genotype[n] = (OPS[int(edge.argmax())], genotype[n][1], float(edge.max()))
    return [(name, j) for name, j, _ in genotype]
