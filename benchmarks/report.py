"""How every benchmark script ends: its result, with the machine, printed and saved."""

from __future__ import annotations

import json
import os
from pathlib import Path


def machine() -> str:
    return f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}"


def publish(result: dict, out: str | Path | None = None) -> None:
    """Print ``result`` (with the machine) as JSON, and write it to ``out`` when given."""
    text = json.dumps({**result, "machine": machine()}, indent=2)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)
