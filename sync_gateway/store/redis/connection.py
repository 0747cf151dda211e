"""The Redis client, whether Redis is usable now, and the back-off before trying it again.

Every Redis call goes through :meth:`Link.run`, which turns a failure into :class:`Unavailable`
so that the callers fall back to this replica's own state; the up/down transitions are logged
once each and shown by the ``sync_gateway_store_up`` gauge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from sync_gateway.metrics import Metrics

log = structlog.get_logger("sync_gateway.redis")

T = TypeVar("T")

COMMAND_TIMEOUT = 1.0
POOL_SIZE = 64  # connections for commands; a burst of calls queues for one, never fails
BACKOFF_MIN, BACKOFF_MAX = 0.25, 5.0
ERRORS = (RedisError, OSError)


class Unavailable(Exception):
    """Redis cannot be used now: fall back to this replica's own state."""


class Link:
    """The client, whether Redis is usable, and the back-off before trying it again."""

    def __init__(self, client: aioredis.Redis, metrics: Metrics) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self.up = True
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self.on_up: Callable[[], None] = lambda: None
        self.gauge = Gauge(
            "sync_gateway_store_up",
            "1 when the shared store (Redis) answers, 0 while the gateway runs on its own",
            registry=metrics.registry,
            multiprocess_mode="livemin",
        )
        self.fallbacks = Counter(
            "sync_gateway_store_fallbacks",
            "Store or lease operations served per replica because Redis was unavailable",
            ["op"],
            registry=metrics.registry,
        )
        self.gauge.set(1)

    def usable(self) -> bool:
        return self.up or time.monotonic() >= self._retry_at

    async def run(self, op: str, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run one Redis call; raise :class:`Unavailable` (counted) when it cannot be."""
        if not self.usable():
            self.fallbacks.labels(op=op).inc()
            raise Unavailable
        try:
            async with self._slots:
                result = await call(self.client)
        except ERRORS as exc:
            self.failed(exc)
            self.fallbacks.labels(op=op).inc()
            raise Unavailable from exc
        self.ok()
        return result

    async def pipelined(self, op: str, *commands: Callable[[Any], object]) -> list[Any]:
        """Several commands in one round trip (no transaction): their results in order."""

        async def call(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for command in commands:
                command(pipe)
            return await pipe.execute()

        return await self.run(op, call)

    def failed(self, exc: BaseException) -> None:
        if self.up:
            # The error's class only: its text may carry the URL and so a password.
            log.warning("store_down", backend="redis", error=type(exc).__name__)
            self.up = False
            self.gauge.set(0)
            self._backoff = BACKOFF_MIN
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._retry_at = time.monotonic() + self._backoff

    def ok(self) -> None:
        if not self.up:
            log.info("store_up", backend="redis")
            self.up = True
            self.gauge.set(1)
            self.on_up()
