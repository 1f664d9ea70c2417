"""The whole ranking-training pipeline: logs -> lists -> models -> evaluation -> ONNX.

1. Simulate a marketplace into ``sim_dir`` unless its files are already there.
2. Build graded, cleaned, point-in-time lists (:mod:`training.dataset`); split by query.
3. Estimate position-bias propensities from the shuffled pages.
4. Train and evaluate on held-out queries with the simulator's true relevance:
   recall order, LightGBM lambdarank, the MLP with ApproxNDCG (with and without IPS),
   the MLP with the softmax loss, and the MLP trained on true labels (the ceiling).
5. Write the report (``report.md`` + plots) and export the chosen MLP to
   ``models/ltr/<version>/`` after checking ONNX Runtime against torch.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from app.progress import NoProgress
from app.scoring import load_model
from training.baselines import lightgbm_lambdarank, lightgbm_scores, recall_order
from training.dataset import (
    LabelConfig,
    Lists,
    LogData,
    load_logs,
    load_served_logs,
    to_lists,
    truth_grid,
)
from training.export import write_model
from training.fit import FitConfig, evaluate, fit, planned_steps, predict
from training.propensity import Propensity, estimate_propensity
from training.ranker_torch import RankerMLP, standardise_scores
from training.report import write_report
from training.simulator.run import FILES, SimConfig, simulate

MODEL_NAME = "ltr"
PARITY_TOLERANCE = 1e-5
# name -> (FitConfig overrides, labels); labels "engagement" or "truth" (the ceiling only)
MLP_VARIANTS: dict[str, tuple[dict, str]] = {
    "mlp_approx_ndcg": ({}, "engagement"),
    "mlp_approx_ndcg_ips": ({"ips": True}, "engagement"),
    "mlp_listnet": ({"loss": "listnet"}, "engagement"),
    "mlp_true_labels (ceiling)": ({}, "truth"),
}


@dataclass
class LtrConfig:
    sim_dir: Path = Path("var/sim")
    out_dir: Path = Path("var/ltr")
    models_dir: Path = Path("models")
    version: str = ""  # default: a UTC timestamp
    sim: SimConfig = field(default_factory=SimConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    export: str = "mlp_approx_ndcg_ips"
    threads: int = 2


def onnx_scores(model_dir: Path, lists: Lists) -> np.ndarray:
    """Scores [L, P] of a model directory through the service's loader (padding -inf)."""
    served = load_model(model_dir, device="cpu")
    out = np.full(lists.labels.shape, -np.inf, np.float32)
    for i in range(len(lists)):
        m = lists.mask[i]
        out[i, m] = served.score(lists.dense[i, m], lists.query_ids[i: i + 1].astype(np.int64),
                                 lists.title_ids[i, m].astype(np.int64))
    return out


def parity(model: RankerMLP, lists: Lists, model_dir: Path, n: int = 20) -> float:
    """Max |torch - ONNX Runtime| over the first ``n`` lists, through the service's loader."""
    head = lists.take(np.arange(min(n, len(lists))))
    diff = np.abs(onnx_scores(model_dir, head) - predict(model, head))
    return float(diff[head.mask].max())


def variant_config(fit: FitConfig, overrides: dict) -> FitConfig:
    """A variant's training options on simulator logs. Validation there has click labels,
    which rank debiased (IPS) and true-label models wrongly: it is reported as a curve,
    never used to pick an epoch. The feature spec declares the service's transforms, so
    inputs are only standardised."""
    return replace(fit, select_best=False, transform="none", **overrides)


def _lists(data: LogData, requests: pl.DataFrame, page_size: int | None) -> Lists:
    return to_lists(data.impressions.join(requests.select("request_id"), on="request_id"),
                    page_size)


@dataclass
class Split:
    """Lists by query split, and what evaluation and IPS need."""

    train: Lists
    valid: Lists
    test: Lists  # every genuine page of held-out queries, whatever its engagement
    train_truth: np.ndarray | None  # true grades (simulations only)
    test_truth: np.ndarray  # what the test lists are evaluated on
    propensity: Propensity

    @classmethod
    def of(cls, data: LogData, truth: pl.DataFrame | None, page_size: int | None,
           propensity: Propensity) -> Split:
        """Without ``truth`` (a real system's logs) evaluation uses the engagement labels."""
        req = data.requests
        kept = req.filter(pl.col("reason") == "")
        genuine = req.filter(~pl.col("reason").is_in(["bot", "tapper"]))
        train = _lists(data, kept.filter(pl.col("split") == "train"), page_size)
        valid = _lists(data, kept.filter(pl.col("split") == "valid"), page_size)
        test = _lists(data, genuine.filter(pl.col("split") == "test"), page_size)
        if truth is None:
            return cls(train, valid, test, None, test.labels, propensity)
        return cls(train, valid, test, truth_grid(train, truth), truth_grid(test, truth),
                   propensity)

    def describe(self) -> dict:
        return {"train_lists": len(self.train), "train_pairs": self.train.pairs(),
                "valid_lists": len(self.valid), "test_lists": len(self.test),
                "test_queries": int(len(set(self.test.queries))),
                "propensity": self.propensity.describe()}


def _new_version(config: LtrConfig) -> tuple[str, Path]:
    version = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if (Path(config.models_dir) / MODEL_NAME / version).exists():
        raise FileExistsError(f"{config.models_dir}/{MODEL_NAME}/{version} exists; model "
                              "versions are immutable, pick another --version")
    out = Path(config.out_dir) / version
    out.mkdir(parents=True, exist_ok=True)
    return version, out


def train_ltr(config: LtrConfig, say=print, progress_factory=NoProgress) -> dict:
    """Run the pipeline on simulator logs; ``progress_factory(total, desc)`` makes a
    tqdm-like bar."""
    torch.set_num_threads(config.threads)
    version, out = _new_version(config)
    sim_dir = Path(config.sim_dir)
    if not all((sim_dir / f).exists() for f in FILES):
        say(f"simulating {config.sim.listings} listings, {config.sim.sessions.sessions} "
            f"sessions -> {sim_dir}")
        bar = progress_factory(config.sim.sessions.sessions, "sessions")
        simulate(sim_dir, config.sim, bar.update)
        bar.close()
    else:
        say(f"reusing the simulated logs in {sim_dir}")

    say("building lists: labels, hygiene, point-in-time features")
    t0 = time.perf_counter()
    data = load_logs(sim_dir / "events.parquet", sim_dir / "listings.jsonl", config.labels,
                     rejects_path=out / "rejected_events.jsonl")
    sim_summary = json.loads((sim_dir / "summary.json").read_text())
    page = sim_summary["config"]["sessions"]["page_size"]
    genuine = data.requests.filter(~pl.col("reason").is_in(["bot", "tapper"]))
    shuffled = data.impressions.filter(pl.col("ranker") == "shuffle")
    split = Split.of(data, pl.read_parquet(sim_dir / "truth.parquet"), page,
                     estimate_propensity(shuffled, genuine, page))
    dataset = {**data.summary, **split.describe(),
               "build_seconds": round(time.perf_counter() - t0, 1)}
    results = {"recall_order": evaluate(recall_order(split.test), split.test_truth, split.test)}
    return _train_and_export(config, version, out, split, dataset, results,
                             {"simulation": sim_summary}, say, progress_factory)


def train_served(config: LtrConfig, served: list[Path], events: Path, truth: Path | None,
                 shipped: Path | None = None, say=print, progress_factory=NoProgress) -> dict:
    """The same pipeline on what the service served: the served-feature log joined with
    the event log by request id, position bias from the explored pages (their shuffled
    top), evaluation against ``truth`` (the traffic driver's true relevance) or, without
    it, the engagement labels of the held-out queries. ``shipped`` (a model directory,
    e.g. the one that served) is evaluated on the same lists by its model scores."""
    torch.set_num_threads(config.threads)
    version, out = _new_version(config)
    say(f"joining {len(served)} served-feature log files with {events}")
    t0 = time.perf_counter()
    data = load_served_logs(served, events, config.labels,
                            rejects_path=out / "rejected_records.jsonl",
                            event_rejects_path=out / "rejected_events.jsonl")
    imps = data.impressions
    explored = imps.filter(pl.col("explored") & (pl.col("propensity") < 1))
    if explored.is_empty():
        raise ValueError("no explored pages in the served logs: serve an exploration arm "
                         "(explore: {rate, top}) to estimate position bias")
    genuine = data.requests.filter(~pl.col("reason").is_in(["bot", "tapper"]))
    split = Split.of(data, pl.read_parquet(truth) if truth else None, None,
                     estimate_propensity(explored, genuine, int(explored["position"].max()),
                                         int(imps["position"].max())))
    dataset = {**data.summary, **split.describe(),
               "build_seconds": round(time.perf_counter() - t0, 1)}
    served_order = np.where(split.test.mask, -split.test.position.astype(np.float32), -np.inf)
    results = {"served_order": evaluate(served_order, split.test_truth, split.test)}
    if shipped is not None:
        results[f"shipped {shipped.parent.name}/{shipped.name}"] = evaluate(
            onnx_scores(shipped, split.test), split.test_truth, split.test)
    return _train_and_export(config, version, out, split, dataset, results,
                             {"served_logs": [str(p) for p in served], "events": str(events)},
                             say, progress_factory)


def _train_and_export(config: LtrConfig, version: str, out: Path, split: Split, dataset: dict,
                      results: dict[str, dict], source: dict, say, progress_factory) -> dict:
    """LightGBM and the MLP variants on ``split``, evaluated on true relevance; the chosen
    variant exported to ``models/ltr/<version>`` after the parity check; the report."""
    train, valid, test = split.train, split.valid, split.test
    say(f"lists: train {len(train)} ({train.pairs()} pairs), valid {len(valid)}, "
        f"test {len(test)}; propensity eta {split.propensity.eta:.3f}")
    t0 = time.perf_counter()
    gbm = lightgbm_lambdarank(train, train.labels, config.fit.seed)
    results["lightgbm_lambdarank"] = {
        **evaluate(lightgbm_scores(gbm, test), split.test_truth, test),
        "train_seconds": round(time.perf_counter() - t0, 1)}
    say(f"lightgbm: {results['lightgbm_lambdarank']}")

    histories: dict[str, list[dict]] = {}
    models: dict[str, RankerMLP] = {}
    for name, (overrides, labels) in MLP_VARIANTS.items():
        if labels == "truth" and split.train_truth is None:
            continue  # the ceiling needs true grades
        cfg = variant_config(config.fit, overrides)
        bar = progress_factory(planned_steps(len(train), cfg)[1], name)
        t0 = time.perf_counter()
        model, history = fit(train, cfg, labels=split.train_truth if labels == "truth" else None,
                             propensity=split.propensity.table, valid=valid,
                             on_epoch=lambda _row, b=bar: b.update(1))
        bar.close()
        models[name], histories[name] = model, history
        results[name] = {**evaluate(predict(model, test), split.test_truth, test),
                         "train_seconds": round(time.perf_counter() - t0, 1),
                         "pairs_per_s": int(np.median([h["pairs_per_s"] for h in history]))}
        say(f"{name}: {results[name]}")

    chosen = models[config.export]
    scaling = standardise_scores(chosen, predict(chosen, train), train.mask)
    training_info = {"dataset": dataset, "fit": variant_config(
        config.fit, MLP_VARIANTS[config.export][0]).describe(), **source,
        "labels": asdict(config.labels), "variant": config.export, **scaling}
    model_dir = write_model(config.models_dir, MODEL_NAME, version, chosen.to_weights(),
                            training=training_info, metrics={"test": results})
    diff = parity(chosen, test, model_dir)
    if diff > PARITY_TOLERANCE:
        shutil.rmtree(model_dir)  # never leave a model that does not match for the service
        raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (> {PARITY_TOLERANCE})")
    say(f"exported {config.export} -> {model_dir} (torch vs ONNX max |diff| {diff:.1e})")
    propensity = split.propensity
    summary = {"version": version, "model_dir": str(model_dir), "parity_max_abs_diff": diff,
               "dataset": dataset, "results": results, "histories": histories,
               "propensity": {**propensity.describe(), "click_rate": propensity.click_rate}}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_report(out, summary)
    say(f"report: {out / 'report.md'}")
    return summary
