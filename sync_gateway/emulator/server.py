"""Running the emulator on a loopback port, restartable without losing its jobs."""

from __future__ import annotations

import structlog
from aiohttp import web

from .app import EmulatorSettings, build_app, shutdown_jobs
from .recipe import load_recipe
from .serving import LoopbackServer, serve_until_cancelled
from .state import EmulatorState

log = structlog.get_logger("sync_gateway.emulator")


class EmulatorServer(LoopbackServer):
    """The emulator app bound to ``host:port``; ``state`` survives ``stop()``/``start()``.

    ``stop()`` closes the listening socket and every open connection; jobs keep running."""

    handler_cancellation = True
    backlog = 4096

    def __init__(self, settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.settings = settings
        self.state = EmulatorState(load_recipe(settings.recipe))

    def make_app(self) -> web.Application:
        return build_app(self.settings, self.state)

    async def start(self) -> None:
        """Bind and serve; after a ``stop()`` it binds the same port again."""
        if self.running:
            return
        self.state.closing = False
        await super().start()
        self.state.api_url = self.url

    async def close(self) -> None:
        """``stop()`` and kill the running subprocesses."""
        await self.stop()
        await shutdown_jobs(self.state)


async def run_emulator(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled (``sync-gateway emulator``)."""
    server = EmulatorServer(settings, host, port)

    def announce() -> None:
        log.info("emulator listening", url=server.url, tasks=len(server.state.recipe.tasks))

    await serve_until_cancelled(server, announce)
