"""The training report: ``report.md`` with tables, and PNG plots beside it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _plot_curves(histories: dict[str, list[dict]], path: Path) -> None:
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], marker="o", label=name)
        if rows and "valid_ndcg@10" in rows[0]:
            ax_valid.plot(epochs, [r["valid_ndcg@10"] for r in rows], marker="o", label=name)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_valid.set(title="validation nDCG@10 (engagement labels)", xlabel="epoch")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_models(results: dict[str, dict], path: Path) -> None:
    names = list(results)
    values = [results[n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    ax.set(title="true-relevance nDCG@10 on held-out queries", xlim=(min(values) - 0.05, 1.0))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_propensity(click_rate: list[float], eta: float, path: Path) -> None:
    pos = list(range(1, len(click_rate) + 1))
    base = click_rate[0] or 1.0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(pos, [r / base for r in click_rate], "o", label="click rate / position 1 (shuffled)")
    ax.plot(pos, [p ** -eta for p in pos], "-", label=f"fit k^-{eta:.2f}")
    ax.set(title="position bias", xlabel="position", ylabel="relative examination")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, summary: dict) -> Path:
    results, data = summary["results"], summary["dataset"]
    _plot_curves(summary["histories"], out / "learning_curves.png")
    _plot_models(results, out / "ndcg_by_model.png")
    _plot_propensity(summary["propensity"]["click_rate"], summary["propensity"]["eta"],
                     out / "propensity.png")
    lines = [
        f"# LTR training report — {summary['version']}", "",
        f"Exported model: `{summary['model_dir']}` (torch vs ONNX Runtime max |diff| "
        f"{summary['parity_max_abs_diff']:.1e}).", "",
        "## Held-out queries, true relevance", "",
        "| model | nDCG@10 | MRR (grade ≥ 3) | queries | lists | train s | pairs/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['mrr']:.4f} | {r['queries']} | "
                     f"{r['lists']} | {r.get('train_seconds', '')} | {r.get('pairs_per_s', '')} |")
    lines += ["", "Lists without any relevant item are left out of the means and counted "
              f"({results['recall_order']['lists_without_relevant']} here).", "",
              "![nDCG by model](ndcg_by_model.png)", "", "## Learning curves", "",
              "![learning curves](learning_curves.png)", "", "## Data", "",
              "| | count |", "|---|---|"]
    for key in ("events", "requests", "kept_requests", "bot_users", "tapper_users",
                "outlier_items_removed", "train_lists", "train_pairs", "valid_lists",
                "test_lists", "test_queries"):
        lines.append(f"| {key} | {data[key]} |")
    for key, value in data["dropped_requests"].items():
        lines.append(f"| dropped: {key} | {value} |")
    for key, value in data["rejected_rows"].items():
        lines.append(f"| rejected rows: {key} | {value} |")
    lines += ["", f"Labels of kept lists: {data['label_counts']}", "",
              "## Position bias", "",
              f"{summary['propensity']['method']}: eta = {summary['propensity']['eta']} from "
              f"{summary['propensity']['shuffled_pages']} shuffled pages.", "",
              "![propensity](propensity.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
