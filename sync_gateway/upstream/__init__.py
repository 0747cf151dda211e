"""Upstream flavours. Each is one module with one adapter class; this table names them.

Adding a flavour: a new module whose class takes ``(name, client, settings, route)`` and
implements :class:`sync_gateway.upstream.base.Adapter`, plus one line here.
"""

from __future__ import annotations

import importlib
from typing import Any

from sync_gateway.config import RouteSettings, UpstreamSettings
from sync_gateway.upstream.base import Adapter
from sync_gateway.upstream.http import UpstreamClient

FLAVOURS: dict[str, str] = {
    "theeye": "sync_gateway.upstream.theeye:TheEyeAdapter",
    "location-poll": "sync_gateway.upstream.location:LocationPollAdapter",
    "executejob": "sync_gateway.upstream.executejob:ExecuteJobAdapter",
}


def adapter_class(flavour: str) -> Any:
    """The adapter class of a flavour, imported on first use."""
    module, _, name = FLAVOURS[flavour].partition(":")
    return getattr(importlib.import_module(module), name)


def route_name(route: RouteSettings, index: int) -> str:
    """The name a configured route's jobs are known by (``/jobs/{name}/{id}/result``)."""
    return route.name or f"{route.adapter}-{index}"


def build_route_adapter(
    route: RouteSettings, index: int, client: UpstreamClient, settings: UpstreamSettings
) -> Adapter:
    adapter: Adapter = adapter_class(route.adapter)(
        route_name(route, index), client, settings, route
    )
    return adapter
