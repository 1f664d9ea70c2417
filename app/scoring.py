"""ONNX models: loading, validation against the feature spec, and scoring.

A model lives in ``models/<name>/<version>/`` as ``model.onnx`` + ``manifest.json``.
:class:`ModelRegistry` holds the default served model (experiment arms open their own,
:meth:`ModelRegistry.open`); :meth:`ModelRegistry.load` swaps in a new one only after
it passed every check, so a broken or mismatched model is refused
with a clear error and the previous one keeps serving.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.feature_spec import (
    DENSE_DIM,
    INPUT_DENSE,
    INPUT_QUERY_IDS,
    INPUT_TITLE_IDS,
    OUTPUT_SCORE,
    spec_hash,
)
from app.schemas import MODEL_REF_PATTERN

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelError(Exception):
    """A model that cannot be served; the message says why."""


@dataclass
class LoadedModel:
    name: str
    version: str
    path: Path
    manifest: dict
    session: ort.InferenceSession
    provider: str

    def score(self, dense: np.ndarray, query_ids: np.ndarray, title_ids: np.ndarray) -> np.ndarray:
        """Scores [N] of N candidates in one run."""
        (out,) = self.session.run(
            [OUTPUT_SCORE],
            {INPUT_DENSE: dense, INPUT_QUERY_IDS: query_ids, INPUT_TITLE_IDS: title_ids},
        )
        return out

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "provider": self.provider}


def read_manifest(model_dir: Path, kind: str) -> dict:
    """The manifest of a model directory whose ``kind`` must be ``kind``."""
    manifest = json.loads((model_dir / MANIFEST).read_text())
    if manifest.get("kind") != kind:
        raise ValueError(f"{model_dir} is not a {kind} model (kind {manifest.get('kind')!r})")
    return manifest


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU provider (batch jobs, moderation)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=[CPU])


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", v))


def resolve_version(models_dir: Path, name: str, version: str) -> Path:
    """``models_dir/name/version`` (the highest version for ``latest``); names and versions
    must match :data:`MODEL_REF_PATTERN`, so the path never leaves ``models_dir``."""
    for what, ref in (("name", name), ("version", version)):
        if not re.fullmatch(MODEL_REF_PATTERN, ref):
            raise ModelError(f"model {what} {ref[:64]!r} does not match {MODEL_REF_PATTERN}")
    base = models_dir / name
    if version != "latest":
        return base / version
    versions = sorted((p.parent.name for p in base.glob(f"*/{MANIFEST}")), key=_version_key)
    if not versions:
        raise ModelError(f"no model versions of {name} (expected {name}/<version>/{MANIFEST} "
                         f"in the models directory)")
    return base / versions[-1]


def _gpu_present() -> bool:
    return Path("/dev/nvidiactl").exists()


def providers_for(device: str) -> list[str]:
    """CUDA first when ONNX Runtime has it and (for "auto") a GPU device exists."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available and (device == "cuda" or _gpu_present()):
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelError(f"BESTMATCH_ONNX_DEVICE=cuda but ONNX Runtime offers only {available}")
    return [CPU]


def load_model(path: Path, device: str = "auto", threads: int = 1) -> LoadedModel:
    """Load and validate one model directory; raises ModelError with the reason.

    Messages name the model as ``name/version`` (they reach admin clients), never the
    file-system path.
    """
    where = f"{path.parent.name}/{path.name}"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelError(f"{where}: {MANIFEST} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: {MANIFEST} is not valid JSON: {exc}") from None
    for key in ("name", "version", "feature_spec_hash"):
        if key not in manifest:
            raise ModelError(f"{where}: {MANIFEST} lacks '{key}'")
    if manifest["feature_spec_hash"] != spec_hash():
        raise ModelError(
            f"{where}: feature spec hash {manifest['feature_spec_hash']} differs from the "
            f"service's {spec_hash()} (model trained on another feature spec)"
        )
    providers = providers_for(device)
    if CUDA in providers and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels (the `gpu` extra), if any
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path / MODEL_FILE), sess_options=opts, providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        reason = str(exc).replace(str(path.resolve()), where).replace(str(path), where)
        raise ModelError(f"{where}: {MODEL_FILE} cannot be loaded: {reason}") from None
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise ModelError(f"BESTMATCH_ONNX_DEVICE=cuda but the CUDA provider did not start "
                         f"(providers: {session.get_providers()}); see the `gpu` extra")
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    expected = {INPUT_DENSE, INPUT_QUERY_IDS, INPUT_TITLE_IDS}
    if inputs != expected or OUTPUT_SCORE not in outputs:
        raise ModelError(
            f"{where}: inputs {sorted(inputs)} / outputs {sorted(outputs)}; "
            f"expected inputs {sorted(expected)} and output '{OUTPUT_SCORE}'"
        )
    model = LoadedModel(
        name=manifest["name"], version=str(manifest["version"]), path=path,
        manifest=manifest, session=session, provider=session.get_providers()[0],
    )
    _smoke_test(model)
    return model


def _smoke_test(model: LoadedModel) -> None:
    try:
        out = model.score(
            np.zeros((2, DENSE_DIM), np.float32),
            np.array([[1, 2]], np.int64),
            np.array([[1, 0], [2, 3]], np.int64),
        )
    except Exception as exc:
        raise ModelError(f"{model.name}/{model.version}: test inference failed: {exc}") from None
    if out.shape != (2,) or not np.all(np.isfinite(out)):
        raise ModelError(f"{model.name}/{model.version}: test inference gave shape "
                         f"{out.shape}, values {out}")


class ModelRegistry:
    """The served model; swapped only for a model that passed :func:`load_model`."""

    def __init__(self, models_dir: Path, device: str = "auto", threads: int = 1):
        self.models_dir = models_dir
        self.device = device
        self.threads = threads
        self.current: LoadedModel | None = None
        self.last_error: str | None = None

    def open(self, name: str, version: str = "latest",
             cache: dict[Path, LoadedModel] | None = None) -> LoadedModel:
        """Load and check a model (its own ONNX session) without serving it as default;
        one already in ``cache`` (by directory) is returned as it is."""
        path = resolve_version(self.models_dir, name, version)
        if cache is not None and path in cache:
            return cache[path]
        return load_model(path, self.device, self.threads)

    def load(self, name: str, version: str = "latest") -> LoadedModel:
        try:
            model = self.open(name, version)
        except ModelError as exc:
            self.last_error = str(exc)
            log.error("model refused (models directory %s), keeping %s: %s",
                      self.models_dir, self.current and self.current.describe(), exc)
            raise
        self.current = model
        self.last_error = None
        log.info("serving model %s", model.describe())
        return model
