"""The training report: ``report.md`` with tables, and PNG plots beside it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _plot_curves(histories: dict[str, list[dict]], path: Path, valid_labels: str) -> None:
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in histories.items():
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], marker=".", label=name)
        if rows and "valid_ndcg@10" in rows[0]:
            ax_valid.plot(steps, [r["valid_ndcg@10"] for r in rows], marker=".", label=name)
            best = [r for r in rows if r.get("best")]
            ax_valid.plot([r["step"] for r in best], [r["valid_ndcg@10"] for r in best], "k*",
                          markersize=12, label="kept (best)" if best else None)
    ax_loss.set(title="training loss", xlabel="optimiser step", ylabel="loss")
    ax_valid.set(title=f"validation nDCG@10 ({valid_labels})", xlabel="optimiser step")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_models(results: dict[str, dict], path: Path, title: str) -> None:
    names = list(results)
    values = [results[n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    ax.set(title=title, xlim=(max(min(values) - 0.05, 0.0), 1.0))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _results_lines(out: Path, summary: dict, heading: str) -> list[str]:
    """The title, the model table and the plots, shared by both reports."""
    results = summary["results"]
    _plot_models(results, out / "ndcg_by_model.png", f"nDCG@10, {heading}")
    lines = [
        f"# LTR training report — {summary['version']}", "",
        f"Exported model: `{summary['model_dir']}` (torch vs ONNX Runtime max |diff| "
        f"{summary['parity_max_abs_diff']:.1e}).", "",
        f"## {heading}", "",
        "| model | nDCG@10 | MRR (grade ≥ 3) | queries | lists | train s | pairs/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['mrr']:.4f} | {r['queries']} | "
                     f"{r['lists']} | {r.get('train_seconds', '')} | {r.get('pairs_per_s', '')} |")
    return lines + ["", "![nDCG by model](ndcg_by_model.png)", "", "## Learning curves", "",
                    "![learning curves](learning_curves.png)", ""]


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
    """The report of a simulator or served-traffic run: models on held-out queries with
    true relevance."""
    results, data = summary["results"], summary["dataset"]
    _plot_curves(summary["histories"], out / "learning_curves.png", "engagement labels")
    _plot_propensity(summary["propensity"]["click_rate"], summary["propensity"]["eta"],
                     out / "propensity.png")
    lines = _results_lines(out, summary, "Held-out queries, true relevance")
    lines += ["Lists without any relevant item are left out of the means and counted "
              f"({next(iter(results.values()))['lists_without_relevant']} here).", "",
              "## Data", "", "| | count |", "|---|---|"]
    for key, value in data.items():
        if isinstance(value, dict) and key != "propensity":
            lines += [f"| {key}: {k} | {v} |" for k, v in value.items()]
        elif isinstance(value, int | float):
            lines.append(f"| {key} | {value} |")
    lines += ["", "## Position bias", "",
              f"{summary['propensity']['method']}: eta = {summary['propensity']['eta']} from "
              f"{summary['propensity']['shuffled_pages']} randomised pages.", "",
              "![propensity](propensity.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_letor_report(out: Path, summary: dict) -> Path:
    """The LETOR run's report: models on the test file, its labels."""
    data, norm = summary["dataset"], summary["normalisation"]
    _plot_curves(summary["histories"], out / "learning_curves.png", "validation queries")
    lines = _results_lines(out, summary, "Test file")
    lines += ["## Data", "", "| | |", "|---|---|"]
    for split, path in data["files"].items():
        lines.append(f"| {split} | {path} |")
    for key in ("features", "train_queries", "train_rows", "valid_queries", "valid_rows",
                "test_queries", "test_rows"):
        lines.append(f"| {key} | {data[key]} |")
    for split, count in data["rejected_lines"].items():
        lines.append(f"| rejected lines: {split} | {count} |")
    lines += ["", "## Input normalisation", "", f"{norm['rule']}.", "",
              f"- signed log1p: features {norm['log_columns'] or 'none'}",
              f"- constant (zeroed): features {norm['constant_columns'] or 'none'}", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
