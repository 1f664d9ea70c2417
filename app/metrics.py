"""Prometheus metrics of the service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STAGES = ("tokenize", "recall", "features", "score", "blend", "serialize")
_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.2, 0.5, 1.0, 2.0,
)

STAGE_SECONDS = Histogram(
    "bestmatch_stage_seconds", "Latency of one request stage", ["stage"],
    buckets=_LATENCY_BUCKETS,
)
STAGE = {s: STAGE_SECONDS.labels(s) for s in STAGES}
REQUEST_SECONDS = Histogram(
    "bestmatch_request_seconds", "End-to-end latency of search requests",
    ["flow", "experiment", "arm"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS = Counter("bestmatch_requests_total", "Search requests by answer and arm",
                   ["flow", "status", "experiment", "arm"])
CANDIDATES = Histogram(
    "bestmatch_candidates", "Candidates recalled per request",
    buckets=(0, 1, 10, 50, 100, 200, 300, 400, 600, 1000, 2000),
)
DEGRADED = Counter("bestmatch_degraded_total", "Answers degraded, by reason", ["reason"])
FEATURE_STORE_READY = Gauge(
    "bestmatch_feature_store_ready",
    "1 while the feature store serves a version; 0 while answers use priors "
    "(store unreachable, or no version: e.g. a Redis that lost its data)")
ERRORS = Counter("bestmatch_errors_total", "Failed requests, by kind", ["kind"])
FEATURE_LOG = Counter(
    "bestmatch_feature_log_records_total",
    "Served-feature log records by outcome: written, dropped (queue full), error", ["outcome"],
)
FEATURE_LOG_QUEUE = Gauge("bestmatch_feature_log_queue", "Records waiting to be written")
MODEL_INFO = Gauge(
    "bestmatch_model_info", "The served model (value 1)", ["name", "version", "provider"]
)
EXPERIMENT_RELOADS = Counter(
    "bestmatch_experiment_reloads_total", "Experiment config loads by outcome", ["outcome"])
MODEL_RELOADS = Counter("bestmatch_model_reloads_total", "Model loads by outcome", ["outcome"])


def set_model_info(name: str, version: str, provider: str) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(name, version, provider).set(1)
