"""Idempotency claims shared by the replicas: ``idem:{sha256}`` holds ``pending:{token}``
while the claiming replica's create runs (renewed with the leases, so it lapses soon after
that replica dies), then the job's ref. While Redis is down a claim falls back to the
replica's own memory store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sync_gateway.core.types import JobRef
from sync_gateway.store.memory import MemoryStore, lost_claim
from sync_gateway.store.redis import codec
from sync_gateway.store.redis.connection import Link, Unavailable
from sync_gateway.store.redis.keys import CLAIM, PREFIX, RELEASE, SETTLE, ms

MAX_SETTLED = 100_000  # settled keys remembered for the write-back


@dataclass(eq=False, slots=True)
class _Claim:
    """An idempotency key claimed in Redis by this replica, until its outcome is written."""

    rkey: str
    token: bytes
    future: asyncio.Future[JobRef]


Outcome = JobRef | None  # None here: "no answer to the create" (a kept, unknown claim)


def _set_nx(key: str, value: bytes, ttl: int, pipe: Any) -> None:
    pipe.set(key, value, px=ttl, nx=True)


def _outcome_value(ref: Outcome) -> bytes:
    if ref is None:
        return codec.dumps({"v": codec.SCHEMA, "unknown": True})
    return codec.dumps({"v": codec.SCHEMA, "ref": codec.ref_out(ref)})


def _settled_future(d: dict[str, Any]) -> asyncio.Future[JobRef]:
    """A claim's outcome as the future a later claimer gets."""
    future: asyncio.Future[JobRef] = asyncio.get_running_loop().create_future()
    if d.get("unknown"):
        lost_claim(future)
    else:
        future.set_result(codec.ref_in(d["ref"]))
    return future


class RedisClaims:
    """Claim, follow and settle idempotency keys in Redis, with a local fallback.

    Every outcome this replica settled is remembered here (bounded, until it expires) and
    written back when Redis returns without it, whether it was settled while Redis was down
    or lost in a restart without persistence: a retry with the same key never finds the key
    free because Redis forgot it."""

    def __init__(self, link: Link, local: MemoryStore, seconds: float, lease: float) -> None:
        self.link = link
        self.local = local
        self.seconds = max(seconds, 60.0)
        self.lease = lease
        self._claims: dict[str, _Claim] = {}
        self._fallback_claims: set[str] = set()
        self._remote: dict[str, asyncio.Future[JobRef]] = {}
        self._settled: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim = link.client.register_script(CLAIM)
        self._settle = link.client.register_script(SETTLE)
        self._release = link.client.register_script(RELEASE)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _rkey(idem_key: str) -> str:
        return PREFIX + "idem:" + hashlib.sha256(idem_key.encode()).hexdigest()

    def _remember(self, idem_key: str, value: bytes) -> None:
        self._settled.pop(idem_key, None)
        self._settled[idem_key] = (self._rkey(idem_key), value, time.monotonic() + self.seconds)
        now = time.monotonic()
        while self._settled and (
            len(self._settled) > MAX_SETTLED or next(iter(self._settled.values()))[2] <= now
        ):
            self._settled.popitem(last=False)

    def _known(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        found = self._settled.get(idem_key)
        if found is None or found[2] <= time.monotonic():
            return None
        d = codec.decode(found[1], "claim")
        return _settled_future(d) if d is not None else None

    async def claim(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        mine = self._claims.get(idem_key)
        if mine is not None:
            return mine.future
        known = self._known(idem_key)
        if known is not None:
            return known
        waiting = self._remote.get(idem_key)
        if waiting is not None and not waiting.done():
            return waiting
        if idem_key in self._fallback_claims:
            return await self.local.claim(idem_key)
        rkey = self._rkey(idem_key)
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
        if held is None or held == token:  # (ours: the retry of a claim that went through)
            future: asyncio.Future[JobRef] = asyncio.get_running_loop().create_future()
            self._claims[idem_key] = _Claim(rkey, token, future)
            return None
        if not held.startswith(b"pending:"):
            d = codec.decode(held, "claim")
            if d is not None:
                return _settled_future(d)
        future = asyncio.get_running_loop().create_future()
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
                    elif d.get("unknown"):
                        lost_claim(future)
                    else:
                        future.set_result(codec.ref_in(d["ref"]))
        finally:
            if not future.done():
                future.cancel()
            if self._remote.get(idem_key) is future:
                del self._remote[idem_key]

    def settle(self, idem_key: str, ref: JobRef | None) -> None:
        """The job created under the key (None: the create failed, release the key)."""
        self._settle_as(idem_key, ref, known=ref is not None)

    def settle_unknown(self, idem_key: str) -> None:
        """No answer to the create: keep the key, its claimers get OutcomeUnknown."""
        self._settle_as(idem_key, None, known=True)

    def _settle_as(self, idem_key: str, ref: Outcome, known: bool) -> None:
        if known:
            self._remember(idem_key, _outcome_value(ref))
        if idem_key in self._fallback_claims:
            self._fallback_claims.discard(idem_key)
            if not known:
                self.local.settle(idem_key, None)
            elif ref is None:
                self.local.settle_unknown(idem_key)
            else:
                self.local.settle(idem_key, ref)
            return
        claim = self._claims.get(idem_key)
        if claim is None:
            return
        if not known:
            del self._claims[idem_key]  # a new claim must not find this cancelled future
            claim.future.cancel()
        elif claim.future.done():
            pass
        elif ref is None:
            lost_claim(claim.future)
        else:
            claim.future.set_result(ref)
        self._spawn(self._write_settle(idem_key, claim, ref, known))

    async def _write_settle(self, idem_key: str, claim: _Claim, ref: Outcome, known: bool) -> None:
        try:
            if not known:
                args = [claim.token]
                await self.link.run("settle", lambda r: self._release([claim.rkey], args, r))
            else:
                value, ttl = _outcome_value(ref), ms(self.seconds)
                await self.link.run(
                    "settle", lambda r: self._settle([claim.rkey], [claim.token, value, ttl], r)
                )
        except Unavailable:
            pass  # written back when Redis returns; a released claim lapses by itself
        finally:
            if self._claims.get(idem_key) is claim:
                del self._claims[idem_key]

    def pending(self) -> list[tuple[str, bytes]]:
        """The claims whose create still runs here (renewed with the leases)."""
        return [(c.rkey, c.token) for c in self._claims.values() if not c.future.done()]

    async def write_back(self) -> int:
        """Write every settled outcome Redis lacks (NX): after an outage or a restart."""
        now = time.monotonic()
        kept = [(k, v, ms(e - now)) for k, v, e in self._settled.values() if e > now]
        if kept:
            await self.link.pipelined(
                "write_back", *(functools.partial(_set_nx, k, v, ttl) for k, v, ttl in kept)
            )
        return len(kept)

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
