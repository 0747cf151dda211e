"""The app factory, a table of contents: settings → resources (cleanup_ctx) → middleware →
routes. The flow of a call: ``web.parse`` → ``core.jobs`` (create once, find, with
``core.access``) → ``core.engine`` (watch, wait) → ``upstream`` adapter → ``render`` → response.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from sync_gateway.config import Settings
from sync_gateway.core.access import Access, Fingerprints
from sync_gateway.core.engine import Engine
from sync_gateway.core.errors import StartupError
from sync_gateway.core.following import Follower
from sync_gateway.core.jobs import Jobs
from sync_gateway.metrics import Metrics
from sync_gateway.render.common import HeaderLimits
from sync_gateway.store import redis_backend
from sync_gateway.store.base import ResultStore
from sync_gateway.store.memory import MemoryStore
from sync_gateway.upstream import build_adapters
from sync_gateway.upstream.http import UpstreamClient
from sync_gateway.web.cors import setup_cors
from sync_gateway.web.errors import context_middleware
from sync_gateway.web.keys import ADAPTERS, CLIENT, ENGINE, JOBS, METRICS, REDIS, SETTINGS, STORE
from sync_gateway.web.routes import add_routes
from sync_gateway.web.views_routes import RouteViews
from sync_gateway.web.views_theeye import TheEyeViews

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from sync_gateway.telemetry import Telemetry

VIEWS = web.AppKey("views", tuple[TheEyeViews, RouteViews])
TELEMETRY: web.AppKey[Telemetry | None] = web.AppKey("telemetry")


def _session(
    settings: Settings, trace_configs: list[aiohttp.TraceConfig] | None = None
) -> aiohttp.ClientSession:
    """The one ClientSession: ordinary requests bounded by pool_size, long polls apart.

    No cookie jar: the session is shared by every caller, so a cookie one caller's request
    earned upstream must never ride along on another's (the upstream authenticates by the
    token each request forwards); and no cookie is then filtered or parsed per request."""
    up = settings.upstream
    connector = aiohttp.TCPConnector(
        limit=up.pool_size + up.max_long_polls if up.pool_size > 0 else 0,
        limit_per_host=0,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(total=up.request_timeout, sock_connect=up.connect_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=trace_configs,
    )


async def resources(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession, the store, the adapters, the engine for the app's life."""
    settings, metrics = app[SETTINGS], app[METRICS]
    store: ResultStore
    if settings.store.backend == "redis":
        backend = app[REDIS] = await redis_backend().create(settings, metrics)
        store, coordinator = backend.store, backend.coordinator
    else:
        store = MemoryStore(settings.retention.seconds, settings.retention.max_bytes, metrics)
        coordinator = None
    # One process with the memory store: a key of its own (its creators live and die with it).
    key = settings.security.fingerprint_key.encode() or secrets.token_bytes(32)
    fingerprints = Fingerprints(key)
    telemetry = app[TELEMETRY]
    session = _session(settings, telemetry.trace_configs() if telemetry else None)
    client = UpstreamClient(session, settings.upstream, metrics)
    adapters = build_adapters(settings, client)
    follower = Follower(adapters, store, settings, metrics, coordinator)
    engine = Engine(follower, fingerprints)
    jobs = Jobs(engine, store, Access(fingerprints, adapters), settings)
    app[CLIENT], app[STORE], app[ENGINE], app[JOBS], app[ADAPTERS] = (
        client,
        store,
        engine,
        jobs,
        adapters,
    )
    for views in app[VIEWS]:
        views.attach(jobs, adapters)
    try:
        yield
    finally:
        await engine.close()
        shared = app.get(REDIS)
        await (shared.close() if shared is not None else store.close())
        await session.close()
        if telemetry is not None:
            await telemetry.close()


async def on_shutdown(app: web.Application) -> None:
    """SIGTERM: the listening socket is closed; waits get the drain period, then a 202."""
    app[ENGINE].begin_drain(app[SETTINGS].server.drain_seconds)


def telemetry_class() -> type[Telemetry]:
    """The OpenTelemetry wiring, imported only when tracing is enabled (an optional extra)."""
    try:
        from sync_gateway.telemetry import Telemetry
    except ImportError as exc:
        raise StartupError(
            f"tracing.enabled needs the tracing extra (pip install 'sync-gateway[tracing]'): {exc}"
        ) from exc
    return Telemetry


def _telemetry(settings: Settings, span_exporter: SpanExporter | None) -> Telemetry | None:
    if not settings.tracing.enabled:
        return None
    return telemetry_class()(settings.tracing, span_exporter)


def create_app(
    settings: Settings, metrics: Metrics | None = None, span_exporter: SpanExporter | None = None
) -> web.Application:
    """The gateway application (``span_exporter``: with ``[tracing] enabled``, an OpenTelemetry
    exporter of the caller's instead of the one the settings name)."""
    telemetry = _telemetry(settings, span_exporter)
    make = telemetry.application if telemetry is not None else web.Application
    app = make(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[context_middleware, *(telemetry.middlewares() if telemetry else ())],
    )
    app[TELEMETRY] = telemetry
    app[SETTINGS] = settings
    app[METRICS] = metrics if metrics is not None else Metrics()
    limits = HeaderLimits(denied=settings.security.task_headers_denied)
    views = (
        TheEyeViews(settings, app[METRICS], limits),
        RouteViews(settings, app[METRICS], limits),
    )
    app[VIEWS] = views
    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    add_routes(app.router, settings, *views)
    setup_cors(app, settings.cors)  # after the routes: it answers their preflights
    return app
