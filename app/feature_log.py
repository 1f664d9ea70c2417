"""Served-feature log: what every answered search was scored with, for training.

The request path only puts a record on a bounded in-memory queue (:meth:`put` never
blocks: when the queue is full the record is dropped and counted in
``bestmatch_feature_log_records_total{outcome="dropped"}``). A background thread
serialises records with orjson and appends them as JSON lines to
``{dir}/served-{UTC start time}-{pid}-{n}.jsonl``, starting file n + 1 once file n
passes ``max_bytes``; each worker process writes its own files (names sort in writing
order), and closed files are never touched again, so a shipper may move them away.
One record, items as columns in ranked order (the request path only slices arrays; the
writer thread serialises them)::

    {"request_id", "ts" (ISO, UTC), "query", "user_id", "experiment", "arm",
     "model": {"name", "version"}, "feature_spec" (its hash), "feature_version", "offset",
     "degraded",
     "explored" (the top was shuffled, app.exploration), "query_ids": [...],
     "items": {"id": [...], "position": [...] (1-based in the ranked list),
               "recall_rank": [...], "dense": [[12 float32, spec order], ...],
               "title_ids": [[...], ...] (0-padded),
               "propensity": [...] (P(the logging policy shows this item here))}}

``dense`` holds the exact values the model scored (float32, spec-transformed), so a
dataset built from this log has no online/offline skew (``training.dataset.load_served_logs``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from app import metrics

log = logging.getLogger(__name__)
_STOP = object()


class FeatureLog:
    def __init__(self, directory: Path, queue_size: int = 10_000,
                 max_bytes: int = 128 * 1024 * 1024):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="feature-log", daemon=True)
        self._file: BinaryIO | None = None
        self._name = f"served-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        self._files = 0
        self.path: Path | None = None  # the file being written

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        metrics.FEATURE_LOG_QUEUE.set_function(self._queue.qsize)
        self._thread.start()

    def put(self, record: dict) -> bool:
        """Queue ``record`` for writing; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            metrics.FEATURE_LOG.labels("dropped").inc()
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.error("served-feature log: writer stuck; %d queued records lost",
                      self._queue.qsize())
            return
        self._thread.join(timeout_s)

    def _open(self) -> BinaryIO:
        if self._file is not None:
            self._file.close()
        self._files += 1
        self.path = self.directory / f"{self._name}-{self._files:05d}.jsonl"
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open across records)
        return self._file

    def _run(self) -> None:
        file = self._open()
        options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        while True:
            record = self._queue.get()
            if record is _STOP:
                break
            try:
                file.write(orjson.dumps(record, option=options))
            except (OSError, TypeError) as exc:
                metrics.FEATURE_LOG.labels("error").inc()
                log.error("served-feature log: record not written: %s", exc)
                continue
            metrics.FEATURE_LOG.labels("written").inc()
            if self._queue.empty():
                file.flush()
            if file.tell() >= self.max_bytes:
                file = self._open()
        file.close()
