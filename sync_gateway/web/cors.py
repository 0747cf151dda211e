"""Browsers on other origins (CORS), when the operator opts in (``[cors] allow_origins``).

Off by default: no cross-origin access unless origins are listed, because a page that calls
the gateway from a browser acts with its visitor's credentials. aiohttp-cors answers the
preflights (``OPTIONS``, one route beside each of the gateway's, never the job handlers) and
adds the ``Access-Control-*`` headers to the answers of listed origins. Around it the gateway
keeps two rules of its own: it owns those headers (a task's or an upstream's are dropped:
they would widen what the operator allowed), and every answer says ``Vary: Origin``, because
it differs by origin.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from sync_gateway.config import CorsSettings

_OWNED = "access-control-"


async def _owned_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.method != "OPTIONS":  # a preflight's headers are aiohttp-cors's own
        for name in [n for n in response.headers if n.lower().startswith(_OWNED)]:
            del response.headers[name]
    if "origin" not in response.headers.get("Vary", "").lower():
        response.headers.add("Vary", "Origin")


def setup_cors(app: web.Application, cors: CorsSettings) -> None:
    """CORS for every route of ``app`` (register it after the routes), if origins are listed."""
    if not cors.allow_origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=cors.allow_credentials,
        expose_headers=cors.expose_headers,
        allow_headers=cors.allow_headers,
        max_age=cors.max_age,
    )
    config = aiohttp_cors.setup(app, defaults=dict.fromkeys(cors.allow_origins, options))
    for route in list(app.router.routes()):
        config.add(route)
    # Before aiohttp-cors's own hook, which sets the headers (and refuses to find them set).
    app.on_response_prepare.insert(0, _owned_headers)
