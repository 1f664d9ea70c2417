"""Write a model to ``models/<name>/<version>/`` (model.onnx + manifest.json).

The directory is written under a temporary name and renamed into place, so a failed
export never leaves a half-written version for the service to pick up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import onnx

from app.feature_spec import spec_document, spec_hash
from app.scoring import MANIFEST, MODEL_FILE
from training.ranker_graph import RankerWeights, build_onnx


def publish_model(models_dir: Path, name: str, version: str, data: bytes | dict[str, bytes],
                  manifest: dict) -> Path:
    """Write ONNX ``data`` (one model, or {file name: model} for a bundle) and ``manifest``
    (plus name, version, created_at and the files' sha256) to ``models_dir/name/version``,
    atomically; versions never change."""
    return publish_dir(Path(models_dir) / name / version, data,
                       {"name": name, "version": version, **manifest})


def publish_dir(final: Path, data: bytes | dict[str, bytes], manifest: dict) -> Path:
    """Write ONNX ``data`` and ``manifest`` (plus created_at and the files' sha256) to the
    new directory ``final``, atomically: under a temporary name, then renamed."""
    files = data if isinstance(data, dict) else {MODEL_FILE: data}
    if final.exists():
        raise FileExistsError(f"{final} exists; model versions are immutable")
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for file, content in files.items():
            (tmp / file).write_bytes(content)
            onnx.checker.check_model(str(tmp / file))
        digests = {file: hashlib.sha256(content).hexdigest() for file, content in files.items()}
        manifest = {**manifest,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "sha256": digests}
        if MODEL_FILE in digests:
            manifest["model_sha256"] = digests[MODEL_FILE]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_model(
    models_dir: Path,
    name: str,
    version: str,
    weights: RankerWeights,
    training: dict,
    metrics: dict | None = None,
) -> Path:
    """A ranker with the service's feature spec."""
    proto = build_onnx(weights, producer=f"bestmatch:{name}")
    return publish_model(models_dir, name, version, proto.SerializeToString(), {
        "feature_spec_hash": spec_hash(),
        "feature_spec": spec_document(),
        "architecture": {
            "embedding": list(weights.embedding.shape),
            "layers": [list(w.shape) for w, _ in weights.layers],
            "opset": proto.opset_import[0].version,
        },
        "training": training,
        "metrics": metrics or {},
    })
