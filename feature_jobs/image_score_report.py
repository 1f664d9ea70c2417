"""Monitoring of ``image_score``: its distribution by segment, and drift against a reference.

The known failure mode of the photo-quality model: AI-generated or over-processed images
score too high, and the score distribution of a segment shifts when the model or the photo
mix changes. This job compares the current listings with a reference (last week's
listings, or the same listings scored by the previous model) per segment value
(``category``, ``condition``, ``price_band``):

- the distribution: count, mean, p10, p50, p90 and ``high_share``, the share of scores
  >= 0.9 (suspiciously high);
- the population stability index over 10 fixed bins ``[k/10, (k+1)/10)`` (the last one
  includes 1.0)::

      PSI = sum_k (p_k - q_k) * ln(p_k / q_k)

  with ``p_k`` the current and ``q_k`` the reference share of bin ``k``; a share below
  ``EPS`` (an empty bin) counts as ``EPS`` so the logarithm stays finite. Usual reading:
  < 0.1 stable, 0.1-0.2 moderate, > 0.2 a real shift;
- a ``flag``: ``too_small`` when either side has fewer than ``min_count`` listings (the
  metrics are shown but not trusted), else ``high_scores`` when ``high_share`` grew by more
  than ``high_share_growth`` (the known failure mode, so it wins over the generic one), else
  ``drift`` when PSI > ``psi``, else empty.

Rows whose ``image_score`` is missing or outside [0, 1] take no part in the metrics;
:func:`write_report` counts them as rejected. Run as
``python -m feature_jobs.image_score_report --current A.jsonl --reference B.jsonl --out DIR``;
the exit code is 3 when a segment is flagged, so a scheduler can alert.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from app.listings import CONDITIONS

DEFAULT_SEGMENTS: tuple[str, ...] = ("category", "condition", "price_band")
HIGH_SCORE = 0.9  # scores at or above this are "suspiciously high"
BINS = 10  # PSI bins of width 1 / BINS on [0, 1]
EPS = 1e-4  # the share an empty PSI bin counts as
MISSING = "(missing)"  # the segment value of a null
# Upper bounds (JPY, exclusive) and names of the price bands.
PRICE_BANDS: tuple[tuple[float, str], ...] = (
    (1_000, "<¥1k"),
    (5_000, "¥1k–5k"),
    (20_000, "¥5k–20k"),
    (100_000, "¥20k–100k"),
    (math.inf, "≥¥100k"),
)
READ_SCHEMA = {
    "category": pl.String,
    "condition": pl.String,
    "price": pl.Float64,
    "image_score": pl.Float64,
}
FLAGGED = ("drift", "high_scores")
EXIT_FLAGGED = 3
_VALUE_ORDER = {"condition": CONDITIONS, "price_band": tuple(name for _, name in PRICE_BANDS)}
_VALID = pl.col("image_score").is_between(0.0, 1.0).fill_null(False)


@dataclass(frozen=True)
class Thresholds:
    """When a segment is flagged (see the module docstring)."""

    psi: float = 0.2
    high_share_growth: float = 0.05
    min_count: int = 50


DEFAULT_THRESHOLDS = Thresholds()


def read_listings(path: Path | str) -> pl.DataFrame:
    """The columns the report needs from a JSON-lines file of listings; an unparseable or
    absent value becomes null (a null ``image_score`` is rejected later, not dropped here)."""
    return pl.read_ndjson(path, schema=READ_SCHEMA, ignore_errors=True)


def price_band() -> pl.Expr:
    """The price band name of ``price`` (null for a null price)."""
    price = pl.col("price")
    (first_upper, first_name), *rest = PRICE_BANDS
    band: Any = pl.when(price < first_upper).then(pl.lit(first_name))  # Then, ChainedThen
    for upper, name in rest:
        band = band.when(price < upper).then(pl.lit(name))
    return band


def _long(listings: pl.DataFrame, segments: Sequence[str]) -> pl.DataFrame:
    """Valid scores, one row per (listing, segment kind): ``segment``, ``value``,
    ``image_score``."""
    valid = listings.filter(_VALID)
    if "price_band" in segments:
        valid = valid.with_columns(price_band=price_band())
    return pl.concat(
        [
            valid.select(
                segment=pl.lit(kind),
                value=pl.col(kind).cast(pl.String).fill_null(MISSING),
                image_score=pl.col("image_score"),
            )
            for kind in segments
        ]
    )


def _sorted(table: pl.DataFrame, segments: Sequence[str]) -> pl.DataFrame:
    """Rows in the order of ``segments``, then conditions and price bands in their natural
    order, other values alphabetically."""
    value_rank = pl.lit(None, dtype=pl.Int64)
    for kind, order in _VALUE_ORDER.items():
        rank = pl.col("value").replace_strict(order, range(len(order)), default=None)
        value_rank = pl.when(pl.col("segment") == kind).then(rank).otherwise(value_rank)
    kind_rank = pl.col("segment").replace_strict(segments, range(len(segments)))
    return table.sort(kind_rank, value_rank, "value", nulls_last=True)


def _stats(long: pl.DataFrame) -> pl.DataFrame:
    """The :func:`segment_table` columns of a long frame, unsorted."""
    score = pl.col("image_score")
    return long.group_by("segment", "value").agg(
        count=pl.len(),
        mean=score.mean(),
        p10=score.quantile(0.1, "linear"),
        p50=score.quantile(0.5, "linear"),
        p90=score.quantile(0.9, "linear"),
        high_share=(score >= HIGH_SCORE).mean(),
    )


def segment_table(listings: pl.DataFrame,
                  segments: Sequence[str] = DEFAULT_SEGMENTS) -> pl.DataFrame:
    """Per segment value: ``count``, ``mean``, ``p10``, ``p50``, ``p90`` and ``high_share``
    (share of scores >= 0.9) of the valid ``image_score`` values."""
    return _sorted(_stats(_long(listings, segments)), segments)


def _bin_shares(long: pl.DataFrame) -> pl.DataFrame:
    """The share of each non-empty PSI bin per segment value."""
    bin_index = (pl.col("image_score") * BINS).floor().clip(0, BINS - 1).cast(pl.Int8)
    return (
        long.group_by("segment", "value", bin=bin_index)
        .agg(n=pl.len())
        .with_columns(share=pl.col("n") / pl.col("n").sum().over("segment", "value"))
        .drop("n")
    )


def _psi(current: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """``psi`` per segment value from two long frames (see the module docstring)."""
    shares = _bin_shares(current).join(
        _bin_shares(reference), on=["segment", "value", "bin"], how="full", coalesce=True,
        suffix="_ref",
    )
    p = pl.col("share").fill_null(0.0).clip(lower_bound=EPS)
    q = pl.col("share_ref").fill_null(0.0).clip(lower_bound=EPS)
    return shares.group_by("segment", "value").agg(psi=((p - q) * (p / q).log()).sum())


def drift_report(current: pl.DataFrame, reference: pl.DataFrame,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 segments: Sequence[str] = DEFAULT_SEGMENTS) -> pl.DataFrame:
    """One row per segment value seen on either side: the :func:`segment_table` columns of
    ``current``, the same with suffix ``_ref`` for ``reference``, ``mean_change``,
    ``high_share_change``, ``psi`` (null unless both sides have listings) and ``flag``."""
    cur, ref = _long(current, segments), _long(reference, segments)
    both = (pl.col("count") > 0) & (pl.col("count_ref") > 0)
    small = (pl.col("count") < thresholds.min_count) | (
        pl.col("count_ref") < thresholds.min_count
    )
    report = (
        _stats(cur)
        .join(_stats(ref), on=["segment", "value"], how="full", coalesce=True, suffix="_ref")
        .join(_psi(cur, ref), on=["segment", "value"], how="left")
        .with_columns(pl.col("count", "count_ref").fill_null(0))
        .with_columns(
            mean_change=pl.col("mean") - pl.col("mean_ref"),
            high_share_change=pl.col("high_share") - pl.col("high_share_ref"),
            psi=pl.when(both).then(pl.col("psi")),
        )
        .with_columns(
            flag=pl.when(small).then(pl.lit("too_small"))
            .when(pl.col("high_share_change") > thresholds.high_share_growth)
            .then(pl.lit("high_scores"))
            .when(pl.col("psi") > thresholds.psi).then(pl.lit("drift"))
            .otherwise(pl.lit(""))
        )
    )
    return _sorted(report, segments)


def _cell(column: str, value: object) -> str:
    """A markdown table cell: changes signed, floats to 3 decimals, pipes escaped."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.3f}" if column.endswith("_change") else f"{value:.3f}"
    return str(value).replace("|", "\\|")


_COLUMNS = {
    "value": "value",
    "count": "n",
    "count_ref": "n ref",
    "mean": "mean",
    "mean_change": "Δ mean",
    "p10": "p10",
    "p50": "p50",
    "p90": "p90",
    "high_share": "≥0.9 share",
    "high_share_change": "Δ ≥0.9 share",
    "psi": "PSI",
}


def _markdown(report: pl.DataFrame, summary: dict) -> str:
    t = summary["thresholds"]
    lines = [
        "# image_score report",
        "",
        f"Listings: current {summary['listings']['current']}, reference "
        f"{summary['listings']['reference']}; rejected (score missing or outside [0, 1]): "
        f"current {summary['rejected']['current']}, reference "
        f"{summary['rejected']['reference']}.",
        f"Flags: `high_scores` when the ≥{HIGH_SCORE} share grew by more than "
        f"{t['high_share_growth']}, `drift` when PSI > {t['psi']}; `too_small` below "
        f"{t['min_count']} listings on either side. Flagged: {len(summary['flagged'])} "
        f"of {summary['segments']} segments.",
    ]
    for (kind,), rows in report.group_by("segment", maintain_order=True):
        lines += ["", f"## {kind}", "",
                  "| " + " | ".join([*_COLUMNS.values(), "flag"]) + " |",
                  "|" + "---|" * (len(_COLUMNS) + 1)]
        for row in rows.iter_rows(named=True):
            cells = [_cell(column, row[column]) for column in _COLUMNS]
            flag = row["flag"]
            if flag in FLAGGED:
                cells[0] = f"**{cells[0]}**"
                flag = f"**⚠ {flag}**"
            lines.append("| " + " | ".join([*cells, flag.replace("_", " ")]) + " |")
    return "\n".join(lines) + "\n"


def write_report(current: pl.DataFrame, reference: pl.DataFrame, out_dir: Path | str,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 segments: Sequence[str] = DEFAULT_SEGMENTS) -> dict:
    """Write ``image_score_report.md`` and ``image_score_report.json`` to ``out_dir``;
    returns the summary: ``segments`` (how many), ``flagged`` (segment, value, flag),
    ``listings`` and ``rejected`` counts per side, ``thresholds``."""
    report = drift_report(current, reference, thresholds, segments)
    flagged = report.filter(pl.col("flag").is_in(FLAGGED)).select("segment", "value", "flag")
    valid = {"current": current.filter(_VALID).height,
             "reference": reference.filter(_VALID).height}
    summary = {
        "segments": report.height,
        "flagged": flagged.to_dicts(),
        "listings": valid,
        "rejected": {"current": current.height - valid["current"],
                     "reference": reference.height - valid["reference"]},
        "thresholds": asdict(thresholds),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "image_score_report.md").write_text(_markdown(report, summary), encoding="utf-8")
    (out / "image_score_report.json").write_text(
        json.dumps({"summary": summary, "report": report.to_dicts()}, indent=2,
                   ensure_ascii=False),
        encoding="utf-8",
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the report; exit code 3 when a segment is flagged, else 0."""
    parser = argparse.ArgumentParser(prog="python -m feature_jobs.image_score_report",
                                     description="image_score distribution and drift by segment")
    parser.add_argument("--current", type=Path, required=True, help="listings, JSON lines")
    parser.add_argument("--reference", type=Path, required=True, help="listings, JSON lines")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--psi", type=float, default=DEFAULT_THRESHOLDS.psi)
    parser.add_argument("--high-share", type=float,
                        default=DEFAULT_THRESHOLDS.high_share_growth,
                        help="flag when the >=0.9 share grew by more than this")
    parser.add_argument("--min-count", type=int, default=DEFAULT_THRESHOLDS.min_count)
    args = parser.parse_args(argv)
    thresholds = Thresholds(psi=args.psi, high_share_growth=args.high_share,
                            min_count=args.min_count)
    summary = write_report(read_listings(args.current), read_listings(args.reference),
                           args.out, thresholds)
    print(f"image_score report: {summary['segments']} segments, "
          f"{len(summary['flagged'])} flagged, rejected {summary['rejected']} -> {args.out}")
    for row in summary["flagged"]:
        print(f"  {row['flag']}: {row['segment']}={row['value']}")
    return EXIT_FLAGGED if summary["flagged"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
