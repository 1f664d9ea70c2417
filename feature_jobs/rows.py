"""Reading JSON-lines input with bad rows counted and set aside, never dropped silently."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass
class Rejects:
    """Counts rejected rows and writes each, with its reason, to a JSON-lines file."""

    path: Path | None
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    _out: IO[bytes] | None = None

    def add(self, line_no: int, reason: str, raw: str | bytes) -> None:
        self.count += 1
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        if self.path is None:
            return
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.path, "wb")
        raw_text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        self._out.write(orjson.dumps({"line": line_no, "reason": reason, "row": raw_text}))
        self._out.write(b"\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
    )


class ValidRows(Generic[M]):
    """Iterate validated models from JSON lines; failures go to ``rejects``."""

    def __init__(self, lines: Iterable[bytes | str], model: type[M], rejects: Rejects):
        self.lines = lines
        self.model = model
        self.rejects = rejects
        self.accepted = 0

    def __iter__(self) -> Iterator[M]:
        for line_no, raw in enumerate(self.lines, start=1):
            if not raw.strip():
                continue
            try:
                row = self.model.model_validate(orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                self.rejects.add(line_no, f"malformed JSON: {exc}", raw)
                continue
            except ValidationError as exc:
                self.rejects.add(line_no, f"invalid fields: {_field_errors(exc)}", raw)
                continue
            self.accepted += 1
            yield row
