"""Shared fixtures: the supervisor emulator and the gateway on free loopback ports."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses

from sync_gateway.app import create_app
from sync_gateway.config import Settings, load
from sync_gateway.emulator import EmulatorServer, EmulatorSettings
from sync_gateway.logging import configure as configure_logging
from sync_gateway.web.server import GatewayRunner

CUSTOMER = "demo"
TOKEN = "demo-token"
OTHER_TOKEN = "other-token"
REST_TASK = "64ac0b46c06feba9b89ad795"  # "Rest API Response": 100 → success, 200 → 418 failure
API_TEST_TASK = "6538069b3a10575075d0ccb5"  # nested response object, 201 + TheEyeJobId
API_TEST_FLAT_TASK = "6538069b3a10575075d0ccc1"  # flat response object
HELLO_TASK = "65a000000000000000000001"
SLOW_TASK = "65a000000000000000000002"  # sleeps N seconds (arg)
LARGE_TASK = "65a000000000000000000003"
CRASH_TASK = "65a000000000000000000004"
TIMEOUT_TASK = "65a000000000000000000005"
INSTANT_TASK = "65a000000000000000000006"
DELAY_TASK = "65a000000000000000000007"  # finishes after N seconds (arg), no subprocess
OTHER_HELLO_TASK = "65a000000000000000000008"  # customer "other"
UPSTREAM = "http://upstream.test"  # the recordings' upstream, served by aioresponses
TEST_FINGERPRINT_KEY = "a fingerprint key for the tests"
FAST_POLL = {"poll_interval": 0.05, "poll_max_interval": 0.2}


@dataclass
class Gateway:
    """A running gateway: its app, base URL and runner."""

    app: web.Application
    url: str
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(settings: Settings, span_exporter: Any = None) -> Gateway:
    app = create_app(settings, span_exporter=span_exporter)
    # The serving stack of `sync-gateway serve`: connection cap, head deadline, JSON 400s.
    runner = GatewayRunner(app, settings, handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Gateway(app, f"http://127.0.0.1:{port}", runner)


def gateway_settings(upstream_url: str, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {"upstream": {"url": upstream_url}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load(None, {}, overrides)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The logging set-up as it was before the test configured its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiohttp.access").disabled = False


@pytest.fixture
def product_logging(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway's own logging set-up, as ``serve`` makes it (its processors add the call's
    log context to each line), writing the console format to whatever ``sys.stdout`` is at
    each line (the captured one during the test; a line logged as the gateway stops, after the
    capture ended, finds no closed stream). Loggers are not cached (``serve`` caches them)."""
    configure_logging("debug", "console", _CurrentStdout())
    structlog.configure(cache_logger_on_first_use=False)


class _CurrentStdout:
    """A text stream that is whatever ``sys.stdout`` is when it is written to."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False


@pytest.fixture
async def cleanup() -> AsyncIterator[AsyncExitStack]:
    """What a test starts through this is stopped at its end, the last started first."""
    async with AsyncExitStack() as stack:
        yield stack


async def started_gateway(
    cleanup: AsyncExitStack, settings: Settings, span_exporter: Any = None
) -> Gateway:
    gw = await start_gateway(settings, span_exporter)
    cleanup.push_async_callback(gw.stop)
    return gw


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorSettings(min_timeout=0.2)) as server:
        yield server


@pytest.fixture
def make_gateway(cleanup: AsyncExitStack) -> Callable[..., Any]:
    """Start gateways with settings overrides; all are stopped at the end of the test."""

    async def make(upstream_url: str, **sections: dict[str, Any]) -> Gateway:
        return await started_gateway(cleanup, gateway_settings(upstream_url, **sections))

    return make


@pytest.fixture
def route_gateway(cleanup: AsyncExitStack) -> Callable[..., Awaitable[Gateway]]:
    """Start gateways serving one configured route (``routes`` entry), polling fast."""

    async def make(**route: str) -> Gateway:
        settings = load(None, {}, {"upstream": FAST_POLL, "routes": [route]})
        return await started_gateway(cleanup, settings)

    return make


@pytest.fixture
async def gateway(emulator: EmulatorServer, make_gateway: Callable[..., Any]) -> Gateway:
    gw: Gateway = await make_gateway(emulator.url)
    return gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def upstream() -> Iterator[aioresponses]:
    """The recordings' upstream: aioresponses, with the loopback (the gateway) passed through."""
    with aioresponses(passthrough=["http://127.0.0.1"]) as mock:
        yield mock


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], upstream: aioresponses
) -> AsyncIterator[TestClient[Any, Any]]:
    """A gateway in front of :func:`upstream`."""
    app = create_app(gateway_settings(UPSTREAM))
    test_client: TestClient[Any, Any] = await aiohttp_client(app)
    yield test_client
