"""Running the emulator on a loopback port, restartable without losing its jobs."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from .app import EmulatorSettings, build_app, shutdown_jobs
from .recipe import load_recipe
from .state import EmulatorState

log = structlog.get_logger("sync_gateway.emulator")


class EmulatorServer:
    """The emulator app bound to ``host:port``; ``state`` survives ``stop()``/``start()``."""

    def __init__(self, settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.state = EmulatorState(load_recipe(settings.recipe))
        self._runner: web.AppRunner | None = None

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
        self.state.closing = False
        app = build_app(self.settings, self.state)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.1, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self.state.api_url = self.url
        self._runner = runner

    async def stop(self) -> None:
        """Close the listening socket and every open connection; jobs keep running."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        """``stop()`` and kill the running subprocesses."""
        await self.stop()
        await shutdown_jobs(self.state)

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_emulator(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled (``sync-gateway emulator``)."""
    server = EmulatorServer(settings, host, port)
    await server.start()
    log.info("emulator listening", url=server.url, tasks=len(server.state.recipe.tasks))
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
