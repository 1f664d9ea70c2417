"""Score listing photos with the Image Score model and write ``image_score`` into the index.

Input: JSON lines ``{"id": listing id, "photo": path of its photo}``. Photos are scored
in batches by the exported ONNX model (``models/image_score/<version>``), and each
batch goes to the engine as bulk partial updates (``{"doc": {"image_score": s}}``), so
nothing else in the documents changes.

- Resumable: after every batch the number of input lines done is saved in
  ``{state_dir}/checkpoint.json`` (with the input's size and mtime). A rerun on the same
  input starts after them.
- Counted and set aside: malformed input rows, unreadable photos and updates the engine
  refuses (e.g. an id not in the index) go to ``{state_dir}/rejects.jsonl`` with the
  reason.
- The embedded engine has no partial updates: put ``image_score`` in the catalog and
  re-index instead.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

import onnxruntime as ort
import orjson
from PIL import Image

from app.engines import Engine
from app.image_input import to_input
from app.scoring import MANIFEST, MODEL_FILE


def _checkpoint(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _input_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"input": str(path), "size": stat.st_size, "mtime": stat.st_mtime}


class ImageScorer:
    """The exported model: images -> scores in [0, 1]."""

    def __init__(self, model_dir: Path, threads: int = 2):
        manifest = json.loads((model_dir / MANIFEST).read_text())
        if manifest.get("kind") != "image_quality":
            raise ValueError(f"{model_dir} is not an Image Score model (kind "
                             f"{manifest.get('kind')!r})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_dir / MODEL_FILE), opts,
                                            providers=["CPUExecutionProvider"])
        self.version = f"{manifest['name']}/{manifest['version']}"

    def score(self, images: list[Image.Image]) -> list[float]:
        (scores,) = self.session.run(["score"], {"image": to_input(images)})
        return scores.tolist()


async def backfill_image_scores(engine: Engine, alias: str, photos: Path, scorer: ImageScorer,
                                state_dir: Path, batch: int = 32) -> dict:
    state_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = state_dir / "checkpoint.json"
    stamp = _input_stamp(photos)
    done = 0
    if checkpoint.exists():
        saved = json.loads(checkpoint.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            done = saved["lines_done"]
    counts = {"skipped_done": done, "updated": 0, "rejected": 0}
    with open(photos, "rb") as lines, open(state_dir / "rejects.jsonl", "ab") as rejects:
        def reject(row, reason: str) -> None:
            rejects.write(orjson.dumps({"row": row, "reason": reason}) + b"\n")
            counts["rejected"] += 1

        rows = islice(lines, done, None)
        while chunk := list(islice(rows, batch)):
            ids, images = [], []
            for line in chunk:
                try:
                    row = orjson.loads(line)
                    listing_id, path = str(row["id"]), Path(row["photo"])
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    reject(line.decode("utf-8", "replace").strip(), f"malformed row: {exc}")
                    continue
                try:
                    with Image.open(path) as im:
                        images.append(im.convert("RGB"))
                    ids.append(listing_id)
                except OSError as exc:
                    reject(row, f"unreadable photo: {exc}")
            if ids:
                actions = [{"_op_type": "update", "_index": alias, "_id": i,
                            "doc": {"image_score": s}}
                           for i, s in zip(ids, scorer.score(images), strict=True)]
                result = await engine.bulk(actions)
                counts["updated"] += result.indexed
                for err in result.errors:
                    reject(err, "refused by the engine")
            done += len(chunk)
            rejects.flush()
            _checkpoint(checkpoint, {**stamp, "lines_done": done, "model": scorer.version})
    await engine.refresh(alias)
    return {**counts, "lines_done": done, "model": scorer.version,
            "rejects": str(state_dir / "rejects.jsonl")}
