"""The app factory: settings → resources (cleanup_ctx) → middlewares → routes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sync_gateway.answers import json_response
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
from sync_gateway.routes import Handlers
from sync_gateway.upstream import build_route_adapter, route_name
from sync_gateway.upstream.base import Adapter
from sync_gateway.upstream.http import UpstreamClient
from sync_gateway.upstream.theeye import TheEyeAdapter
from sync_gateway.waiting import Engine

if TYPE_CHECKING:
    from sync_gateway.shared_store import RedisBackend

log = structlog.get_logger("sync_gateway.app")

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
ENGINE = web.AppKey("engine", Engine)
STORE = web.AppKey("store", ResultStore)
CLIENT = web.AppKey("client", UpstreamClient)
HANDLERS = web.AppKey("handlers", Handlers)
ADAPTERS = web.AppKey("adapters", dict[str, Adapter])
REDIS: web.AppKey[RedisBackend] = web.AppKey("redis")  # only with [store] backend = "redis"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every error becomes a JSON answer here, in one place; never a traceback.

    Re-raises what is not an error (an HTTPException below 400: a redirect)."""
    if isinstance(exc, UpstreamRejected):
        resp = web.Response(status=exc.status, body=exc.body)
        resp.headers["Content-Type"] = exc.content_type or "application/octet-stream"
        for name, value in exc.headers:
            resp.headers[name] = value
    elif isinstance(exc, GatewayError):
        resp = json_response(exc.status, exc.payload())
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        return json_response(413, PayloadTooLarge("the request body is too large").payload())
    elif isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        if exc.status == 404:
            return json_response(404, NotFound("no such route").payload())
        if exc.status == 405:
            err = BadRequest("this method is not allowed on this route")
            allow = [("Allow", exc.headers["Allow"])] if "Allow" in exc.headers else []
            return json_response(405, {**err.payload(), "error": "method_not_allowed"}, allow)
        return json_response(exc.status, {"error": "http_error", "message": exc.reason})
    else:
        log.error("unhandled_error", path=request.path, exc_info=exc)
        return json_response(
            500, {"error": "internal_error", "message": "the gateway failed to answer"}
        )
    if "job_id" in exc.extra:
        resp.headers["X-Job-Id"] = str(exc.extra["job_id"])
    return resp


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one structured log line per request, request metrics, JSON errors."""
    request_id = request.headers.get("X-Request-Id", "")[:128]
    if not (request_id.isascii() and request_id.isprintable()) or not request_id:
        request_id = uuid.uuid4().hex
    resource = request.match_info.route.resource
    # The route's pattern, never the path: a bounded label set with no ids or secrets in it.
    route_name = resource.canonical if resource is not None else "unmatched"
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, route=route_name)
    started = time.monotonic()
    status = 500
    job_id: str | None = None
    try:
        # Errors are answered right here rather than in a middleware of their own: one
        # coroutine frame less for each of thousands of waiting clients.
        try:
            resp = await handler(request)
        except Exception as exc:
            resp = error_answer(request, exc)
        status = resp.status
        job_id = resp.headers.get("X-Job-Id")
        resp.headers["X-Request-Id"] = request_id
        return resp
    except web.HTTPException as exc:  # a redirect, re-raised by error_answer
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client hung up (nginx's convention); the job itself goes on
        raise
    finally:
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        request.app[METRICS].requests.labels(route=route_name, status=str(status)).inc()
        # Handlers bind job_id as soon as they know it; X-Job-Id covers the rest.
        extra = {"job_id": job_id} if job_id else {}
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=duration_ms,
            **extra,
        )


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Stays 200 while draining."""
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: not draining, and the upstream answers (any status below 500) in time."""
    if request.app[ENGINE].draining:
        err = ServiceUnavailable("the gateway is draining: it takes no new work", reason="draining")
        return json_response(503, err.payload())
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
        err = ServiceUnavailable(
            f"the upstream did not answer within {seconds:g} s", reason="upstream_timeout"
        )
        return json_response(503, err.payload())
    except (aiohttp.ClientError, OSError):
        metrics.upstream_requests.labels(kind="readiness", status="connect_error").inc()
        err = ServiceUnavailable("the upstream is not reachable", reason="upstream_unreachable")
        return json_response(503, err.payload())
    metrics.upstream_requests.labels(kind="readiness", status=str(status)).inc()
    if status >= 500:
        err = ServiceUnavailable(
            f"the upstream answered {status}", reason="upstream_error", upstream_status=status
        )
        return json_response(503, err.payload())
    # A shared store that is down does not make a replica unready: every replica shares it,
    # and each keeps serving on its own until it returns. Readiness says so all the same.
    store = "memory"
    backend = request.app.get(REDIS)
    if backend is not None:
        store = "up" if await backend.healthy() else "down"
    return json_response(200, {"status": "ready", "upstream_status": status, "store": store})


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text format (every worker's values with ``--workers`` > 1)."""
    resp = web.Response(body=request.app[METRICS].exposition())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def _connector(settings: Settings) -> aiohttp.TCPConnector:
    up = settings.upstream
    return aiohttp.TCPConnector(
        # ordinary requests are bounded by pool_size, long polls by max_long_polls
        limit=up.pool_size + up.max_long_polls if up.pool_size > 0 else 0,
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
            total=settings.upstream.request_timeout, sock_connect=settings.upstream.connect_timeout
        ),
    )
    client = UpstreamClient(session, settings.upstream, metrics)
    backend: RedisBackend | None = None
    if settings.store.backend == "redis":
        from sync_gateway.shared_store import RedisBackend  # redis stays an optional extra

        backend = await RedisBackend.create(settings, metrics)
        app[REDIS] = backend
    store: ResultStore = (
        backend.store
        if backend is not None
        else MemoryStore(settings.retention.seconds, settings.retention.max_bytes, metrics)
    )
    theeye = TheEyeAdapter("theeye", client, settings.upstream)
    adapters: dict[str, Adapter] = {theeye.name: theeye}
    for index, route in enumerate(settings.routes):
        adapter = build_route_adapter(route, index, client, settings.upstream)
        adapters[adapter.name] = adapter
    coordinator = backend.coordinator if backend is not None else None
    engine = Engine(adapters, store, settings, metrics, coordinator=coordinator)
    app[CLIENT] = client
    app[STORE] = store
    app[ENGINE] = engine
    app[ADAPTERS] = adapters
    app[HANDLERS].attach(engine, store, theeye)
    try:
        yield
    finally:
        await engine.close()
        await (backend.close() if backend is not None else store.close())
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
    handlers = app[HANDLERS]
    # The TheEye routes are the handlers' own bound methods: no wrapper frame per waiting
    # client. `create` tells the blocking routes (with a customer) from the compatible ones.
    for path in (
        "/{customer}/task/{task}/job",
        "/{customer}/task/{task}/secret/{secret}/job",
        "/task/{task}/job",
        "/task/{task}/secret/{secret}/job",
    ):
        app.router.add_post(path, handlers.create)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/job/{job}/result", handlers.result)
        app.router.add_route(method, "/job/{job}/secret/{secret}/result", handlers.result)
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
        middlewares=[context_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics if metrics is not None else Metrics()
    app[HANDLERS] = Handlers(settings, app[METRICS])
    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    _routes(app)
    return app
