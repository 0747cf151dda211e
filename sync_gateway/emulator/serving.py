"""What the emulators share: serving an app on a loopback port, recording exchanges, the CLI.

:class:`LoopbackServer` is the start/stop/``async with`` of :class:`~.server.EmulatorServer`,
:class:`~.executejob_emulator.ExecuteJobEmulator` and
:class:`~.location_emulator.LocationEmulator` (the last two as :class:`ScenarioEmulator`);
the rest serves the two protocol emulators' ``record`` and ``serve`` commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Recordings = dict[str, dict[str, Any]]
S = TypeVar("S")
J = TypeVar("J")
E = TypeVar("E", bound="ScenarioEmulator[Any, Any]")
RECORDED_ORIGIN = "http://upstream.test"


class LoopbackServer:
    """An app bound to ``host:port`` (port 0: a free one, kept for a restart after ``stop()``).

    Subclasses say which app (:meth:`make_app`); ``async with`` starts and closes it."""

    handler_cancellation = False
    backlog = 128  # aiohttp's TCPSite default

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        """The app to serve, built anew at every start."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Bind and serve; after a ``stop()`` it binds the same port again."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            shutdown_timeout=0.1,
            handler_cancellation=self.handler_cancellation,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=self.backlog)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if runner.addresses:
            self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Close the listening socket and every open connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        """Stop for good (subclasses release more)."""
        await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class ScenarioState(Generic[S, J]):
    """What a protocol emulator remembers: its settings (read at every request, replace to
    change), its jobs by id, the requests by kind, every request and answer."""

    settings: S
    jobs: dict[str, J] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    exchanges: list[dict[str, Any]] = field(default_factory=list)


class ScenarioEmulator(LoopbackServer, Generic[S, J]):
    """A protocol emulator on a loopback port, around its :class:`ScenarioState`."""

    def __init__(self, state: ScenarioState[S, J], host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.state = state

    @property
    def settings(self) -> S:
        return self.state.settings

    @settings.setter
    def settings(self, value: S) -> None:
        self.state.settings = value

    @property
    def counts(self) -> Counter[str]:
        return self.state.counts


async def serve_until_cancelled(server: LoopbackServer, announce: Callable[[], None]) -> None:
    """Start ``server``, ``announce()`` it, serve until cancelled, then close it."""
    await server.start()
    announce()
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


async def serve_on_port(server: LoopbackServer, port: int) -> None:
    """Serve on ``port`` (0: a free one), print the URL, serve until interrupted."""
    server.port = port
    await serve_until_cancelled(server, lambda: print(server.url, flush=True))


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def exchange_recorder(
    exchanges_of: Callable[[web.Application], list[dict[str, Any]]],
    kept_headers: Collection[str],
    kept_request_headers: Collection[str] | None = None,
) -> Middleware:
    """A middleware keeping every request and answer (the answer's ``kept_headers``, and the
    request's ``kept_request_headers`` when given) in ``exchanges_of(app)``."""

    @web.middleware
    async def record_exchange(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        resp = await handler(request)
        sent = resp.body if isinstance(resp, web.Response) else None
        sent = sent if isinstance(sent, bytes | bytearray) else b""
        exchange: dict[str, Any] = {"method": request.method, "url": str(request.url)}
        if kept_request_headers is not None:
            exchange["request_headers"] = {
                str(k): v for k, v in request.headers.items() if k in kept_request_headers
            }
        exchange |= {
            "request_body": body.decode("utf-8", "replace"),
            "status": resp.status,
            "headers": {k: resp.headers[k] for k in kept_headers if k in resp.headers},
            "body": bytes(sent).decode("utf-8", "replace"),
        }
        exchanges_of(request.app).append(exchange)
        return resp

    return record_exchange


def placeholders(exchanges: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """The exchanges with the emulator's ``origin`` replaced by :data:`RECORDED_ORIGIN`."""
    text = orjson.dumps(exchanges).decode().replace(origin, RECORDED_ORIGIN)
    cleaned: list[dict[str, Any]] = orjson.loads(text)
    return cleaned


async def record_scenarios(
    scenarios: Mapping[str, tuple[str, S]],
    emulator: Callable[[S], E],
    drive: Callable[[aiohttp.ClientSession, E, str], Awaitable[None]],
) -> Recordings:
    """Run every scenario (``{name: (description, settings)}``) against a fresh
    ``emulator(settings)``, ``drive(session, emulator, name)``: ``{scenario: recording}``."""
    recordings = {}
    async with aiohttp.ClientSession() as session:
        for name, (description, settings) in scenarios.items():
            async with emulator(settings) as emu:
                await drive(session, emu, name)
                exchanges = placeholders(emu.state.exchanges, emu.url)
            recordings[name] = {
                "scenario": name,
                "description": description,
                "exchanges": exchanges,
            }
    return recordings


def write_recordings(out_dir: Path, recordings: Recordings) -> list[Path]:
    """One ``<scenario>.json`` per recording."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in recordings.items():
        path = out_dir / f"{name}.json"
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        written.append(path)
    return written


def emulator_main(
    description: str,
    record: Callable[[], Coroutine[Any, Any, Recordings]],
    serve: Callable[[float, int], Coroutine[Any, Any, None]],
) -> None:
    """The ``record OUT_DIR`` / ``serve [--port] [--duration]`` command line of an emulator;
    ``serve(duration, port)`` serves until interrupted."""
    parser = argparse.ArgumentParser(description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="write the replay tests' recordings")
    rec.add_argument("out_dir", type=Path, help="where to write the JSON recordings")
    run = commands.add_parser("serve", help="serve on a loopback port")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--duration", type=float, default=2.0, help="seconds a job runs")
    args = parser.parse_args()
    if args.command == "record":
        for path in write_recordings(args.out_dir, asyncio.run(record())):
            print(path)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.duration, args.port))
