"""Search-phase cost and per-category detector quality: DARTS-derived vs the baseline.

    .venv/bin/python benchmarks/bench_moderation.py --positives 150 --layers 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.image_score.model import ENCODERS  # noqa: E402
from training.moderation.train import ModerationConfig, build_data, evaluate, search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positives", type=int, default=150)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--search-epochs", type=int, default=4)
    ap.add_argument("--eval-epochs", type=int, default=8)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "moderation" /
                                         "results.json"))
    args = ap.parse_args()
    config = ModerationConfig(positives_per_category=args.positives, layers=args.layers,
                              search_epochs=args.search_epochs, eval_epochs=args.eval_epochs)
    t0 = time.perf_counter()
    data = build_data(config, ENCODERS["efficientnet-lite0"]())
    data_s = time.perf_counter() - t0
    found = search(data, config)
    print(json.dumps({"genotypes": found["genotypes"], "unguarded": found["unguarded"]}))
    results, _ = evaluate(data, found["genotypes"], config)
    for per in results.values():
        for metrics in per.values():
            metrics.pop("scores"), metrics.pop("labels")
    out = {"config": vars(config), "listings": len(data.category), "data_seconds":
           round(data_s, 1), "search": {k: v for k, v in found.items()
                                        if not k.startswith("alpha")},
           "alpha_normal": found["alpha_normal"], "results": results,
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, CPU, "
                      f"{torch.get_num_threads()} threads"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
