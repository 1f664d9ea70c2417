"""Scoring throughput of the exported Image Score model (ONNX Runtime, CPU), as the
backfill job runs it: preprocessing (resize, scale) plus the model, in batches.

    .venv/bin/python benchmarks/bench_image_score.py --model-dir models/image_score/1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish  # noqa: E402
from feature_jobs.image_backfill import ImageScorer  # noqa: E402
from training.image_score.photos import build_photo_set  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    photos = build_photo_set(crops_per_source=args.images // 16 // 15 + 1, seed=5)
    images = photos.images[: args.images]
    scorer = ImageScorer(Path(args.model_dir), threads=args.threads)
    scorer.score(images[: args.batch])  # warm-up
    rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for i in range(0, len(images), args.batch):
            scorer.score(images[i: i + args.batch])
        rates.append(len(images) / (time.perf_counter() - t0))
    publish({"images": len(images), "batch": args.batch, "threads": args.threads,
             "images_per_s_median": round(float(np.median(rates)), 1),
             "rounds": [round(r, 1) for r in rates]})


if __name__ == "__main__":
    main()
