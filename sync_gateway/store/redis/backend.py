"""The shared store and coordinator put together, with what keeps them going: the connection,
the health check and restart detection, the renewal of leases and pending claims, and the
pub/sub listener."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, cast

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sync_gateway.config import Settings
from sync_gateway.metrics import Metrics
from sync_gateway.store.memory import MemoryStore
from sync_gateway.store.redis.connection import (
    COMMAND_TIMEOUT,
    ERRORS,
    POOL_SIZE,
    Link,
    Unavailable,
)
from sync_gateway.store.redis.coordinator import RedisCoordinator
from sync_gateway.store.redis.keys import PREFIX, RENEW, ms
from sync_gateway.store.redis.store import RedisStore

log = structlog.get_logger("sync_gateway.redis")

LEASE_SECONDS = 10.0  # a dead replica's watch is taken over this long after its last renewal
CHECK_SECONDS = 1.0  # health check, restart detection, and the poll under pub/sub


class RedisBackend:
    """The shared store and coordinator, the health check, pub/sub and renewals."""

    def __init__(
        self, client: aioredis.Redis, settings: Settings, metrics: Metrics, lease: float
    ) -> None:
        self.link = Link(client, metrics)
        retention = settings.retention
        local = MemoryStore(retention.seconds, retention.max_bytes, metrics)
        self.check = min(CHECK_SECONDS, lease / 3)
        self.store = RedisStore(self.link, local, retention.seconds, retention.max_bytes, lease)
        self.coordinator = RedisCoordinator(self.link, uuid.uuid4().hex, lease, self.check)
        self.lease = lease
        self._renew = client.register_script(RENEW)
        self._run_id: str | None = None
        self._write_back: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._kick: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._closed = False
        self.link.on_up = self._recovered

    @classmethod
    async def create(cls, settings: Settings, metrics: Metrics) -> RedisBackend:
        """Connect (a Redis that is down now is tried again later) and start the background
        tasks: health check and renewals, the pub/sub listener."""
        client = aioredis.Redis.from_url(
            settings.store.url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            max_connections=POOL_SIZE + 4,  # and the pub/sub listener's
            # One immediate retry: a pooled connection that died with a restarted Redis is
            # replaced at once; the back-off while Redis is down is ours.
            retry=Retry(NoBackoff(), 1),
        )
        backend = cls(client, settings, metrics, LEASE_SECONDS)
        await backend._tick()
        loop = asyncio.get_running_loop()
        backend._tasks = [
            loop.create_task(backend._maintain(), name="redis:maintain"),
            loop.create_task(backend._listen(), name="redis:listen"),
        ]
        return backend

    def healthy(self) -> bool:
        """Whether this replica uses Redis now (for /readyz): the link's own state, the one
        every store operation follows, not a PING of the moment (a PING can answer while the
        link still waits out its back-off and the replica runs on its own)."""
        return self.link.up

    def _recovered(self) -> None:
        loop = asyncio.get_running_loop()
        if self._write_back is None or self._write_back.done():
            self._write_back = loop.create_task(self.store.write_back())
        # A listener blocked on a connection that died silently: make it reconnect.
        self._kick = loop.create_task(self._hang_up_listener())

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.check)
            await self._tick()

    async def _tick(self) -> None:
        """Health check, restart detection, and renewal of the leases and pending claims."""
        try:
            info = await self.link.run("check", lambda r: r.info("server"))
        except Unavailable:
            return
        run_id = str(info.get("run_id"))
        if self._run_id is not None and run_id != self._run_id:
            log.info("store_restarted", backend="redis")
            self._recovered()
        self._run_id = run_id
        held = [*self.coordinator.held.items(), *self.store.pending()]
        if not held:
            return

        async def renew(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for key, token in held:
                await self._renew([key], [token, ms(self.lease)], pipe)
            return await pipe.execute()

        with contextlib.suppress(Unavailable):
            for (key, _), kept in zip(held, await self.link.run("renew", renew), strict=True):
                if not kept and self.coordinator.held.pop(key, None) is not None:
                    log.warning("lease_lost", key=key.removeprefix(PREFIX + "lease:"))

    async def _listen(self) -> None:
        """Pass "done" messages to the coordinator; reconnect after a failure."""
        channels = PREFIX + "done:"
        while not self._closed:
            if not self.link.up:
                await asyncio.sleep(self.check)
                continue
            pubsub = self._pubsub = self.link.client.pubsub()
            try:
                await pubsub.psubscribe(channels + "*")
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "pmessage":
                        channel = message["channel"].decode("utf-8", "replace")
                        self.coordinator.announced(channel.removeprefix(channels))
            except ERRORS:
                if not self._closed:
                    await asyncio.sleep(self.check)  # the poll covers the gap
            finally:
                self._pubsub = None
                with contextlib.suppress(*ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _hang_up_listener(self) -> None:
        """End the listener's read by closing its connection (it reconnects unless closed):
        redis-py can lose a cancellation that races its reads, a closed socket it cannot."""
        pubsub = self._pubsub
        # redis-py types the attribute by its initial None.
        connection = cast("Connection | None", pubsub.connection if pubsub else None)
        if connection is not None:
            with contextlib.suppress(*ERRORS):
                await connection.disconnect()

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *([self._write_back] if self._write_back else [])]
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=0.5) if tasks else (set(), set())
        if pending:
            await self._hang_up_listener()
            await asyncio.wait(pending, timeout=2)
        for lkey, token in list(self.coordinator.held.items()):
            with contextlib.suppress(*ERRORS):
                await self.coordinator._release([lkey], [token], self.link.client)
        await self.store.close()
        with contextlib.suppress(*ERRORS):
            await self.link.client.aclose()
