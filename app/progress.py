"""The progress-bar interface of long jobs: ``factory(total, desc)`` returns an object with
``update(n)`` and ``close()`` (tqdm's). Jobs default to :class:`NoProgress`; the CLI
passes tqdm."""

from __future__ import annotations


class NoProgress:
    def __init__(self, total: int, desc: str):
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
