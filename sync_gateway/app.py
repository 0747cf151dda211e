"""The app factory, a table of contents: settings → resources (cleanup_ctx) → middleware →
routes. The flow of a call: ``web.parse`` → ``core.jobs`` (create once, find, with
``core.access``) → ``core.engine`` (watch, wait) → ``upstream`` adapter → ``render`` → response.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from sync_gateway.config import Settings
from sync_gateway.core.access import Access, Fingerprints
from sync_gateway.core.engine import Engine
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

VIEWS = web.AppKey("views", tuple[TheEyeViews, RouteViews])


def _session(settings: Settings) -> aiohttp.ClientSession:
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
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
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
    session = _session(settings)
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


async def on_shutdown(app: web.Application) -> None:
    """SIGTERM: the listening socket is closed; waits get the drain period, then a 202."""
    app[ENGINE].begin_drain(app[SETTINGS].server.drain_seconds)


def create_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """The gateway application."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes, middlewares=[context_middleware]
    )
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
