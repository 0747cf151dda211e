"""The :class:`ResultStore` the replicas share: results, refs and idempotency claims in Redis,
with a local copy (an embedded :class:`MemoryStore`) that serves while Redis is down and is
written back after Redis restarted empty."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from sync_gateway.core.types import JobRef, Retained
from sync_gateway.store.memory import MemoryStore
from sync_gateway.store.redis import codec
from sync_gateway.store.redis.connection import Link, Unavailable
from sync_gateway.store.redis.keys import CLAIM, PREFIX, RELEASE, SETTLE, ms

log = structlog.get_logger("sync_gateway.redis")

MAX_WRITTEN = 100_000  # keys remembered for the write-back after a Redis restart


@dataclass(eq=False, slots=True)
class _Claim:
    """An idempotency key claimed in Redis by this replica, until its outcome is written."""

    rkey: str
    token: bytes
    future: asyncio.Future[JobRef]


class RedisStore:
    """The :class:`ResultStore` shared by the replicas, with a local copy and fallback."""

    def __init__(
        self, link: Link, local: MemoryStore, seconds: float, max_bytes: int, lease: float
    ) -> None:
        self.link = link
        self.lease = lease
        self.local = local
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._claims: dict[str, _Claim] = {}
        self._fallback_claims: set[str] = set()
        self._remote: dict[str, asyncio.Future[JobRef]] = {}
        self._written: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim = link.client.register_script(CLAIM)
        self._settle = link.client.register_script(SETTLE)
        self._release = link.client.register_script(RELEASE)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note_written(self, kind: str, key: str, expires_at: float) -> None:
        self._written.pop(f"{kind}:{key}", None)
        self._written[f"{kind}:{key}"] = (key, expires_at)
        now = time.monotonic()
        while self._written and (
            len(self._written) > MAX_WRITTEN or next(iter(self._written.values()))[1] <= now
        ):
            self._written.popitem(last=False)

    # -- results and refs

    async def get(self, key: str) -> Retained | None:
        rkey = PREFIX + "result:" + key

        try:
            raw, pttl = await self.link.pipelined(
                "get", lambda p: p.get(rkey), lambda p: p.pttl(rkey)
            )
        except Unavailable:
            return await self.local.get(key)
        d = codec.decode(raw, "result")
        if d is None:
            return await self.local.get(key)
        expires = time.monotonic() + (pttl / 1000 if pttl > 0 else self.seconds)
        snapshot = codec.snapshot_in(d["snapshot"])
        return Retained(codec.ref_in(d["ref"]), snapshot, bytes.fromhex(d["owner"]), expires)

    async def put(self, item: Retained) -> bool:
        # The local copy serves while Redis is down and is written back after a restart.
        kept = await self.local.put(item)
        if item.snapshot.size > self.max_bytes or self.seconds <= 0:
            return False
        self._note_written("result", item.ref.key, item.expires_at)
        try:
            await self._write_result(item)
        except Unavailable:
            return kept
        return True

    async def _write_result(self, item: Retained, *, nx: bool = False) -> None:
        ref, owner, snapshot = (
            codec.ref_out(item.ref),
            item.owner.hex(),
            codec.snapshot_out(item.snapshot),
        )
        payload = codec.dumps({"v": codec.SCHEMA, "ref": ref, "owner": owner, "snapshot": snapshot})
        ttl = ms(item.expires_at - time.monotonic())
        key = PREFIX + "result:" + item.ref.key
        await self.link.run("put", lambda r: r.set(key, payload, px=ttl, nx=nx))

    async def remember_ref(self, ref: JobRef, owner: bytes) -> None:
        await self.local.remember_ref(ref, owner)
        expires = time.monotonic() + max(self.seconds, 60.0)
        self._note_written("ref", ref.key, expires)
        with contextlib.suppress(Unavailable):
            await self._write_ref(ref, owner, expires)

    async def _write_ref(self, ref: JobRef, owner: bytes, expires: float, nx: bool = False) -> None:
        payload = codec.dumps({"v": codec.SCHEMA, "ref": codec.ref_out(ref), "owner": owner.hex()})
        ttl, key = ms(expires - time.monotonic()), PREFIX + "ref:" + ref.key
        await self.link.run("remember_ref", lambda r: r.set(key, payload, px=ttl, nx=nx))

    async def ref(self, key: str) -> tuple[JobRef, bytes] | None:
        try:
            raw = await self.link.run("ref", lambda r: r.get(PREFIX + "ref:" + key))
        except Unavailable:
            return await self.local.ref(key)
        d = codec.decode(raw, "ref")
        if d is None:
            return await self.local.ref(key)
        return codec.ref_in(d["ref"]), bytes.fromhex(d["owner"])

    # -- idempotency claims

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

    async def write_back(self) -> None:
        """Redis came back (maybe empty): write what this replica wrote, where it is missing."""
        restored = 0
        for kind, (key, expires) in list(self._written.items()):
            if expires <= time.monotonic():
                continue
            try:
                if kind.startswith("result:"):
                    item = await self.local.get(key)
                    if item is not None:
                        await self._write_result(item, nx=True)
                        restored += 1
                elif (found := await self.local.ref(key)) is not None:
                    await self._write_ref(found[0], found[1], expires, nx=True)
                    restored += 1
            except Unavailable:
                return
        log.info("store_written_back", backend="redis", entries=restored)

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
        await self.local.close()
