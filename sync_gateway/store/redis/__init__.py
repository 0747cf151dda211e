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

The modules, one job each: :mod:`.connection` (whether Redis is usable, back-off, the gauge),
:mod:`.keys` (key prefix and Lua scripts), :mod:`.codec` (what a key holds), :mod:`.store`
(results, refs), :mod:`.claims` (idempotency claims), :mod:`.coordinator` (leases, "done"
news), :mod:`.backend` (start, health check, renewals, pub/sub listener, close).
"""

# The constants are re-exported to be read. A test that changes one patches the module that
# reads it (``store.redis.backend.LEASE_SECONDS``): rebinding the name here changes nothing.
from sync_gateway.store.redis.backend import CHECK_SECONDS, LEASE_SECONDS, RedisBackend
from sync_gateway.store.redis.codec import SCHEMA
from sync_gateway.store.redis.connection import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    COMMAND_TIMEOUT,
    POOL_SIZE,
)
from sync_gateway.store.redis.coordinator import RedisCoordinator
from sync_gateway.store.redis.keys import PREFIX
from sync_gateway.store.redis.store import MAX_WRITTEN, RedisStore

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "CHECK_SECONDS",
    "COMMAND_TIMEOUT",
    "LEASE_SECONDS",
    "MAX_WRITTEN",
    "POOL_SIZE",
    "PREFIX",
    "SCHEMA",
    "RedisBackend",
    "RedisCoordinator",
    "RedisStore",
]
