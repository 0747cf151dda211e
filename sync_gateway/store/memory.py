"""The embedded store: one process, bounded, expiring (see :mod:`sync_gateway.store.base`).

It keeps each finished result for ``retention.seconds``, bounded by
``retention.max_bytes`` (oldest evicted first; a result larger than the whole bound is not kept:
it is served to the waiters that are there and then gone). A result counts what it takes: its
kept text and :data:`ENTRY_BYTES` for the objects around it. Created jobs' refs are kept as long,
and bounded too: at most a quarter of ``retention.max_bytes`` of them, each counted as
:data:`REF_BYTES` (131,072 refs at the default), oldest dropped first. Without a bound a steady
stream of creates would grow them for an hour (some 0.5 KB each): 3 GB at 2,000 creates a
second. A job whose ref and result are both gone is re-attached as one the gateway never saw:
the upstream decides with the caller's own credentials (SPEC 5).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from sync_gateway.core.errors import OutcomeUnknown
from sync_gateway.core.types import JobRef, Retained
from sync_gateway.metrics import Metrics

# What a kept ref takes in memory, about: the JobRef, its key, the owner's digest, the entry.
REF_BYTES = 512
# What a kept result takes beyond its text, about (tracemalloc: an instant TheEye job's result
# counted 1,531 bytes of text and held some 2,150): the Retained, its snapshot, its ref, the entry.
ENTRY_BYTES = 640


def cost(item: Retained) -> int:
    """The bytes a kept result counts against ``retention.max_bytes``."""
    return item.snapshot.size + ENTRY_BYTES


def lost_claim(future: asyncio.Future[JobRef]) -> None:
    """Settle a claim's future as "outcome unknown" (read once here: nobody may await it)."""
    future.set_exception(
        OutcomeUnknown(
            "the first request with this Idempotency-Key got no answer to its create: a job"
            " may exist upstream, and the gateway creates no other under this key; look the"
            " job up upstream, or send a new key to create one",
        )
    )
    future.exception()


class MemoryStore:
    """The embedded default: one process, bounded, expiring."""

    def __init__(self, seconds: float, max_bytes: int, metrics: Metrics) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._results: OrderedDict[str, Retained] = OrderedDict()
        self._bytes = 0
        self._refs: OrderedDict[str, tuple[JobRef, bytes, float]] = OrderedDict()
        self.max_refs = max(max_bytes // 4 // REF_BYTES, 1)
        self._claims: OrderedDict[str, tuple[asyncio.Future[JobRef], float]] = OrderedDict()
        self._published = (-1, -1)  # (results, bytes) last set on the gauges

    def _now(self) -> float:
        return time.monotonic()

    def _expire(self) -> None:
        now = self._now()
        # Insertion order is expiry order (every entry of a kind lives equally long from when it
        # was put): only the oldest entries are looked at, never the whole store.
        while self._results:
            key, item = next(iter(self._results.items()))
            if item.expires_at > now:
                break
            self._drop(key)
        while self._refs and next(iter(self._refs.values()))[2] <= now:
            self._refs.popitem(last=False)
        while self._claims and next(iter(self._claims.values()))[1] <= now:
            self._claims.popitem(last=False)
        self._publish()

    def _drop(self, key: str) -> None:
        item = self._results.pop(key)
        self._bytes -= cost(item)

    def _publish(self) -> None:
        # Every store call ends here; the gauges are set only when what they show changed.
        count, size = len(self._results), self._bytes
        if (count, size) != self._published:
            self._published = (count, size)
            self.metrics.retained_results.set(count)
            self.metrics.retained_bytes.set(size)

    async def get(self, key: str) -> Retained | None:
        self._expire()
        return self._results.get(key)

    async def put(self, item: Retained) -> bool:
        self._expire()
        key = item.ref.key
        if key in self._results:
            self._drop(key)
        if self.seconds <= 0:
            self._publish()
            return False
        # Counted as kept: one copy of the output, compressed when large.
        item = Retained(item.ref, item.snapshot.compact(), item.owner, item.expires_at)
        size = cost(item)
        if size > self.max_bytes:
            self._publish()
            return False
        while self._results and self._bytes + size > self.max_bytes:
            self._drop(next(iter(self._results)))
        self._results[key] = item
        self._bytes += size
        self._publish()
        return True

    async def remember_ref(self, ref: JobRef, owner: bytes) -> None:
        self._expire()
        self._refs.pop(ref.key, None)
        self._refs[ref.key] = (ref, owner, self._now() + max(self.seconds, 60.0))
        if len(self._refs) > self.max_refs:
            self._refs.popitem(last=False)

    async def ref(self, key: str) -> tuple[JobRef, bytes] | None:
        self._expire()
        found = self._refs.get(key)
        return (found[0], found[1]) if found else None

    async def claim(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        self._expire()
        found = self._claims.get(idem_key)
        if found is not None:
            return found[0]
        future: asyncio.Future[JobRef] = asyncio.get_running_loop().create_future()
        self._claims[idem_key] = (future, self._now() + max(self.seconds, 60.0))
        return None

    def settle(self, idem_key: str, ref: JobRef | None) -> None:
        found = self._claims.get(idem_key)
        if found is None:
            return
        future = found[0]
        if ref is None:
            del self._claims[idem_key]
            if not future.done():
                future.cancel()
        elif not future.done():
            future.set_result(ref)

    def settle_unknown(self, idem_key: str) -> None:
        found = self._claims.get(idem_key)
        if found is not None and not found[0].done():
            lost_claim(found[0])

    async def close(self) -> None:
        for future, _ in self._claims.values():
            if not future.done():
                future.cancel()
        self._claims.clear()
