"""The app's typed state (``web.AppKey``): set by the factory and the resources context."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from sync_gateway.config import Settings
from sync_gateway.core.engine import Engine
from sync_gateway.core.jobs import Jobs
from sync_gateway.metrics import Metrics
from sync_gateway.store.base import ResultStore
from sync_gateway.upstream.base import Adapter
from sync_gateway.upstream.http import UpstreamClient

if TYPE_CHECKING:
    from sync_gateway.store.redis import RedisBackend

SETTINGS: Final = web.AppKey("settings", Settings)
METRICS: Final = web.AppKey("metrics", Metrics)
ENGINE: Final = web.AppKey("engine", Engine)
JOBS: Final = web.AppKey("jobs", Jobs)
STORE: Final = web.AppKey("store", ResultStore)
CLIENT: Final = web.AppKey("client", UpstreamClient)
ADAPTERS: Final = web.AppKey("adapters", dict[str, Adapter])
# Only with [store] backend = "redis".
REDIS: Final[web.AppKey[RedisBackend]] = web.AppKey("redis")
