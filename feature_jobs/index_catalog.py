"""Index a listings catalog into a new versioned index, then move the alias to it.

The alias (what the service searches) moves only after every document was accepted
and the count checks out; on any failure the new index is deleted and the previous
one keeps serving. Rejected input rows are counted and written aside with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.interfaces import SearchEngine
from app.listings import Listing, index_body, index_document
from feature_jobs.rows import Rejects, ValidRows

log = logging.getLogger(__name__)


class IndexingFailed(RuntimeError):
    pass


@dataclass
class IndexReport:
    index: str
    alias: str
    indexed: int
    rejected: int
    reject_reasons: dict[str, int] = field(default_factory=dict)
    previous: list[str] = field(default_factory=list)  # what the alias pointed to before
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0


def new_index_name(alias: str) -> str:
    """``{alias}-YYYYmmddHHMMSS-micros``: names sort in creation order."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(ns // 10**9))
    return f"{alias}-{stamp}-{ns // 1000 % 10**6:06d}"


async def index_catalog(
    engine: SearchEngine,
    alias: str,
    lines: Iterable[bytes | str],
    rejects_path: Path | None = None,
    keep_previous: int = 1,
    replicas: int = 0,
) -> IndexReport:
    started = time.monotonic()
    index = new_index_name(alias)
    await engine.create_index(index, index_body(replicas=replicas))
    rejects = Rejects(rejects_path)
    rows = ValidRows(lines, Listing, rejects)
    try:
        result = await engine.bulk(
            {"_index": index, "_id": doc["id"], "_source": doc}
            for doc in (index_document(listing) for listing in rows)
        )
        if result.errors:
            raise IndexingFailed(
                f"{len(result.errors)} documents refused by the engine, first: {result.errors[0]}"
            )
        await engine.refresh(index)
        count = await engine.count(index)
        if count != rows.accepted:
            raise IndexingFailed(f"index holds {count} documents, expected {rows.accepted}")
    except BaseException:
        log.error("indexing into %s failed; alias %s left unchanged", index, alias)
        await engine.delete_index(index)
        raise
    finally:
        rejects.close()
    previous = await engine.point_alias(alias, index)
    older = [i for i in await engine.indices(f"{alias}-*") if i != index]
    stale = older[: max(len(older) - keep_previous, 0)]
    for old in stale:
        await engine.delete_index(old)
    return IndexReport(
        index=index, alias=alias, indexed=rows.accepted, rejected=rejects.count,
        reject_reasons=rejects.reasons, previous=previous, deleted=stale,
        seconds=round(time.monotonic() - started, 2),
    )
