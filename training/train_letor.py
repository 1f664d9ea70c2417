"""The ranker trainer on any LETOR / SVMlight files: read -> split -> models -> report -> ONNX.

1. Read the train, test and (optional) validation files; rejected lines are counted per
   file and written to ``rejected_lines.jsonl``. The feature width is the largest index
   in any file (absent features are 0).
2. Without a validation file, ``valid_fraction`` of the training *queries* (seeded) are
   held out for validation; the test file is never used before the final evaluation.
3. Models, all evaluated on the test file: random order, the best single feature (column
   and direction chosen on training queries), LightGBM lambdarank, and the MLP with the
   chosen loss, early-stopped on validation nDCG@10 with the best epoch's weights kept.
4. ``report.md`` (table, learning curves) and ``results.json`` in the run directory; the
   MLP exported to ``<run>/model/`` (input normalisation inside the graph, no token
   embedding table), checked against torch with ONNX Runtime.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from app.feature_spec import INPUT_DENSE
from app.progress import NoProgress
from training.baselines import lightgbm_lambdarank, lightgbm_scores
from training.dataset import Lists
from training.export import publish_dir
from training.fit import FitConfig, evaluate, fit, planned_steps, predict
from training.letor import LetorData, letor_lists, read_letor
from training.ranker_graph import build_onnx
from training.ranker_torch import RankerMLP, standardise_scores
from training.report import write_letor_report

PARITY_TOLERANCE = 1e-5
SELECTION_LISTS = 2000  # training lists the best single feature is chosen on


@dataclass
class LetorConfig:
    train: Path
    test: Path
    valid: Path | None = None
    out_dir: Path = Path("var/ltr-letor")
    version: str = ""  # the run directory's name (default: a UTC timestamp)
    fit: FitConfig = field(default_factory=FitConfig)
    valid_fraction: float = 0.2  # of the training queries, when there is no valid file
    threads: int = 2


def _widen(data: LetorData, width: int) -> LetorData:
    pad = width - data.features.shape[1]
    return replace(data, features=np.pad(data.features, ((0, 0), (0, pad)))) if pad else data


def read_files(config: LetorConfig) -> tuple[dict[str, LetorData], dict[str, list]]:
    """The splits, padded to one width, and the rejected lines of each file."""
    paths = {"train": config.train, "test": config.test}
    if config.valid is not None:
        paths["valid"] = config.valid
    data = {name: read_letor(path) for name, path in paths.items()}
    width = max(d.features.shape[1] for d in data.values())
    rejects = {name: d.rejected for name, d in data.items()}
    return {name: _widen(d, width) for name, d in data.items()}, rejects


def split_queries(data: LetorData, fraction: float, seed: int) -> tuple[LetorData, LetorData]:
    """(train, valid): a seeded ``fraction`` of the queries (at least one, and at least
    one left to train on) held out whole."""
    qids = np.unique(data.qids)
    if len(qids) < 2:
        raise ValueError("a validation split needs at least 2 training queries "
                         "(or pass a validation file)")
    n_valid = min(max(1, round(fraction * len(qids))), len(qids) - 1)
    held = np.random.default_rng(seed).choice(qids, n_valid, replace=False)
    is_valid = np.isin(data.qids, held)
    return data.take(~is_valid), data.take(is_valid)


def best_single_feature(train: Lists, seed: int) -> tuple[int, float]:
    """(column, direction +1 / -1) with the highest nDCG@10 on (a sample of) training lists."""
    rows = np.arange(len(train))
    if len(rows) > SELECTION_LISTS:
        rows = np.random.default_rng(seed).choice(rows, SELECTION_LISTS, replace=False)
    sample = train.take(np.sort(rows))
    best, choice = -np.inf, (0, 1.0)
    for column in range(sample.dense.shape[2]):
        for sign in (1.0, -1.0):
            ndcg = evaluate(sign * sample.dense[:, :, column], sample.labels, sample)["ndcg@10"]
            if ndcg > best:
                best, choice = ndcg, (column, sign)
    return choice


def onnx_parity(model: RankerMLP, lists: Lists, onnx_path: Path, n: int = 50) -> float:
    """Max |torch - ONNX Runtime| over the first ``n`` lists."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    head = lists.take(np.arange(min(n, len(lists))))
    torch_scores = predict(model, head)
    worst = 0.0
    for i in range(len(head)):
        m = head.mask[i]
        (onnx,) = session.run(None, {INPUT_DENSE: head.dense[i, m]})
        worst = max(worst, float(np.abs(onnx - torch_scores[i, m]).max()))
    return worst


def train_letor(config: LetorConfig, say=print, progress_factory=NoProgress) -> dict:
    """Run the pipeline; ``progress_factory(total, desc)`` makes a tqdm-like bar."""
    torch.set_num_threads(config.threads)
    version = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = Path(config.out_dir) / version
    if out.exists():
        raise FileExistsError(f"{out} exists; pick another --version")
    out.mkdir(parents=True)
    data, rejects = read_files(config)
    with open(out / "rejected_lines.jsonl", "w") as handle:
        for name, lines in rejects.items():
            for number, reason in lines:
                handle.write(json.dumps({"file": name, "line": number, "reason": reason}) + "\n")
    for name, lines in rejects.items():
        if lines:
            say(f"{name}: {len(lines)} lines rejected (first: line {lines[0][0]}: "
                f"{lines[0][1]}), see {out / 'rejected_lines.jsonl'}")
    if "valid" in data:
        train_data, valid_data = data["train"], data["valid"]
        valid_source = str(config.valid)
    else:
        train_data, valid_data = split_queries(data["train"], config.valid_fraction,
                                               config.fit.seed)
        valid_source = f"{config.valid_fraction:g} of the training queries (seed {config.fit.seed})"
    train, valid, test = (letor_lists(d) for d in (train_data, valid_data, data["test"]))
    dataset = {
        "files": {"train": str(config.train), "valid": valid_source, "test": str(config.test)},
        "features": int(train.dense.shape[2]),
        **{f"{name}_queries": len(lists) for name, lists in
           (("train", train), ("valid", valid), ("test", test))},
        **{f"{name}_rows": lists.pairs() for name, lists in
           (("train", train), ("valid", valid), ("test", test))},
        "rejected_lines": {name: len(lines) for name, lines in rejects.items()},
    }
    say(f"queries: train {len(train)}, valid {len(valid)}, test {len(test)}; "
        f"{dataset['features']} features")

    rng = np.random.default_rng(config.fit.seed)
    results: dict[str, dict] = {
        "random": evaluate(rng.random(test.labels.shape), test.labels, test)}
    column, sign = best_single_feature(train, config.fit.seed)
    direction = "" if sign > 0 else " (descending)"
    results[f"best single feature: f{column + 1}{direction}"] = evaluate(
        sign * test.dense[:, :, column], test.labels, test)
    t0 = time.perf_counter()
    gbm = lightgbm_lambdarank(train, train.labels, config.fit.seed)
    results["lightgbm_lambdarank"] = {**evaluate(lightgbm_scores(gbm, test), test.labels, test),
                                      "train_seconds": round(time.perf_counter() - t0, 1)}
    say(f"lightgbm: {results['lightgbm_lambdarank']}")

    name = f"mlp_{config.fit.loss}"
    bar = progress_factory(planned_steps(len(train), config.fit)[1], name)
    t0 = time.perf_counter()
    model, history = fit(train, config.fit, valid=valid, on_epoch=lambda _row: bar.update(1))
    bar.close()
    results[name] = {**evaluate(predict(model, test), test.labels, test),
                     "train_seconds": round(time.perf_counter() - t0, 1),
                     "steps": history[-1]["step"],
                     "pairs_per_s": int(np.median([h["pairs_per_s"] for h in history]))}
    say(f"{name}: {results[name]}")

    scaling = standardise_scores(model, predict(model, train), train.mask)
    weights = model.to_weights()
    graph = build_onnx(weights, "bestmatch:letor").SerializeToString()
    model_dir = publish_dir(out / "model", graph, {
        "kind": "letor_ranker", "features": dataset["features"],
        "normalisation": weights.norm.describe(),
        "architecture": {"layers": [list(w.shape) for w, _ in weights.layers]},
        "fit": config.fit.describe(), "dataset": dataset, **scaling,
        "metrics": {"test": results}})
    diff = onnx_parity(model, test, model_dir / "model.onnx")
    if diff > PARITY_TOLERANCE:
        shutil.rmtree(model_dir)
        raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (> {PARITY_TOLERANCE})")
    say(f"exported {name} -> {model_dir} (torch vs ONNX max |diff| {diff:.1e})")
    summary = {"version": version, "model_dir": str(model_dir), "parity_max_abs_diff": diff,
               "dataset": dataset, "normalisation": weights.norm.describe(),
               "results": results, "histories": {name: history}}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_letor_report(out, summary)
    say(f"report: {out / 'report.md'}")
    return summary
