"""Upstream flavours: one module with one :class:`Adapter` class each, named in one table.

Adding a flavour: a module whose class subclasses :class:`sync_gateway.upstream.base.Adapter`,
one line in :data:`FLAVOURS`, its name in ``config.AdapterName``, and a renderer in
:mod:`sync_gateway.render` for the snapshots it makes.
"""

from __future__ import annotations

from typing import Final

from sync_gateway.config import RouteSettings, Settings, route_name
from sync_gateway.upstream.base import Adapter
from sync_gateway.upstream.executejob import ExecuteJobAdapter
from sync_gateway.upstream.http import UpstreamClient
from sync_gateway.upstream.location import LocationPollAdapter
from sync_gateway.upstream.theeye import TheEyeAdapter

FLAVOURS: Final[dict[str, type[Adapter]]] = {
    "theeye": TheEyeAdapter,
    "location-poll": LocationPollAdapter,
    "executejob": ExecuteJobAdapter,
}
DEFAULT = "theeye"  # the adapter of the TheEye routes, named after its flavour


def build_adapters(settings: Settings, client: UpstreamClient) -> dict[str, Adapter]:
    """The default TheEye adapter and one adapter per configured route, by name."""
    adapters: dict[str, Adapter] = {DEFAULT: TheEyeAdapter(DEFAULT, client, settings.upstream)}
    for index, route in enumerate(settings.routes):
        adapter = FLAVOURS[route.adapter](
            route_name(route, index), client, settings.upstream, route
        )
        adapters[adapter.name] = adapter
    return adapters


__all__ = ["DEFAULT", "FLAVOURS", "Adapter", "RouteSettings", "build_adapters"]
