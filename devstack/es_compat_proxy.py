"""A loopback proxy that lets the official Elasticsearch client talk to OpenSearch.

The ``elasticsearch`` 8/9 client sends ``application/vnd.elasticsearch+json;
compatible-with=N`` media types (OpenSearch rejects them) and refuses any 2xx answer
without ``X-Elastic-Product: Elasticsearch``. This proxy changes exactly those two
things: request media types become plain ``application/json`` / ``x-ndjson``, and
responses gain the product header. Bodies, paths, methods and status codes pass
through untouched, so the ES adapter's real HTTP path (request building, bulk
helper, error mapping) runs against a real engine.

    python -m devstack.es_compat_proxy --upstream http://127.0.0.1:9201 [--port 0]

prints ``LISTENING http://127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import re

import aiohttp
from aiohttp import web

_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+)\s*;\s*compatible-with=\d+")
_DROP = {"host", "content-length", "transfer-encoding", "connection"}
_KEEP = ("Content-Type", "Content-Encoding")  # response headers passed back


def plain_media_type(value: str) -> str:
    return _COMPAT.sub(lambda m: f"application/{m.group(1)}", value)


def make_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)

    async def session_ctx(app: web.Application):
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    async def forward(request: web.Request) -> web.Response:
        headers = {
            k: plain_media_type(v) if k.lower() in ("content-type", "accept") else v
            for k, v in request.headers.items() if k.lower() not in _DROP
        }
        body = await request.read()
        async with app["session"].request(
            request.method, upstream + request.path_qs, headers=headers, data=body or None
        ) as resp:
            data = await resp.read()
            out = {k: resp.headers[k] for k in _KEEP if k in resp.headers}
            out["X-Elastic-Product"] = "Elasticsearch"
            return web.Response(status=resp.status, body=data, headers=out)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(upstream: str, port: int) -> None:
    runner = web.AppRunner(make_app(upstream.rstrip("/")), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"LISTENING http://127.0.0.1:{bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
