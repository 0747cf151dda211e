"""Idempotency claims shared by the replicas: ``idem:{sha256}`` holds ``pending:{token}``
while the claiming replica's create runs (renewed with the leases, so it lapses soon after
that replica dies), then the job's ref. While Redis is down a claim falls back to the
replica's own memory store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sync_gateway.core.types import JobRef
from sync_gateway.store.memory import MemoryStore
from sync_gateway.store.redis import codec
from sync_gateway.store.redis.connection import Link, Unavailable
from sync_gateway.store.redis.keys import CLAIM, PREFIX, RELEASE, SETTLE, ms


@dataclass(eq=False, slots=True)
class _Claim:
    """An idempotency key claimed in Redis by this replica, until its outcome is written."""

    rkey: str
    token: bytes
    future: asyncio.Future[JobRef]


class RedisClaims:
    """Claim, follow and settle idempotency keys in Redis, with a local fallback."""

    def __init__(self, link: Link, local: MemoryStore, seconds: float, lease: float) -> None:
        self.link = link
        self.local = local
        self.seconds = seconds
        self.lease = lease
        self._claims: dict[str, _Claim] = {}
        self._fallback_claims: set[str] = set()
        self._remote: dict[str, asyncio.Future[JobRef]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim = link.client.register_script(CLAIM)
        self._settle = link.client.register_script(SETTLE)
        self._release = link.client.register_script(RELEASE)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def claim(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        mine = self._claims.get(idem_key)
        if mine is not None:
            return mine.future
        waiting = self._remote.get(idem_key)
        if waiting is not None and not waiting.done():
            return waiting
        if idem_key in self._fallback_claims:
            return await self.local.claim(idem_key)
        rkey = PREFIX + "idem:" + hashlib.sha256(idem_key.encode()).hexdigest()
        token = b"pending:" + uuid.uuid4().hex.encode()
        ttl = ms(self.lease)
        try:
            held = codec.as_bytes(
                await self.link.run("claim", lambda r: self._claim([rkey], [token, ttl], r))
            )
        except Unavailable:
            found = await self.local.claim(idem_key)
            if found is None:
                self._fallback_claims.add(idem_key)
            return found
        future: asyncio.Future[JobRef] = asyncio.get_running_loop().create_future()
        if held is None or held == token:  # (ours: the retry of a claim that went through)
            self._claims[idem_key] = _Claim(rkey, token, future)
            return None
        if not held.startswith(b"pending:"):
            d = codec.decode(held, "claim")
            if d is not None:
                future.set_result(codec.ref_in(d["ref"]))
                return future
        self._remote[idem_key] = future
        self._spawn(self._follow_claim(idem_key, rkey, future))
        return future

    async def _follow_claim(self, idem_key: str, rkey: str, future: asyncio.Future[JobRef]) -> None:
        """Another replica creates the job: poll its claim until it says which job (or lapses,
        or Redis goes: then the future is cancelled and the caller claims the key anew)."""
        pause = 0.02
        try:
            while not future.done():
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                try:
                    value = codec.as_bytes(await self.link.run("claim", lambda r: r.get(rkey)))
                except Unavailable:
                    value = None
                if value is None:
                    future.cancel()
                elif not value.startswith(b"pending:"):
                    d = codec.decode(value, "claim")
                    if d is None:
                        future.cancel()
                    else:
                        future.set_result(codec.ref_in(d["ref"]))
        finally:
            if not future.done():
                future.cancel()
            if self._remote.get(idem_key) is future:
                del self._remote[idem_key]

    def settle(self, idem_key: str, ref: JobRef | None) -> None:
        if idem_key in self._fallback_claims:
            self._fallback_claims.discard(idem_key)
            self.local.settle(idem_key, ref)
            return
        claim = self._claims.get(idem_key)
        if claim is None:
            return
        if ref is None:
            del self._claims[idem_key]  # a new claim must not find this cancelled future
            claim.future.cancel()
        elif not claim.future.done():
            claim.future.set_result(ref)
        self._spawn(self._write_settle(idem_key, claim, ref))

    async def _write_settle(self, idem_key: str, claim: _Claim, ref: JobRef | None) -> None:
        try:
            if ref is None:
                args = [claim.token]
                await self.link.run("settle", lambda r: self._release([claim.rkey], args, r))
            else:
                value = codec.dumps({"v": codec.SCHEMA, "ref": codec.ref_out(ref)})
                ttl = ms(max(self.seconds, 60.0))
                await self.link.run(
                    "settle", lambda r: self._settle([claim.rkey], [claim.token, value, ttl], r)
                )
        except Unavailable:
            pass  # the pending claim lapses once nobody renews it
        finally:
            if self._claims.get(idem_key) is claim:
                del self._claims[idem_key]

    def pending(self) -> list[tuple[str, bytes]]:
        """The claims whose create still runs here (renewed with the leases)."""
        return [(c.rkey, c.token) for c in self._claims.values() if not c.future.done()]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for claim in self._claims.values():
            if not claim.future.done():
                claim.future.cancel()
        self._claims.clear()
