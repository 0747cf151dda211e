"""The app factory: settings → resources (cleanup_ctx) → middlewares → routes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sync_gateway.config import Settings
from sync_gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamRejected,
)
from sync_gateway.metrics import Metrics
from sync_gateway.retention import MemoryStore, ResultStore
from sync_gateway.routes import Handlers, json_response
from sync_gateway.upstream import build_route_adapter, route_name
from sync_gateway.upstream.base import Adapter
from sync_gateway.upstream.http import UpstreamClient
from sync_gateway.upstream.theeye import TheEyeAdapter
from sync_gateway.waiting import Engine

log = structlog.get_logger("sync_gateway.app")

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
ENGINE = web.AppKey("engine", Engine)
STORE = web.AppKey("store", ResultStore)
CLIENT = web.AppKey("client", UpstreamClient)
HANDLERS = web.AppKey("handlers", Handlers)
ADAPTERS = web.AppKey("adapters", dict[str, Adapter])
OPENAPI_PATH = Path(__file__).with_name("openapi.json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON answer here, in one place; never a traceback."""
    try:
        return await handler(request)
    except UpstreamRejected as exc:
        resp = web.Response(status=exc.status, body=exc.body)
        resp.headers["Content-Type"] = exc.content_type or "application/octet-stream"
        return resp
    except GatewayError as exc:
        return json_response(exc.status, exc.payload())
    except web.HTTPRequestEntityTooLarge:
        return json_response(413, PayloadTooLarge("the request body is too large").payload())
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_response(404, NotFound("no such route").payload())
        if exc.status == 405:
            err = BadRequest("this method is not allowed on this route")
            return json_response(405, {**err.payload(), "error": "method_not_allowed"})
        if exc.status < 400:
            raise
        return json_response(exc.status, {"error": "http_error", "message": exc.reason})
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return json_response(
            500, {"error": "internal_error", "message": "the gateway failed to answer"}
        )


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, structured access log, request metrics."""
    request_id = request.headers.get("X-Request-Id", "")[:128] or uuid.uuid4().hex
    if not request_id.isprintable():
        request_id = uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.monotonic()
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        resp.headers["X-Request-Id"] = request_id
        return resp
    finally:
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        request.app[METRICS].requests.labels(route=route_name, status=str(status)).inc()
        log.info(
            "request",
            method=request.method,
            route=route_name,
            path=request.path,
            status=status,
            duration_ms=duration_ms,
        )


async def healthz(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.draining:
        return json_response(503, ServiceUnavailable("the gateway is draining").payload())
    settings = request.app[SETTINGS]
    client = request.app[CLIENT]
    try:
        async with client.session.get(
            settings.upstream.url,
            timeout=aiohttp.ClientTimeout(total=min(2.0, settings.upstream.connect_timeout)),
            allow_redirects=False,
        ) as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        err = ServiceUnavailable("the upstream is not reachable")
        return json_response(503, err.payload())
    return json_response(200, {"status": "ready", "upstream_status": resp.status})


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def _connector(settings: Settings) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        limit=settings.upstream.pool_size,  # 0 = no cap: each watched job may hold a long poll
        limit_per_host=0,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )


async def resources(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession, the store and the engine for the app's life."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    session = aiohttp.ClientSession(
        connector=_connector(settings),
        timeout=aiohttp.ClientTimeout(
            total=settings.upstream.request_timeout, connect=settings.upstream.connect_timeout
        ),
    )
    client = UpstreamClient(session, settings.upstream, metrics)
    store: ResultStore = MemoryStore(
        settings.retention.seconds, settings.retention.max_bytes, metrics
    )
    theeye = TheEyeAdapter("theeye", client, settings.upstream)
    adapters: dict[str, Adapter] = {theeye.name: theeye}
    for index, route in enumerate(settings.routes):
        adapter = build_route_adapter(route, index, client, settings.upstream)
        adapters[adapter.name] = adapter
    engine = Engine(adapters, store, settings, metrics)
    app[CLIENT] = client
    app[STORE] = store
    app[ENGINE] = engine
    app[ADAPTERS] = adapters
    app[HANDLERS] = Handlers(settings, engine, store, theeye, metrics)
    try:
        yield
    finally:
        await engine.close()
        await store.close()
        await session.close()


async def on_shutdown(app: web.Application) -> None:
    """SIGTERM: the listening socket is closed; waits get the drain period, then a 202."""
    app[ENGINE].begin_drain(app[SETTINGS].server.drain_seconds)


def _configured_handler(name: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[HANDLERS].configured(request, request.app[ADAPTERS][name])

    return handler


async def configured_result(request: web.Request) -> web.StreamResponse:
    return await request.app[HANDLERS].configured_result(request)


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of the client-facing API."""
    if not OPENAPI_PATH.exists():
        raise NotFound("no OpenAPI document is bundled")
    return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/json"})


def _routes(app: web.Application) -> None:
    async def create_and_wait(request: web.Request) -> web.StreamResponse:
        return await request.app[HANDLERS].create_and_wait(request)

    async def create_compat(request: web.Request) -> web.StreamResponse:
        return await request.app[HANDLERS].create_compat(request)

    async def result(request: web.Request) -> web.StreamResponse:
        return await request.app[HANDLERS].result(request)

    app.router.add_post("/{customer}/task/{task}/job", create_and_wait)
    app.router.add_post("/{customer}/task/{task}/secret/{secret}/job", create_and_wait)
    app.router.add_post("/task/{task}/job", create_compat)
    app.router.add_post("/task/{task}/secret/{secret}/job", create_compat)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/job/{job}/result", result)
        app.router.add_route(method, "/job/{job}/secret/{secret}/result", result)
    for index, configured in enumerate(app[SETTINGS].routes):
        app.router.add_route(
            configured.method, configured.path, _configured_handler(route_name(configured, index))
        )
    for method in ("GET", "POST"):
        app.router.add_route(method, "/jobs/{adapter}/{job}/result", configured_result)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)


def create_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """The gateway application."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[context_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics if metrics is not None else Metrics()
    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    _routes(app)
    return app
