"""The baselines every model must beat: the engine's recall order and LightGBM lambdarank."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from app.feature_spec import DENSE_NAMES
from training.dataset import Lists

RECALL_RANK = DENSE_NAMES.index("recall_rank")


def recall_order(lists: Lists) -> np.ndarray:
    """Scores that reproduce the engine's order (higher = earlier)."""
    return np.where(lists.mask, -lists.dense[:, :, RECALL_RANK], -np.inf)


def lightgbm_lambdarank(train: Lists, labels: np.ndarray, seed: int = 0,
                        rounds: int = 300) -> lgb.LGBMRanker:
    """LambdaMART on the same dense features (no token embeddings), of any width.

    Columns are named as the service's features when there are exactly those
    (``DENSE_NAMES``), else ``f1`` .. ``fD`` (the LETOR feature numbers).
    """
    x = train.dense[train.mask]
    y = labels[train.mask].astype(int)
    groups = train.mask.sum(axis=1)
    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=rounds, learning_rate=0.05,
                           num_leaves=31, min_child_samples=50, random_state=seed, verbose=-1,
                           n_jobs=2)
    model.fit(x, y, group=groups[groups > 0], feature_name=feature_names(x.shape[1]))
    return model


def feature_names(width: int) -> list[str]:
    """The service's dense feature names for its width, else ``f1`` .. ``f{width}``."""
    if width == len(DENSE_NAMES):
        return list(DENSE_NAMES)
    return [f"f{i}" for i in range(1, width + 1)]


def lightgbm_scores(model: lgb.LGBMRanker, lists: Lists) -> np.ndarray:
    out = np.full(lists.labels.shape, -np.inf, np.float32)
    out[lists.mask] = model.booster_.predict(lists.dense[lists.mask])
    return out
