"""A supervisor in miniature that records the headers of every request it is sent: the create,
then a long poll that says "not yet" once, then the finished job (output ``["ok"]``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

JOB = "6b0000000000000000000001"


@asynccontextmanager
async def header_recording_supervisor() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """Its base URL, and the headers of each request in the order they came."""
    seen: list[dict[str, str]] = []
    polls = {"n": 0}
    doc: dict[str, Any] = {"id": JOB, "customer_name": "demo", "state": "in_progress"}

    async def create(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({**doc, "lifecycle": "ready"})

    async def result(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        polls["n"] += 1
        if polls["n"] == 1:
            return web.json_response({}, status=303)
        return web.json_response(
            {**doc, "state": "success", "lifecycle": "finished", "output": ["ok"]}
        )

    app = web.Application()
    app.router.add_post("/demo/task/{task}/job", create)
    app.router.add_get("/job/{job}/result", result)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()
