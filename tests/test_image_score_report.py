"""The image_score monitoring report: segment statistics, PSI, flags, files and exit codes."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from feature_jobs.image_score_report import (
    EPS,
    EXIT_FLAGGED,
    Thresholds,
    drift_report,
    main,
    read_listings,
    segment_table,
    write_report,
)

N = 600


def listings(scores, category: str = "tops", condition: str = "good",
             price: float = 3_000.0) -> pl.DataFrame:
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    return pl.DataFrame({
        "category": [category] * n,
        "condition": [condition] * n,
        "price": [price] * n,
        "image_score": scores,
    })


def row(report: pl.DataFrame, segment: str, value: str) -> dict:
    (found,) = report.filter(segment=segment, value=value).to_dicts()
    return found


def by_category(current: pl.DataFrame, reference: pl.DataFrame, **thresholds) -> pl.DataFrame:
    return drift_report(current, reference, Thresholds(**thresholds), segments=("category",))


def ai_generated(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Ordinary photos, with ``share`` of them replaced by too-good (>= 0.92) scores."""
    k = int(n * share)
    return np.r_[rng.beta(4, 4, n - k), rng.uniform(0.92, 1.0, k)]


def test_segment_table_statistics_and_price_bands():
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0
    prices = [0, 999, 1_000, 4_999, 5_000, 19_999, 20_000, 99_999, 100_000, 9_999_999]
    frame = listings(scores).with_columns(price=pl.Series(prices, dtype=pl.Float64))
    table = segment_table(frame)

    tops = row(table, "category", "tops")
    assert tops["count"] == 10
    assert tops["mean"] == pytest.approx(0.55)
    assert tops["p10"] == pytest.approx(0.19)
    assert tops["p50"] == pytest.approx(0.55)
    assert tops["p90"] == pytest.approx(0.91)
    assert tops["high_share"] == pytest.approx(0.2)  # 0.9 and 1.0
    bands = table.filter(segment="price_band")
    assert bands["value"].to_list() == ["<¥1k", "¥1k–5k", "¥5k–20k", "¥20k–100k", "≥¥100k"]
    assert bands["count"].to_list() == [2, 2, 2, 2, 2]
    assert table["segment"].unique(maintain_order=True).to_list() == [
        "category", "condition", "price_band"]


def test_psi_is_zero_for_identical_distributions():
    rng = np.random.default_rng(1)
    frame = pl.concat([listings(rng.beta(3, 5, N), "tops"), listings(rng.beta(5, 3, N), "bags")])
    report = drift_report(frame, frame)
    assert report["psi"].to_list() == pytest.approx([0.0] * report.height)
    assert report["flag"].to_list() == [""] * report.height


def test_psi_matches_hand_computation():
    # Bin shares: current (1/4, 1/2, 1/4), reference (1/2, 1/4, 1/4) in bins 0, 1, 2.
    current = listings([0.05, 0.15, 0.15, 0.25])
    reference = listings([0.05, 0.05, 0.15, 0.25])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - 0.25) * math.log(0.5 / 0.25)
    report = by_category(current, reference, min_count=1)
    assert row(report, "category", "tops")["psi"] == pytest.approx(expected)  # ln(2) / 2

    # An empty reference bin counts as EPS; 1.0 falls in the last bin.
    report = by_category(listings([0.05, 1.0]), listings([0.05, 0.05]), min_count=1)
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - EPS) * math.log(0.5 / EPS)
    assert row(report, "category", "tops")["psi"] == pytest.approx(expected)


def test_scores_shifting_up_are_flagged_drift():
    rng = np.random.default_rng(2)
    reference = pl.concat([listings(rng.beta(3, 7, N), "tops"),
                           listings(rng.beta(3, 7, N), "bags")])
    current = pl.concat([listings(rng.beta(5, 5, N), "tops"),  # the mean moves 0.3 -> 0.5
                         listings(rng.beta(3, 7, N), "bags")])
    report = by_category(current, reference)

    tops, bags = row(report, "category", "tops"), row(report, "category", "bags")
    assert tops["flag"] == "drift"
    assert tops["psi"] > 0.2
    assert tops["mean_change"] == pytest.approx(0.2, abs=0.03)
    assert tops["high_share_change"] < 0.05
    assert bags["flag"] == ""
    assert bags["psi"] < 0.1


def test_a_share_of_ai_generated_images_is_flagged_high_scores():
    rng = np.random.default_rng(3)
    reference = pl.concat([listings(rng.beta(4, 4, N), "tops"),
                           listings(rng.beta(4, 4, N), "bags")])
    current = pl.concat([listings(ai_generated(rng, N, share=0.08), "tops"),
                         listings(rng.beta(4, 4, N), "bags")])
    report = by_category(current, reference)

    tops = row(report, "category", "tops")
    assert tops["flag"] == "high_scores"
    assert tops["high_share_change"] == pytest.approx(0.08, abs=0.01)
    assert tops["mean_change"] < 0.05  # the mean alone would hide it
    assert row(report, "category", "bags")["flag"] == ""
    # A looser threshold lets it through.
    assert row(by_category(current, reference, high_share_growth=0.1, psi=10.0),
               "category", "tops")["flag"] == ""


def test_small_segments_are_too_small_not_flagged(tmp_path):
    rng = np.random.default_rng(4)
    reference = pl.concat([listings(rng.beta(4, 4, N), "tops"),
                           listings(rng.beta(2, 8, 20), "rare")])
    current = pl.concat([listings(rng.beta(4, 4, N), "tops"),
                         listings(rng.uniform(0.9, 1.0, 20), "rare"),  # shifted, but 20 rows
                         listings(rng.beta(4, 4, 30), "new_category")])
    report = by_category(current, reference)

    rare = row(report, "category", "rare")
    assert rare["flag"] == "too_small"
    assert rare["psi"] > 0.2 and rare["high_share_change"] > 0.5  # shown, not trusted
    only_current = row(report, "category", "new_category")
    assert (only_current["flag"], only_current["count_ref"]) == ("too_small", 0)
    assert only_current["psi"] is None
    summary = write_report(current, reference, tmp_path, segments=("category",))
    assert summary["flagged"] == []
    assert row(by_category(current, reference, min_count=10), "category", "rare")["flag"] \
        == "high_scores"


def write_jsonl(path, frame: pl.DataFrame, extra_lines: tuple[str, ...] = ()) -> None:
    frame = frame.with_columns(id=pl.int_range(pl.len()).cast(pl.String), title=pl.lit("t"))
    path.write_text(frame.write_ndjson() + "".join(line + "\n" for line in extra_lines))


def test_rejected_rows_are_counted(tmp_path):
    rng = np.random.default_rng(5)
    bad = (
        '{"id": "m", "category": "tops", "condition": "good", "price": 10}',
        '{"id": "s", "category": "tops", "condition": "good", "price": 10, "image_score": "n/a"}',
        '{"id": "h", "category": "tops", "condition": "good", "price": 10, "image_score": 1.5}',
        '{"id": "l", "category": "tops", "condition": "good", "price": 10, "image_score": -0.1}',
        '{"id": "n", "category": "tops", "condition": "good", "price": 10, "image_score": null}',
    )
    write_jsonl(tmp_path / "cur.jsonl", listings(rng.beta(4, 4, N)), bad)
    write_jsonl(tmp_path / "ref.jsonl", listings(rng.beta(4, 4, N)), bad[:2])

    current = read_listings(tmp_path / "cur.jsonl")
    assert current.columns == ["category", "condition", "price", "image_score"]
    assert current.height == N + len(bad)
    summary = write_report(current, read_listings(tmp_path / "ref.jsonl"), tmp_path / "out")
    assert summary["rejected"] == {"current": 5, "reference": 2}
    assert summary["listings"] == {"current": N, "reference": N}
    assert row(segment_table(current), "category", "tops")["count"] == N


def test_main_exit_codes_and_files(tmp_path):
    rng = np.random.default_rng(6)
    write_jsonl(tmp_path / "ref.jsonl", listings(rng.beta(3, 7, N)))
    write_jsonl(tmp_path / "same.jsonl", listings(rng.beta(3, 7, N)))
    write_jsonl(tmp_path / "shifted.jsonl", listings(rng.beta(5, 5, N)))
    args = ["--reference", str(tmp_path / "ref.jsonl")]

    assert main([*args, "--current", str(tmp_path / "same.jsonl"), "--out",
                 str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "image_score_report.md").exists()
    assert json.loads((tmp_path / "ok" / "image_score_report.json").read_text())[
        "summary"]["flagged"] == []

    out = tmp_path / "alert"
    assert main([*args, "--current", str(tmp_path / "shifted.jsonl"), "--out",
                 str(out)]) == EXIT_FLAGGED
    markdown = (out / "image_score_report.md").read_text()
    assert "## category" in markdown and "| **tops** |" in markdown and "⚠ drift" in markdown
    saved = json.loads((out / "image_score_report.json").read_text())
    assert {"segment": "category", "value": "tops", "flag": "drift"} in saved["summary"]["flagged"]
    assert len(saved["report"]) == saved["summary"]["segments"] == 3  # category, condition, band

    # The thresholds come from the command line.
    assert main([*args, "--current", str(tmp_path / "shifted.jsonl"), "--out", str(out),
                 "--psi", "100", "--high-share", "0.5"]) == 0
    assert main([*args, "--current", str(tmp_path / "shifted.jsonl"), "--out", str(out),
                 "--min-count", "1000"]) == 0
