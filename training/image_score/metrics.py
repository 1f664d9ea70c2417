"""Offline metrics of the published Image Score work, and the BRISQUE baseline.

- OPA (ordered-pair accuracy): the share of (better, worse) pairs the scores order
  correctly; a tie counts one half.
- CA (classification accuracy): the share of images whose predicted class is right.
- BRISQUE (no-reference quality; lower is better) becomes a score by negation, and a
  classifier by two thresholds fitted on the training images.
"""

from __future__ import annotations

import numpy as np


def ordered_pair_accuracy(scores: np.ndarray, pairs: np.ndarray) -> float:
    if not len(pairs):
        return float("nan")
    diff = scores[pairs[:, 0]] - scores[pairs[:, 1]]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def classification_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((predicted == labels).mean())


def brisque_scores(images) -> np.ndarray:
    """BRISQUE of each image (``brisque`` wheel, OpenCV), as given: lower is better.

    ``BRISQUE.score`` is the wheel's own steps; its feature fit returns some features as
    1-element arrays under numpy 2 and then fails, so they are flattened here first.
    """
    import cv2
    import skimage.color
    from brisque import BRISQUE

    metric = BRISQUE(url=False)
    out = []
    for image in images:
        gray = skimage.color.rgb2gray(np.asarray(image.convert("RGB")))
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        features = [np.asarray(f, np.float64).ravel()[0] for g in (gray, half)
                    for f in metric.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6)]
        out.append(metric.calculate_image_quality_score(np.array(features)))
    return np.array(out, np.float64)


def fit_thresholds(quality: np.ndarray, labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Cut points on ``quality`` (higher = better) that maximise training accuracy for
    ordered classes 0..n-1 (exhaustive over quantiles; 2 cuts for 3 classes)."""
    grid = np.quantile(quality, np.linspace(0.02, 0.98, 49))
    best, best_acc = grid[:2], -1.0
    for i, lo in enumerate(grid):
        for hi in grid[i:]:
            acc = classification_accuracy(classify(quality, np.array([lo, hi])), labels)
            if acc > best_acc:
                best, best_acc = np.array([lo, hi]), acc
    return best


def classify(quality: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return np.searchsorted(cuts, quality, side="right")
