"""Resumable bulk partial updates of index documents from a JSON-lines input.

The loop shared by the batch scoring jobs (Image Score backfill, violation scores):
read the input in batches, let the job turn each batch into ``(id, partial doc)``
updates (and rows it could not use, with the reason), send the updates as one bulk
request of ``update`` actions, then checkpoint.

- Resumable: after every batch the number of input lines done is saved in
  ``{state_dir}/checkpoint.json`` with the input's size and mtime; a rerun on the same
  input starts after them.
- Counted and set aside: malformed rows, rows the job refuses and updates the engine
  refuses (e.g. an id not in the index) go to ``{state_dir}/rejects.jsonl`` with the
  reason.
- The embedded engine has no partial updates (it says so): put the fields in the
  catalog and re-index instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import orjson

from app.interfaces import SearchEngine

# rows -> ([(id, partial document)], [(row, reason)])
ScoreBatch = Callable[[list[dict]], tuple[list[tuple[str, dict]], list[tuple[dict, str]]]]


def _input_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"input": str(path), "size": stat.st_size, "mtime": stat.st_mtime}


async def bulk_update(engine: SearchEngine, alias: str, rows_path: Path, state_dir: Path,
                      score_batch: ScoreBatch, batch: int = 32, label: str = "") -> dict:
    state_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = state_dir / "checkpoint.json"
    stamp = _input_stamp(rows_path)
    done = 0
    if checkpoint.exists():
        saved = json.loads(checkpoint.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            done = saved["lines_done"]
    counts = {"skipped_done": done, "updated": 0, "rejected": 0}
    with open(rows_path, "rb") as lines, open(state_dir / "rejects.jsonl", "ab") as rejects:
        def reject(row, reason: str) -> None:
            rejects.write(orjson.dumps({"row": row, "reason": reason}) + b"\n")
            counts["rejected"] += 1

        remaining = islice(lines, done, None)
        while chunk := list(islice(remaining, batch)):
            rows = []
            for line in chunk:
                try:
                    row = orjson.loads(line)
                    if not isinstance(row, dict) or "id" not in row:
                        raise ValueError("needs an object with an id")
                    rows.append(row)
                except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                    reject(line.decode("utf-8", "replace").strip(), f"malformed row: {exc}")
            updates, refused = score_batch(rows) if rows else ([], [])
            for row, reason in refused:
                reject(row, reason)
            if updates:
                result = await engine.bulk({"_op_type": "update", "_index": alias,
                                            "_id": doc_id, "doc": doc}
                                           for doc_id, doc in updates)
                counts["updated"] += result.indexed
                for err in result.errors:
                    reject(err, "refused by the engine")
            done += len(chunk)
            rejects.flush()
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps({**stamp, "lines_done": done, "job": label}))
            os.replace(tmp, checkpoint)
    await engine.refresh(alias)
    return {**counts, "lines_done": done, "job": label,
            "rejects": str(state_dir / "rejects.jsonl")}
