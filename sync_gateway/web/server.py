"""Serving the app: a connection cap that sheds idle connections first, a deadline for slow
request heads, JSON for requests HTTP cannot parse, and start-up that fails in one line.

aiohttp accepts every connection and waits for a request head forever; a flood of idle
connections would reach the process's open-files limit and stop ``/healthz`` from answering.
Here the server keeps at most ``server.max_connections`` (0: derived from the open-files
limit, leaving room for the upstream pool and the long polls). Past it, the oldest idle
connection (one with no request in progress: idle keep-alive, fresh, or a head still
arriving) is closed to make room; when none is idle, the new connection gets a 503 and is
closed. A head that has not arrived whole within ``server.header_timeout`` closes its
connection. Refusals are logged once per interval with a count, never once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sync_gateway.config import Settings
from sync_gateway.core.errors import StartupError
from sync_gateway.render.common import JSON_CONTENT_TYPE, json_body

log = structlog.get_logger("sync_gateway.server")

SWEEP_SECONDS = 1.0
REPORT_SECONDS = 10.0
_FULL_BODY = json_body(
    {"error": "unavailable", "message": "the gateway has too many connections; retry shortly"}
)
FULL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
    + JSON_CONTENT_TYPE.encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_FULL_BODY)).encode()
    + b"\r\n\r\n"
    + _FULL_BODY
)


def connection_cap(settings: Settings) -> int:
    """``server.max_connections``, or what the open-files limit leaves for clients."""
    if settings.server.max_connections > 0:
        return settings.server.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    up = settings.upstream
    reserve = up.pool_size + up.max_long_polls + 64  # upstream sockets, store, files, logs
    return max(soft - reserve, 16)


class GatewayHandler(RequestHandler):
    """aiohttp's protocol, telling the server when a request starts and ends, and answering
    an unreadable request with JSON that echoes nothing of it."""

    guard: GuardedServer
    head_started: float | None = None

    def data_received(self, data: bytes) -> None:
        if self.head_started is None and self.guard.is_idle(self):
            self.head_started = time.monotonic()
        super().data_received(data)

    def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        # Not a coroutine of its own: aiohttp's is returned as it is, so that a waiting client
        # costs no frame more here. Its end is seen in finish_response, which every answered
        # request passes through (a cancelled one closes its connection instead).
        self.head_started = None
        self.guard.busy(self)
        # aiohttp's keep-alive timer of an idle connection is left running through a request
        # (it fires and finds the connection busy): some 600 bytes a waiting client for
        # nothing. A new one is started when the request ends, as after a connection's first.
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        return super()._handle_request(request, start_time, request_handler)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.guard.idle(self)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400:
            # Its message may quote the request line or a header: an access token.
            log.info("bad_http_request", reason=type(exc).__name__ if exc else "unknown")
            body = {"error": "bad_request", "message": "the request could not be read as HTTP"}
        else:
            log.error("unhandled_error", status=status, error=type(exc).__name__)
            body = {"error": "internal_error", "message": "the gateway failed to answer"}
        resp = web.Response(status=status, body=json_body(body))
        resp.headers["Content-Type"] = JSON_CONTENT_TYPE
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's server with the connection cap and the head deadline."""

    def __init__(self, handler: Any, *, cap: int, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.cap = cap
        self.header_timeout = header_timeout
        self._idle: OrderedDict[RequestHandler, None] = OrderedDict()
        self.refused = 0
        self.shed = 0
        self.timed_out = 0

    def __call__(self) -> RequestHandler:
        handler = GatewayHandler(self, loop=self._loop, **self._kwargs)
        handler.guard = self
        return handler

    def is_idle(self, handler: RequestHandler) -> bool:
        return handler in self._idle

    def busy(self, handler: RequestHandler) -> None:
        self._idle.pop(handler, None)

    def idle(self, handler: RequestHandler) -> None:
        if handler in self._connections:
            self._idle[handler] = None
            self._idle.move_to_end(handler)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.cap and not self._shed_one():
            self.refused += 1
            transport.write(FULL_ANSWER)
            handler.force_close()
            transport.close()
            return
        self._idle[handler] = None

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._idle.pop(handler, None)
        super().connection_lost(handler, exc)

    def _shed_one(self) -> bool:
        """Close the oldest idle connection to make room; False when none is idle."""
        while self._idle:
            oldest, _ = self._idle.popitem(last=False)
            transport = self._connections.get(oldest)
            if transport is None:
                continue
            self.shed += 1
            oldest.force_close()
            transport.close()
            return True
        return False

    def sweep(self) -> None:
        """Close the connections whose request head is overdue."""
        deadline = time.monotonic() - self.header_timeout
        for handler in list(self._idle):
            started = getattr(handler, "head_started", None)
            if started is not None and started < deadline:
                self.timed_out += 1
                self._idle.pop(handler, None)
                handler.force_close()
                transport = self._connections.get(handler)
                if transport is not None:
                    transport.close()

    def report(self) -> None:
        """One line per interval for what the guard did, never one per connection."""
        if self.refused or self.shed or self.timed_out:
            log.warning(
                "connections_limited",
                refused=self.refused,
                shed_idle=self.shed,
                slow_heads_closed=self.timed_out,
                open=len(self._connections),
                cap=self.cap,
            )
            self.refused = self.shed = self.timed_out = 0


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server is the :class:`GuardedServer`, swept once a second."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", settings.server.keepalive_timeout)
        super().__init__(app, **kwargs)
        self._cap = connection_cap(settings)
        self._header_timeout = settings.server.header_timeout
        self._sweeper: asyncio.Task[None] | None = None

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        server = GuardedServer(
            plain.request_handler,
            cap=self._cap,
            header_timeout=self._header_timeout,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(server))
        return server

    async def _sweep(self, server: GuardedServer) -> None:
        reported = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            server.sweep()
            if time.monotonic() - reported >= REPORT_SECONDS:
                server.report()
                reported = time.monotonic()

    async def cleanup(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await super().cleanup()


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The event loop's accept errors (out of file descriptors), once per interval."""
    last = {"at": 0.0, "count": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" not in message:
            loop.default_exception_handler(context)
            return
        last["count"] += 1
        now = time.monotonic()
        if now - last["at"] >= REPORT_SECONDS:
            log.warning("accept_failed", times=last["count"], error=message)
            last["at"], last["count"] = now, 0

    loop.set_exception_handler(handler)


async def serve(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None = None,
    started: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """Serve until cancelled (SIGTERM/SIGINT: the runner's signal handlers), then drain.

    A port that cannot be bound is a :class:`StartupError`, raised after the resources the
    start opened are closed again."""
    server = settings.server
    _quiet_accept_errors(asyncio.get_running_loop())
    runner = GatewayRunner(
        app,
        settings,
        handle_signals=True,
        handler_cancellation=server.handler_cancellation,
        shutdown_timeout=server.drain_seconds + 5.0,
        access_log=None,
    )
    await runner.setup()
    try:
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(
                runner,
                server.host,
                server.port,
                backlog=server.backlog,
                reuse_port=server.workers > 1,
            )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(bind_problem(server.host, server.port, exc)) from None
        if started is not None:
            done = started(site.name)
            if done is not None:
                await done
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"server.port: {where} is already in use: stop what listens there"
            " or choose another port"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"server.port: not allowed to listen on {where}: choose a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"server.host: {host} is not an address of this machine"
    return f"server: cannot listen on {where}: {exc.strerror or exc}"


def run(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None = None,
    started: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """Serve on a new event loop until SIGTERM/SIGINT, then drain and close (as
    ``web.run_app`` does: the serving task is cancelled first, so that its clean-up, the
    drain, runs while the waiting calls still do). A StartupError propagates."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve(app, settings, sock, started))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in rest:
                task.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
