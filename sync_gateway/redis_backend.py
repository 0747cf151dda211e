"""Several replicas sharing results, idempotency keys and watches through Redis.

:class:`RedisBackend` gives the app a :class:`ResultStore` and a :class:`Coordinator` that talk
to one Redis (redis-py's asyncio client). Keys, all under ``sync-gateway:``:

* ``result:{job}`` a finished result (orjson: ref, snapshot, creator digest), TTL
  ``retention.seconds``; ``ref:{job}`` a created job's ref and creator digest;
* ``idem:{sha256}`` an idempotency claim: ``pending:{token}`` while its create runs (renewed by
  the claiming replica, so it lapses soon after that replica dies), then the job's ref;
* ``lease:{job}`` which replica follows the job upstream (renewed while it does), and the
  pub/sub channel ``done:{job}``, published once the result is in ``result:{job}``.

Redis down: every operation falls back to per-replica behaviour (an embedded MemoryStore that
also keeps a copy of what this replica wrote, leases always granted) and tries Redis again
after a short back-off. What this replica wrote is written back when Redis returns empty.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sync_gateway.config import Settings
from sync_gateway.metrics import Metrics
from sync_gateway.render import Rendered
from sync_gateway.retention import MemoryStore, Retained
from sync_gateway.upstream.base import JobRef, Snapshot

log = structlog.get_logger("sync_gateway.redis")

T = TypeVar("T")

PREFIX = "sync-gateway:"
SCHEMA = 1
LEASE_SECONDS = 10.0  # a dead replica's watch is taken over this long after its last renewal
CHECK_SECONDS = 1.0  # health check, restart detection, and the poll under pub/sub
COMMAND_TIMEOUT = 1.0
POOL_SIZE = 64  # connections for commands; a burst of calls queues for one, never fails
BACKOFF_MIN, BACKOFF_MAX = 0.25, 5.0
MAX_WRITTEN = 100_000  # keys remembered for the write-back after a Redis restart
_ERRORS = (RedisError, OSError)

# Renew a key this replica holds, or take it again when it vanished (Redis restarted).
_RENEW = """local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0"""
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""
# Claim a free key (nil) or answer what holds it.
_CLAIM = """local v = redis.call('get', KEYS[1])
if v then return v end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false"""
# Replace our pending claim (or a claim lost in a Redis restart) with its outcome.
_SETTLE = """local v = redis.call('get', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1"""


class _Unavailable(Exception):
    """Redis cannot be used now: fall back to this replica's own state."""


class _Link:
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
        """Run one Redis call; raise :class:`_Unavailable` (counted) when it cannot be."""
        if not self.usable():
            self.fallbacks.labels(op=op).inc()
            raise _Unavailable
        try:
            async with self._slots:
                result = await call(self.client)
        except _ERRORS as exc:
            self.failed(exc)
            self.fallbacks.labels(op=op).inc()
            raise _Unavailable from exc
        self.ok()
        return result

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


# ---- serialization (never credentials: owners are digests) ------------------------------


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # deeper than orjson's limit, or an int past 64 bits
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _ref_out(ref: JobRef) -> dict[str, Any]:
    return {
        "adapter": ref.adapter,
        "id": ref.id,
        "customer": ref.customer,
        "job_secret": ref.job_secret,
        "poll_url": ref.poll_url,
        "extra": [list(pair) for pair in ref.extra],
    }


def _ref_in(d: dict[str, Any]) -> JobRef:
    return JobRef(
        adapter=str(d["adapter"]),
        id=str(d["id"]),
        customer=d.get("customer"),
        job_secret=d.get("job_secret"),
        poll_url=d.get("poll_url"),
        extra=tuple((str(k), str(v)) for k, v in d.get("extra", ())),
    )


def _snapshot_out(s: Snapshot) -> dict[str, Any]:
    r = s.rendered
    rendered = None
    if r is not None:
        rendered = {
            "status": r.status,
            "body": base64.b64encode(r.body).decode("ascii"),
            "content_type": r.content_type,
            "headers": [list(h) for h in r.headers],
            "dropped": list(r.dropped),
        }
    return {
        "finished": s.finished,
        "state": s.state,
        "lifecycle": s.lifecycle,
        "document": dict(s.document),
        "rendered": rendered,
        "size": s.size,
    }


def _snapshot_in(d: dict[str, Any]) -> Snapshot:
    r = d.get("rendered")
    rendered = None
    if r is not None:
        rendered = Rendered(
            status=int(r["status"]),
            body=base64.b64decode(r["body"]),
            content_type=str(r["content_type"]),
            headers=tuple((str(n), str(v)) for n, v in r["headers"]),
            dropped=tuple(str(x) for x in r["dropped"]),
        )
    return Snapshot(
        finished=bool(d["finished"]),
        state=str(d["state"]),
        lifecycle=str(d["lifecycle"]),
        document=d["document"],
        rendered=rendered,
        size=int(d["size"]),
    )


def _decode(raw: bytes | str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = _loads(raw)
        if isinstance(value, dict) and value.get("v") == SCHEMA:
            return value
    except ValueError:
        pass
    log.warning("store_entry_unreadable", kind=what)
    return None


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# ---- the store ---------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Claim:
    """An idempotency key claimed in Redis by this replica, until its outcome is written."""

    rkey: str
    token: bytes
    future: asyncio.Future[JobRef]


class RedisStore:
    """The :class:`ResultStore` shared by the replicas, with a local copy and fallback."""

    def __init__(
        self, link: _Link, local: MemoryStore, seconds: float, max_bytes: int, lease: float
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
        self._claim = link.client.register_script(_CLAIM)
        self._settle = link.client.register_script(_SETTLE)
        self._release = link.client.register_script(_RELEASE)

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

        async def call(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.get(rkey)
            pipe.pttl(rkey)
            return await pipe.execute()

        try:
            raw, pttl = await self.link.run("get", call)
        except _Unavailable:
            return await self.local.get(key)
        d = _decode(raw, "result")
        if d is None:
            return await self.local.get(key)
        expires = time.monotonic() + (pttl / 1000 if pttl > 0 else self.seconds)
        snapshot = _snapshot_in(d["snapshot"])
        return Retained(_ref_in(d["ref"]), snapshot, bytes.fromhex(d["owner"]), expires)

    async def put(self, item: Retained) -> bool:
        # The local copy serves while Redis is down and is written back after a restart.
        kept = await self.local.put(item)
        if item.snapshot.size > self.max_bytes or self.seconds <= 0:
            return False
        self._note_written("result", item.ref.key, item.expires_at)
        try:
            await self._write_result(item)
        except _Unavailable:
            return kept
        return True

    async def _write_result(self, item: Retained, *, nx: bool = False) -> None:
        ref, owner, snapshot = _ref_out(item.ref), item.owner.hex(), _snapshot_out(item.snapshot)
        payload = _dumps({"v": SCHEMA, "ref": ref, "owner": owner, "snapshot": snapshot})
        ttl = _ms(item.expires_at - time.monotonic())
        key = PREFIX + "result:" + item.ref.key
        await self.link.run("put", lambda r: r.set(key, payload, px=ttl, nx=nx))

    async def remember_ref(self, ref: JobRef, owner: bytes) -> None:
        await self.local.remember_ref(ref, owner)
        expires = time.monotonic() + max(self.seconds, 60.0)
        self._note_written("ref", ref.key, expires)
        with contextlib.suppress(_Unavailable):
            await self._write_ref(ref, owner, expires)

    async def _write_ref(self, ref: JobRef, owner: bytes, expires: float, nx: bool = False) -> None:
        payload = _dumps({"v": SCHEMA, "ref": _ref_out(ref), "owner": owner.hex()})
        ttl, key = _ms(expires - time.monotonic()), PREFIX + "ref:" + ref.key
        await self.link.run("remember_ref", lambda r: r.set(key, payload, px=ttl, nx=nx))

    async def ref(self, key: str) -> tuple[JobRef, bytes] | None:
        try:
            raw = await self.link.run("ref", lambda r: r.get(PREFIX + "ref:" + key))
        except _Unavailable:
            return await self.local.ref(key)
        d = _decode(raw, "ref")
        if d is None:
            return await self.local.ref(key)
        return _ref_in(d["ref"]), bytes.fromhex(d["owner"])

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
        ttl = _ms(self.lease)
        try:
            held = _bytes(
                await self.link.run("claim", lambda r: self._claim([rkey], [token, ttl], r))
            )
        except _Unavailable:
            found = await self.local.claim(idem_key)
            if found is None:
                self._fallback_claims.add(idem_key)
            return found
        future: asyncio.Future[JobRef] = asyncio.get_running_loop().create_future()
        if held is None or held == token:  # (ours: the retry of a claim that went through)
            self._claims[idem_key] = _Claim(rkey, token, future)
            return None
        if not held.startswith(b"pending:"):
            d = _decode(held, "claim")
            if d is not None:
                future.set_result(_ref_in(d["ref"]))
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
                    value = _bytes(await self.link.run("claim", lambda r: r.get(rkey)))
                except _Unavailable:
                    value = None
                if value is None:
                    future.cancel()
                elif not value.startswith(b"pending:"):
                    d = _decode(value, "claim")
                    if d is None:
                        future.cancel()
                    else:
                        future.set_result(_ref_in(d["ref"]))
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
                value = _dumps({"v": SCHEMA, "ref": _ref_out(ref)})
                ttl = _ms(max(self.seconds, 60.0))
                await self.link.run(
                    "settle", lambda r: self._settle([claim.rkey], [claim.token, value, ttl], r)
                )
        except _Unavailable:
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
            except _Unavailable:
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


# ---- single flight across replicas -------------------------------------------------------


class RedisCoordinator:
    """Leases on watches, and news of finished jobs over pub/sub (with a poll under it)."""

    def __init__(self, link: _Link, replica: str, lease: float, check: float) -> None:
        self.link = link
        self.token = replica.encode()
        self.lease = lease
        self.check = check
        self.held: dict[str, bytes] = {}  # lease key -> token, renewed by the backend
        self._done: dict[str, set[asyncio.Future[None]]] = {}
        self._acquire = link.client.register_script(_RENEW)
        self._release = link.client.register_script(_RELEASE)

    async def acquire(self, key: str) -> bool:
        lkey = PREFIX + "lease:" + key
        try:
            got = await self.link.run(
                "acquire", lambda r: self._acquire([lkey], [self.token, _ms(self.lease)], r)
            )
        except _Unavailable:
            return True  # on our own: every replica follows its jobs itself
        if got:
            self.held[lkey] = self.token
        return bool(got)

    async def release(self, key: str) -> None:
        lkey = PREFIX + "lease:" + key
        if self.held.pop(lkey, None) is None:
            return
        with contextlib.suppress(_Unavailable):
            await self.link.run("release", lambda r: self._release([lkey], [self.token], r))

    async def publish(self, key: str) -> None:
        with contextlib.suppress(_Unavailable):
            await self.link.run("publish", lambda r: r.publish(PREFIX + "done:" + key, b"1"))

    async def wait_elsewhere(self, key: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done: asyncio.Future[None] = loop.create_future()
        self._done.setdefault(key, set()).add(done)
        rkey, lkey = PREFIX + "result:" + key, PREFIX + "lease:" + key

        async def check(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.exists(rkey)
            pipe.exists(lkey)
            return await pipe.execute()

        try:
            while True:
                try:
                    result, lease = await self.link.run("wait", check)
                except _Unavailable:
                    return False  # follow the job here
                if result:
                    return True
                if not lease:
                    return False  # its holder is gone: take the watch over
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), min(remaining, self.check))
                if done.done():
                    return True
        finally:
            waiters = self._done.get(key)
            if waiters is not None:
                waiters.discard(done)
                if not waiters:
                    del self._done[key]
            if not done.done():
                done.cancel()

    def announced(self, key: str) -> None:
        """A replica published that the job's result is in Redis."""
        for done in self._done.get(key, ()):
            if not done.done():
                done.set_result(None)


# ---- the backend -------------------------------------------------------------------------


class RedisBackend:
    """The shared store and coordinator, the health check, pub/sub and renewals."""

    def __init__(
        self, client: aioredis.Redis, settings: Settings, metrics: Metrics, lease: float
    ) -> None:
        self.link = _Link(client, metrics)
        retention = settings.retention
        local = MemoryStore(retention.seconds, retention.max_bytes, metrics)
        self.check = min(CHECK_SECONDS, lease / 3)
        self.store = RedisStore(self.link, local, retention.seconds, retention.max_bytes, lease)
        self.coordinator = RedisCoordinator(self.link, uuid.uuid4().hex, lease, self.check)
        self.lease = lease
        self._renew = client.register_script(_RENEW)
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

    async def healthy(self) -> bool:
        """Whether Redis answers a PING now (for /readyz)."""
        try:
            return bool(await asyncio.wait_for(self.link.client.ping(), 0.5))
        except (*_ERRORS, TimeoutError):
            return False

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
        except _Unavailable:
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
                await self._renew([key], [token, _ms(self.lease)], pipe)
            return await pipe.execute()

        with contextlib.suppress(_Unavailable):
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
            except _ERRORS:
                if not self._closed:
                    await asyncio.sleep(self.check)  # the poll covers the gap
            finally:
                self._pubsub = None
                with contextlib.suppress(*_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _hang_up_listener(self) -> None:
        """End the listener's read by closing its connection (it reconnects unless closed):
        redis-py can lose a cancellation that races its reads, a closed socket it cannot."""
        pubsub = self._pubsub
        # redis-py types the attribute by its initial None.
        connection = cast("Connection | None", pubsub.connection if pubsub else None)
        if connection is not None:
            with contextlib.suppress(*_ERRORS):
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
            with contextlib.suppress(*_ERRORS):
                await self.coordinator._release([lkey], [token], self.link.client)
        await self.store.close()
        with contextlib.suppress(*_ERRORS):
            await self.link.client.aclose()
