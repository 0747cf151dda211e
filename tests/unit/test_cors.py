"""The gateway's own rules around aiohttp-cors (web/cors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from sync_gateway.config import CorsSettings
from sync_gateway.web.cors import setup_cors

ALLOWED = "http://a.test"


async def widening(request: web.Request) -> web.Response:
    """What a task's response object or an upstream could answer."""
    return web.Response(
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Credentials": "true",
            "X-Job-Id": "1",
        }
    )


async def test_the_gateway_owns_the_access_control_headers(
    aiohttp_client: Callable[..., Any],
) -> None:
    app = web.Application()
    app.router.add_get("/", widening)
    setup_cors(app, CorsSettings(allow_origins=(ALLOWED,)))
    client = await aiohttp_client(app)
    async with client.get("/", headers={"Origin": ALLOWED}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert resp.headers["X-Job-Id"] == "1"
        assert resp.headers["Vary"] == "Origin"
    async with client.get("/", headers={"Origin": "http://b.test"}) as resp:
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        assert resp.headers["Vary"] == "Origin"


async def test_no_origins_listed_leaves_the_app_as_it_was(
    aiohttp_client: Callable[..., Any],
) -> None:
    app = web.Application()
    app.router.add_get("/", widening)
    setup_cors(app, CorsSettings())
    assert sorted(r.method for r in app.router.routes()) == ["GET", "HEAD"]  # no OPTIONS
    client = await aiohttp_client(app)
    async with client.get("/", headers={"Origin": ALLOWED}) as resp:
        # Off: nothing added, nothing removed (what tasks may set is task_headers_denied).
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in resp.headers
