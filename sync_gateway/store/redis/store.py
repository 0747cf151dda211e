"""The :class:`ResultStore` the replicas share: results, refs and idempotency claims in Redis,
with a local copy (an embedded :class:`MemoryStore`) that serves while Redis is down and is
written back after Redis restarted empty."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import OrderedDict

import structlog

from sync_gateway.core.types import JobRef, Retained
from sync_gateway.store.memory import MemoryStore
from sync_gateway.store.redis import codec
from sync_gateway.store.redis.claims import RedisClaims
from sync_gateway.store.redis.connection import Link, Unavailable
from sync_gateway.store.redis.keys import PREFIX, ms

log = structlog.get_logger("sync_gateway.redis")

MAX_WRITTEN = 100_000  # keys remembered for the write-back after a Redis restart


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
        self.claims = RedisClaims(link, local, seconds, lease)
        self._written: OrderedDict[str, tuple[str, float]] = OrderedDict()

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
        # Counted as kept (one copy of the output, compressed when large), like the local copy
        # that serves while Redis is down and is written back after a restart.
        item = dataclasses.replace(item, snapshot=item.snapshot.compact())
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

    # -- idempotency claims: kept by RedisClaims

    async def claim(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        return await self.claims.claim(idem_key)

    def settle(self, idem_key: str, ref: JobRef | None) -> None:
        self.claims.settle(idem_key, ref)

    def settle_unknown(self, idem_key: str) -> None:
        self.claims.settle_unknown(idem_key)

    def pending(self) -> list[tuple[str, bytes]]:
        """The claims whose create still runs here (renewed with the leases)."""
        return self.claims.pending()

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
        try:
            claims = await self.claims.write_back()
        except Unavailable:
            return
        log.info("store_written_back", backend="redis", entries=restored, claims=claims)

    async def close(self) -> None:
        await self.claims.close()
        await self.local.close()
