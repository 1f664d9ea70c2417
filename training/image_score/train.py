"""The Image Score pipeline: degraded real photos -> embeddings -> heads -> metrics -> ONNX.

1. :func:`training.image_score.photos.build_photo_set`: base crops of real photos and
   their controlled degradations (classes and ordered pairs by construction); whole
   source photos are held out for the test set, so no scene is seen in training.
2. Embeddings from the pretrained encoder (frozen), timed: the scoring throughput.
3. Heads on the training embeddings: focal loss (the model), focal loss + pairwise
   margin (the pairwise option), plain cross-entropy (baseline); BRISQUE (baseline).
4. OPA on the held-out ordered pairs and CA on the held-out images; the mean score per
   degradation and strength (it must fall as the strength grows).
5. Export of encoder + head to ``models/image_score/<version>/`` with a manifest, and
   the torch-vs-ONNX Runtime parity check.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from app.image_input import SIZE, to_input
from app.progress import NoProgress
from training.export import publish_model
from training.image_score.metrics import (
    brisque_scores,
    classification_accuracy,
    classify,
    fit_thresholds,
    ordered_pair_accuracy,
)
from training.image_score.model import (
    CLASS_VALUES,
    ENCODERS,
    ImageScoreModel,
    embed,
    head_scores,
    train_head,
)
from training.image_score.photos import CLASSES, KINDS, STRENGTHS, build_photo_set

MODEL_NAME = "image_score"
PARITY_TOLERANCE = 1e-4


@dataclass
class ImageScoreConfig:
    out_dir: Path = Path("var/image-score")
    models_dir: Path = Path("models")
    version: str = ""  # default: a UTC timestamp
    encoder: str = "efficientnet-lite0"
    crops_per_source: int = 16
    test_sources: tuple[str, ...] = ("astronaut", "coffee", "coins", "hubble_deep_field")
    gamma: float = 2.0
    pairwise_weight: float = 3.0
    epochs: int = 80
    seed: int = 0
    brisque: bool = True
    export: str = "focal_pairwise"  # which head to ship; "" = none
    sources: tuple[str, ...] | None = None  # default: every shipped photo


def _subset_pairs(pairs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``pairs`` of full-set indices re-indexed into positions within ``rows``."""
    position = {int(r): i for i, r in enumerate(rows)}
    return np.array([[position[a], position[b]] for a, b in pairs.tolist()],
                    np.int64).reshape(-1, 2)


def export_onnx(model: ImageScoreModel, path: Path) -> bytes:
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(path), dynamo=False,
                      input_names=["image"], output_names=["score", "probs"],
                      dynamic_axes={"image": {0: "n"}, "score": {0: "n"}, "probs": {0: "n"}},
                      opset_version=17)
    return path.read_bytes()


def onnx_parity(model: ImageScoreModel, model_file: Path, x: np.ndarray) -> float:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (onnx_scores,) = session.run(["score"], {"image": x})
    with torch.no_grad():
        torch_scores = model(torch.from_numpy(x))[0].numpy()
    return float(np.abs(onnx_scores - torch_scores).max())


def train_image_score(config: ImageScoreConfig, say=print,
                      progress_factory=NoProgress) -> dict:
    version = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if config.export and (Path(config.models_dir) / MODEL_NAME / version).exists():
        raise FileExistsError(f"{config.models_dir}/{MODEL_NAME}/{version} exists; model "
                              "versions are immutable, pick another --version")
    out = Path(config.out_dir) / version
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    kwargs = {"sources": config.sources} if config.sources else {}
    photos = build_photo_set(config.crops_per_source, config.seed, **kwargs)
    test = np.isin(photos.source, config.test_sources)
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    say(f"{len(photos.images)} images ({len(train_rows)} train, {len(test_rows)} held out "
        f"from {sorted(set(photos.source[test_rows]))})")

    encoder = ENCODERS[config.encoder]()
    bar = progress_factory(len(photos.images), "embed")
    t0 = time.perf_counter()
    emb = embed(encoder, photos.images, progress=bar.update)
    embed_s = time.perf_counter() - t0
    bar.close()
    threads = torch.get_num_threads()
    say(f"embedded at {len(emb) / embed_s:.1f} images/s ({config.encoder}, CPU, "
        f"{threads} threads)")

    pairs_train = _subset_pairs(photos.pairs(train_rows), train_rows)
    pairs_test = _subset_pairs(photos.pairs(test_rows), test_rows)
    y_train, y_test = photos.label[train_rows], photos.label[test_rows]
    heads = {
        "focal": train_head(emb[train_rows], y_train, gamma=config.gamma,
                            epochs=config.epochs, seed=config.seed),
        "focal_pairwise": train_head(emb[train_rows], y_train, pairs_train, config.gamma,
                                     config.pairwise_weight, config.epochs, seed=config.seed),
        "cross_entropy": train_head(emb[train_rows], y_train, gamma=0.0,
                                    epochs=config.epochs, seed=config.seed),
    }
    results: dict[str, dict] = {}
    test_scores: dict[str, np.ndarray] = {}
    for name, head in heads.items():
        scores, predicted = head_scores(head, emb[test_rows])
        test_scores[name] = scores
        results[name] = {"opa": ordered_pair_accuracy(scores, pairs_test),
                         "ca": classification_accuracy(predicted, y_test)}
    if config.brisque:
        t0 = time.perf_counter()
        quality = -brisque_scores(photos.images)  # higher = better
        brisque_s = time.perf_counter() - t0
        cuts = fit_thresholds(quality[train_rows], y_train)
        test_scores["brisque"] = quality[test_rows]
        results["brisque"] = {
            "opa": ordered_pair_accuracy(quality[test_rows], pairs_test),
            "ca": classification_accuracy(classify(quality[test_rows], cuts), y_test),
            "images_per_s": round(len(photos.images) / brisque_s, 1)}
    for name, r in results.items():
        say(f"{name:>15}: OPA {r['opa']:.4f}  CA {r['ca']:.4f}")

    # mean held-out score per degradation and strength (strength 0 = the clean bases)
    by_strength = {}
    for name, scores in test_scores.items():
        clean = float(scores[photos.strength[test_rows] == 0].mean())
        by_strength[name] = {kind: [clean] + [
            float(scores[(photos.kind[test_rows] == kind)
                         & (photos.strength[test_rows] == s)].mean()) for s in STRENGTHS]
            for kind in KINDS}
    monotonic = {name: all(all(np.diff(v) < 0) for v in kinds.values())
                 for name, kinds in by_strength.items()}

    summary = {
        "version": version, "config": {**asdict(config), "out_dir": str(config.out_dir),
                                       "models_dir": str(config.models_dir)},
        "images": {"total": len(photos.images), "train": len(train_rows),
                   "test": len(test_rows), "test_pairs": len(pairs_test),
                   "train_pairs": len(pairs_train)},
        "results": results, "mean_score_by_strength": by_strength,
        "monotonic_in_strength": monotonic,
        "throughput": {"embed_images_per_s": round(len(emb) / embed_s, 1),
                       "torch_threads": threads},
    }
    if config.export:
        model = ImageScoreModel(encoder, heads[config.export])
        final = publish_model(config.models_dir, MODEL_NAME, version,
                              export_onnx(model, out / "model.onnx"), {
                                  "kind": "image_quality",
                                  "encoder": config.encoder,
                                  "input": {"name": "image", "shape": ["N", 3, SIZE, SIZE],
                                            "rgb_scale": "x / 127.5 - 1"},
                                  "outputs": {"score": "[N] in [0, 1]",
                                              "probs": f"[N, 3] over {list(CLASSES)}"},
                                  "class_values": list(CLASS_VALUES),
                                  "head": config.export,
                                  "metrics": results[config.export],
                                  "training": summary["config"]})
        x = to_input([photos.images[i] for i in test_rows[:8]])
        summary["parity_max_abs_diff"] = onnx_parity(model, final / "model.onnx", x)
        if summary["parity_max_abs_diff"] > PARITY_TOLERANCE:
            shutil.rmtree(final)
            raise RuntimeError(f"ONNX parity {summary['parity_max_abs_diff']:.2e} > "
                               f"{PARITY_TOLERANCE}; {final} removed")
        summary["model_dir"] = str(final)
        say(f"exported {final} (parity {summary['parity_max_abs_diff']:.1e})")
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
