"""A/B experiments: which ranker and image-score blend weight a request gets.

The config is a YAML file (``BESTMATCH_EXPERIMENTS_FILE``)::

    experiments:
      - name: ltr-v1              # unique
        salt: ltr-v1-2026-11      # change it to re-shuffle users
        traffic: 0.2              # share of units in the experiment, 0..1
        arms:
          - name: control
            weight: 1             # relative share inside the experiment (default 1)
            ranker: default       # the service's default model (BESTMATCH_MODEL_*)
          - name: ltr
            ranker: {model: ltr, version: "1"}   # a pinned model, its own ONNX session
            image_weight: 0.2     # default: BESTMATCH_IMAGE_WEIGHT
          - name: recall
            ranker: recall        # the engine's order, no model
          - name: explore
            ranker: default
            explore: {rate: 0.05, top: 20}   # exploration (app/exploration.py)

**Bucketing.** The unit is the user id, or the session id of an anonymous request;
a request with neither gets the default. Per experiment, two independent uniform
draws come from a keyed hash of (salt, unit): one decides whether the unit is in the
experiment (draw < traffic), the other picks the arm by cumulative weight. Assignment
is therefore sticky (same unit, same arm, on every replica), raising ``traffic`` keeps
everyone's arm, and experiments with different salts are independent. When a unit is
in several experiments, the first one in the file decides its ranker: a later
experiment's effective traffic is its own share of the units the earlier ones left.

**Reload.** :class:`ExperimentRegistry` validates a new file completely (field-level
messages) and opens every model it names before swapping it in; a bad file or a model
that cannot load is refused and the previous config keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from app import metrics
from app.scoring import LoadedModel, ModelError, ModelRegistry

log = logging.getLogger(__name__)

NO_EXPERIMENT = "none"
DEFAULT_ARM = "default"


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    version: str = "latest"


class ExploreSpec(BaseModel):
    """Randomise the top of the served order on a share of the arm's requests."""

    model_config = ConfigDict(extra="forbid")
    rate: float = Field(gt=0, le=1, description="share of requests whose top is shuffled")
    top: int = Field(20, ge=2, le=100, description="positions shuffled")


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(1.0, gt=0)
    ranker: Literal["default", "recall"] | ModelRef = "default"
    image_weight: float | None = None
    explore: ExploreSpec | None = None

    @field_validator("ranker", mode="before")
    @classmethod
    def _one_ranker(cls, value):
        """One clear message instead of one per union member."""
        if value in ("default", "recall"):
            return value
        if isinstance(value, dict):
            try:
                return ModelRef.model_validate(value)
            except ValidationError as exc:
                raise ValueError(f"model ranker: {exc.errors()[0]['msg']} "
                                 f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from None
        raise ValueError("must be 'default', 'recall' or {model: NAME, version: V}")


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str = Field(min_length=1)
    traffic: float = Field(ge=0, le=1)
    arms: list[ArmSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_arms(self) -> ExperimentSpec:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiments: list[ExperimentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_experiments(self) -> ExperimentsFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        return self


class ExperimentConfigError(Exception):
    """A config that cannot be served; ``fields`` says where and why."""

    def __init__(self, message: str, fields: list[dict] | None = None):
        super().__init__(message)
        self.fields = fields or []


@dataclass(frozen=True)
class Arm:
    """What a request is served with. ``model`` None: the registry's default model, or
    the engine's order when ``recall_only``."""

    experiment: str
    name: str
    image_weight: float
    model: LoadedModel | None = None
    recall_only: bool = False
    explore: ExploreSpec | None = None


def _key(salt: str, purpose: str, unit: str) -> int:
    digest = hashlib.blake2b(f"{salt}\0{purpose}\0{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket(salt: str, purpose: str, unit: str) -> float:
    """A uniform draw in [0, 1) fixed by (salt, purpose, unit)."""
    return _key(salt, purpose, unit) / 2**64


def request_rng(purpose: str, request_id: str) -> np.random.Generator:
    """A generator fixed by the request id: the same request is randomised the same way."""
    return np.random.default_rng(_key("request", purpose, request_id))


@dataclass(frozen=True)
class Experiments:
    """A validated config with its arms resolved to models."""

    specs: tuple[ExperimentSpec, ...]
    arms: dict[tuple[str, str], Arm]
    default: Arm

    def assign(self, unit: str | None) -> Arm:
        if not unit:
            return self.default
        for spec in self.specs:
            if bucket(spec.salt, "traffic", unit) >= spec.traffic:
                continue
            point = bucket(spec.salt, "arm", unit) * sum(a.weight for a in spec.arms)
            for arm in spec.arms:
                point -= arm.weight
                if point < 0:
                    return self.arms[spec.name, arm.name]
            return self.arms[spec.name, spec.arms[-1].name]  # float rounding at the top
        return self.default

    def describe(self) -> list[dict]:
        return [spec.model_dump() for spec in self.specs]


def parse(text: str) -> ExperimentsFile:
    """Validate a config text; :class:`ExperimentConfigError` with field messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentConfigError(f"not valid YAML: {exc}") from None
    try:
        return ExperimentsFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "file", "message": e["msg"]}
                  for e in exc.errors()]
        raise ExperimentConfigError("invalid experiments config", fields) from None


class ExperimentRegistry:
    """The experiments config being served, and its reload."""

    def __init__(self, path: Path | None, models: ModelRegistry, image_weight: float):
        self.path = path
        self.models = models
        self.image_weight = image_weight
        self.current = Experiments((), {}, self._default())
        self.last_error: str | None = None
        self._stamp: tuple[float, int] | None = None

    def _default(self) -> Arm:
        return Arm(NO_EXPERIMENT, DEFAULT_ARM, self.image_weight)

    def _build(self, config: ExperimentsFile) -> Experiments:
        """Open the models the arms name; those the served config has are reused."""
        opened = {a.model.path: a.model for a in self.current.arms.values() if a.model}
        arms = {}
        for e, spec in enumerate(config.experiments):
            for k, arm in enumerate(spec.arms):
                weight = self.image_weight if arm.image_weight is None else arm.image_weight
                model = None
                if isinstance(arm.ranker, ModelRef):
                    try:
                        model = self.models.open(arm.ranker.model, arm.ranker.version, opened)
                    except ModelError as exc:
                        raise ExperimentConfigError("a model of the config cannot be served", [
                            {"field": f"experiments.{e}.arms.{k}.ranker",
                             "message": str(exc)}]) from None
                    opened[model.path] = model
                arms[spec.name, arm.name] = Arm(spec.name, arm.name, weight, model,
                                                recall_only=arm.ranker == "recall",
                                                explore=arm.explore)
        return Experiments(tuple(config.experiments), arms, self._default())

    def reload(self) -> Experiments:
        """Read, validate and swap in the file; on any error the served config stays."""
        if self.path is None:
            return self.current
        stamp = _stat_stamp(self.path)
        try:
            experiments = self._build(parse(self.path.read_text()))
        except (OSError, ExperimentConfigError) as exc:
            self.last_error = str(exc) + "".join(
                f"; {f['field']}: {f['message']}" for f in getattr(exc, "fields", []))
            metrics.EXPERIMENT_RELOADS.labels("refused").inc()
            log.error("experiments config %s refused, the previous one keeps serving: %s",
                      self.path, self.last_error)
            raise
        self.current, self.last_error = experiments, None
        self._stamp = stamp
        metrics.EXPERIMENT_RELOADS.labels("loaded").inc()
        log.info("experiments config %s loaded: %s", self.path,
                 [s.name for s in experiments.specs])
        return experiments

    def changed(self) -> bool:
        return self.path is not None and _stat_stamp(self.path) != self._stamp

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the file changes (polled); errors are logged, not raised."""
        while True:
            await asyncio.sleep(interval_s)
            if self.changed():
                try:
                    await asyncio.to_thread(self.reload)
                except (OSError, ExperimentConfigError):
                    # not again until it changes
                    self._stamp = _stat_stamp(self.path) if self.path else None


def _stat_stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime, stat.st_size
