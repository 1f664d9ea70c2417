"""Search-engine adapters: Elasticsearch (official async client) and OpenSearch.

Both clients descend from the same code base and take the same request bodies, so one
adapter class drives either; only construction, the bulk helper and the exception
types differ (see :func:`connect`). Everything above this module sees plain dicts and
two exceptions: :class:`EngineUnavailable` (connection, timeout, 5xx) and
:class:`EngineRequestError` (the engine refused the request, 4xx). A typed
:class:`app.recall.RecallQuery` becomes the engines' request body in
:func:`app.recall.to_engine_json`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from app.interfaces import BulkResult, EngineRequestError, EngineUnavailable
from app.recall import RecallQuery, to_engine_json


def _body(resp: Any) -> Any:
    return getattr(resp, "body", resp)  # elasticsearch returns ObjectApiResponse


class Engine:
    """One engine cluster behind either official client."""

    def __init__(
        self,
        kind: str,
        client: Any,
        bulk: Callable,
        unavailable: tuple[type[BaseException], ...],
        api_error: type[BaseException],
        status_of: Callable[[BaseException], int],
    ):
        self.kind = kind
        self.client = client
        self._bulk = bulk
        self._unavailable = unavailable
        self._api_error = api_error
        self._status_of = status_of

    async def _call(self, coro):
        try:
            return _body(await coro)
        except self._unavailable as exc:
            raise EngineUnavailable(f"{self.kind}: {type(exc).__name__}: {exc}") from exc
        except self._api_error as exc:
            status = self._status_of(exc)
            if status >= 500 or status == 429:
                raise EngineUnavailable(f"{self.kind} answered {status}: {exc}") from exc
            raise EngineRequestError(f"{self.kind} answered {status}: {exc}", status) from exc

    async def search(self, index: str, query: RecallQuery) -> list[dict]:
        resp = await self._call(self.client.search(index=index, body=to_engine_json(query)))
        return resp["hits"]["hits"]

    async def health(self, index: str | None = None) -> dict:
        """Cluster health, or the health of ``index`` (an alias works) when given."""
        return await self._call(self.client.cluster.health(index=index))

    async def create_index(self, name: str, body: dict) -> None:
        await self._call(self.client.indices.create(index=name, body=body))

    async def delete_index(self, name: str) -> None:
        await self._call(self.client.indices.delete(index=name))

    async def refresh(self, index: str) -> None:
        await self._call(self.client.indices.refresh(index=index))

    async def count(self, index: str) -> int:
        return (await self._call(self.client.count(index=index)))["count"]

    async def indices(self, pattern: str) -> list[str]:
        return sorted(await self._call(self.client.indices.get(index=pattern)))

    async def alias_targets(self, alias: str) -> list[str]:
        """Indices the alias points to now ([] when it does not exist)."""
        exists = await self._call(self.client.indices.exists_alias(name=alias))
        if not exists:
            return []
        return sorted(await self._call(self.client.indices.get_alias(name=alias)))

    async def point_alias(self, alias: str, index: str) -> list[str]:
        """Atomically move ``alias`` to ``index``; returns the indices it left."""
        old = [i for i in await self.alias_targets(alias) if i != index]
        actions = [{"remove": {"index": i, "alias": alias}} for i in old]
        actions.append({"add": {"index": index, "alias": alias}})
        await self._call(self.client.indices.update_aliases(body={"actions": actions}))
        return old

    async def bulk(self, actions: Iterable[dict], chunk_size: int = 1000) -> BulkResult:
        """Send bulk actions; per-document failures are returned, not raised."""
        try:
            indexed, errors = await self._bulk(
                self.client, actions, chunk_size=chunk_size, raise_on_error=False,
                max_retries=3,
            )
        except self._unavailable as exc:
            raise EngineUnavailable(f"{self.kind} bulk: {exc}") from exc
        return BulkResult(indexed=indexed, errors=list(errors))

    async def close(self) -> None:
        await self.client.close()


def connect(kind: str, url: str, timeout_s: float) -> Engine:
    """An :class:`Engine` for ``kind`` ("opensearch" or "elasticsearch") at ``url``."""
    if kind == "opensearch":
        return _opensearch(url, timeout_s)
    if kind == "elasticsearch":
        return _elasticsearch(url, timeout_s)
    raise ValueError(f"unknown engine kind {kind!r} (opensearch | elasticsearch)")


def _opensearch(url: str, timeout_s: float) -> Engine:
    import opensearchpy
    from opensearchpy.helpers import async_bulk
    from opensearchpy.serializer import JSONSerializer

    class _Orjson(JSONSerializer):
        def loads(self, s):
            return orjson.loads(s)

    def status_of(exc: BaseException) -> int:
        status = getattr(exc, "status_code", None)
        return status if isinstance(status, int) else 500

    client = opensearchpy.AsyncOpenSearch(
        hosts=[url], timeout=timeout_s, serializer=_Orjson(), maxsize=32
    )
    return Engine(
        "opensearch", client, async_bulk,
        unavailable=(opensearchpy.ConnectionError, opensearchpy.ConnectionTimeout),
        api_error=opensearchpy.TransportError, status_of=status_of,
    )


def _elasticsearch(url: str, timeout_s: float) -> Engine:
    import elastic_transport
    import elasticsearch
    from elasticsearch.helpers import async_bulk
    from elasticsearch.serializer import OrjsonSerializer

    client = elasticsearch.AsyncElasticsearch(
        url, request_timeout=timeout_s, serializer=OrjsonSerializer(), connections_per_node=32,
    )
    return Engine(
        "elasticsearch", client, async_bulk,
        unavailable=(elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout),
        api_error=elasticsearch.ApiError,
        status_of=lambda exc: int(getattr(getattr(exc, "meta", None), "status", 500)),
    )
