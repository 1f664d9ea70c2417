"""``bestmatch train moderation``: data -> search -> derive -> evaluate -> report -> export.

The report (``OUT/VERSION/report.md``) has the per-category table of AP and precision
/ recall at the threshold for the derived architecture and the baseline, the derived
cells written out node by node, the search cost, and the PR curves (``pr_curves.png``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from training.image_score.model import ENCODERS
from training.moderation.export import encoder_onnx, export_detectors, parity
from training.moderation.train import ModerationConfig, build_data, evaluate, search

PARITY_TOLERANCE = 1e-4


def describe_cell(genotype: list[tuple[str, int]]) -> list[str]:
    """One line per node: ``node 2 = dil_conv_5(c_k-2) + conv_3(c_k-1)``."""
    def state(j: int) -> str:
        return ("c_{k-2}", "c_{k-1}")[j] if j < 2 else f"node {j}"

    return [f"node {2 + i} = {a}({state(ja)}) + {b}({state(jb)})"
            for i, ((a, ja), (b, jb)) in enumerate(zip(genotype[::2], genotype[1::2],
                                                       strict=True))]


def _pr_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharex=True, sharey=True)
    for ax, (category, per) in zip(axes.ravel(), results.items(), strict=False):
        for name, metrics in per.items():
            scores, labels = np.array(metrics["scores"]), np.array(metrics["labels"])
            order = np.argsort(-scores)
            hits = labels[order]
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            recall = np.cumsum(hits) / max(hits.sum(), 1)
            ax.plot(recall, precision, label=f"{name} (AP {metrics['ap']:.3f})")
        ax.set_title(category)
        ax.legend(loc="lower left", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: Path, config: ModerationConfig, found: dict, results: dict) -> None:
    lines = ["# Prohibited-item detection: DARTS vs baseline", "",
             f"Search: {found['seconds']} s on CPU, proxy set {found['proxy_size']} listings; "
             f"threshold {config.threshold}; held-out ratio 1:3.", "",
             "| category | model | AP | precision | recall | test (positives) |",
             "|---|---|---|---|---|---|"]
    for category, per in results.items():
        for name, m in per.items():
            lines.append(f"| {category} | {name} | {m['ap']:.3f} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['test']} ({m['positives']}) |")
    for kind in ("normal", "reduce"):
        lines += ["", f"## Derived {kind} cell (skip cap {config.max_skip})", ""]
        lines += [f"    {line}" for line in describe_cell(found["genotypes"][kind])]
        if found["unguarded"][kind] != found["genotypes"][kind]:
            lines += ["", "Without the cap:", ""]
            lines += [f"    {line}" for line in describe_cell(found["unguarded"][kind])]
    lines += ["", "![PR curves](pr_curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    _pr_curves(results, out / "pr_curves.png")


def train_moderation(config: ModerationConfig, out_dir: Path, models_dir: Path, version: str,
                     encoder_name: str = "efficientnet-lite0", say=print) -> dict:
    version = version or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = Path(out_dir) / version
    out.mkdir(parents=True, exist_ok=True)
    encoder = ENCODERS[encoder_name]()
    data = build_data(config, encoder)
    found = search(data, config, say)
    results, detectors = evaluate(data, found["genotypes"], config, say)
    write_report(out, config, found, results)
    metrics = {c: {k: {m: v[m] for m in ("ap", "precision", "recall")} for k, v in per.items()}
               for c, per in results.items()}
    model_dir = export_detectors(models_dir, version, encoder_onnx(encoder), encoder.dim,
                                 detectors, {
        "threshold": config.threshold, "encoder": encoder_name,
        "genotypes": found["genotypes"], "config": asdict(config), "metrics": metrics})
    from training.image_score.photos import base_images

    photos = base_images("coins", 2, np.random.default_rng(0))
    worst = parity(model_dir, encoder, detectors, ["現金 1万円 新札", "ナイキ スニーカー"],
                   ["", ""], [10000.0, 8000.0], photos)
    if worst > PARITY_TOLERANCE:
        shutil.rmtree(model_dir)
        raise RuntimeError(f"ONNX parity {worst:.2e} > {PARITY_TOLERANCE}; {model_dir} removed")
    summary = {"version": version, "model_dir": str(model_dir), "search": found,
               "results": metrics,
               "parity_max_abs_diff": worst}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"exported {model_dir} (parity {worst:.1e}); report {out / 'report.md'}")
    return summary


def add_category(base_dir: Path, name: str, labelled: Path, models_dir: Path, version: str,
                 config: ModerationConfig | None = None, say=print) -> dict:
    """A new category, from labelled data to a deployable detector, in one call.

    ``labelled``: JSON lines ``{"title", "description", "price", "photo": path,
    "label": 1 | 0}``. The base bundle's derived architecture is trained from scratch on
    60% of the rows, evaluated at 1:3 on a held-out 20%, and exported with the base's
    detectors (unchanged) as ``models_dir/moderation/version``; point
    ``BESTMATCH_MODERATION_MODEL_DIR`` at it to serve it.
    """
    import orjson
    import torch
    from PIL import Image

    from app import tokenizer
    from app.image_input import to_input
    from app.moderation import Moderator, listing_token_ids, price_input
    from app.scoring import MANIFEST
    from training.moderation.darts import TextNetwork
    from training.moderation.train import Data, stratified_split, train_detector

    config = config or ModerationConfig()
    base = json.loads((base_dir / MANIFEST).read_text())
    if name in base["categories"]:
        raise ValueError(f"{name} is already a category of {base_dir}")
    rows = [orjson.loads(line) for line in labelled.read_bytes().splitlines() if line.strip()]
    images = [Image.open(r["photo"]).convert("RGB") for r in rows]
    # the served encoder itself, so the new detector sees exactly what it will be served
    (emb,) = Moderator(base_dir).encoder.run(None, {"image": to_input(images)})
    labels = np.array([name if r["label"] else "" for r in rows])
    split = stratified_split(labels, np.random.default_rng(config.seed + 1))
    data = Data(torch.from_numpy(np.stack([listing_token_ids(r["title"],
                                                             r.get("description", ""))
                                           for r in rows])),
                torch.from_numpy(emb), torch.from_numpy(price_input([r["price"] for r in rows])),
                labels, split)
    cfg = ModerationConfig(**{**asdict(config), **{k: base["config"][k] for k in
                                                   ("channels", "layers", "nodes")}})
    detector, metrics = train_detector(
        lambda: TextNetwork(tokenizer.TOKEN_BUCKETS, c=cfg.channels, layers=cfg.layers,
                            nodes=cfg.nodes, genotypes=base["genotypes"]), data, name, cfg)
    keep = {c: (base_dir / f"{c}.onnx").read_bytes() for c in base["categories"]}
    manifest = {k: v for k, v in base.items()
                if k not in ("name", "version", "created_at", "sha256", "categories",
                             "kind", "max_tokens")}
    manifest["metrics"] = {**base.get("metrics", {}), name: {
        "nas": {m: metrics[m] for m in ("ap", "precision", "recall")}}}
    model_dir = export_detectors(models_dir, version, (base_dir / "encoder.onnx").read_bytes(),
                                 emb.shape[1], {name: detector}, manifest, keep)
    say(f"{name}: AP {metrics['ap']:.3f}, precision {metrics['precision']:.3f} and recall "
        f"{metrics['recall']:.3f} at {cfg.threshold}; exported {model_dir}")
    return {"model_dir": str(model_dir), "metrics": {m: metrics[m] for m in
                                                     ("ap", "precision", "recall", "test")}}
