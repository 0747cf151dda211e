"""Operations: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from sync_gateway.core.errors import NotFound, ServiceUnavailable
from sync_gateway.web.keys import CLIENT, ENGINE, METRICS, REDIS, SETTINGS
from sync_gateway.web.respond import json_response

OPENAPI_PATH = Path(__file__).parent.parent / "openapi.json"


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Stays 200 while draining."""
    return json_response(200, {"status": "ok"})


def _unready(message: str, reason: str, **extra: object) -> web.Response:
    return json_response(503, ServiceUnavailable(message, reason=reason, **extra).payload())


async def readyz(request: web.Request) -> web.Response:
    """Readiness: not draining, and the upstream answers (any status below 500) in time."""
    if request.app[ENGINE].draining:
        return _unready("the gateway is draining: it takes no new work", "draining")
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    seconds = min(2.0, settings.upstream.connect_timeout)
    try:
        async with request.app[CLIENT].session.get(
            settings.upstream.url,
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
        ) as resp:
            status = resp.status
    except TimeoutError:
        metrics.upstream_requests.labels(kind="readiness", status="timeout").inc()
        return _unready(f"the upstream did not answer within {seconds:g} s", "upstream_timeout")
    except (aiohttp.ClientError, OSError):
        metrics.upstream_requests.labels(kind="readiness", status="connect_error").inc()
        return _unready("the upstream is not reachable", "upstream_unreachable")
    metrics.upstream_requests.labels(kind="readiness", status=str(status)).inc()
    if status >= 500:
        return _unready(f"the upstream answered {status}", "upstream_error", upstream_status=status)
    # A shared store that is down does not make a replica unready: every replica shares it,
    # and each keeps serving on its own until it returns. Readiness says so all the same.
    store = "memory"
    backend = request.app.get(REDIS)
    if backend is not None:
        store = "up" if backend.healthy() else "down"
    return json_response(200, {"status": "ready", "upstream_status": status, "store": store})


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text format 0.0.4, or OpenMetrics when the scraper's ``Accept`` asks for it
    (every worker's values with ``--workers`` > 1)."""
    body, content_type = request.app[METRICS].negotiated(request.headers.get("Accept"))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    resp.headers["Vary"] = "Accept"
    return resp


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of the client-facing API."""
    if not OPENAPI_PATH.exists():
        raise NotFound("no OpenAPI document is bundled")
    return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/json"})
