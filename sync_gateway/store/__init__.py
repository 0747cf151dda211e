"""Where results, refs and idempotency claims are kept: base, memory, redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sync_gateway.core.errors import StartupError

if TYPE_CHECKING:
    from sync_gateway.store.redis import RedisBackend


def redis_backend() -> type[RedisBackend]:
    """The shared store's class; a StartupError naming the extra when redis is missing."""
    try:
        from sync_gateway.store.redis import RedisBackend
    except ImportError:
        raise StartupError(
            "store.backend = \"redis\" needs the redis extra: pip install 'sync-gateway[redis]'"
        ) from None
    return RedisBackend
