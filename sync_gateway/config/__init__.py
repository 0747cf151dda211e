"""Typed, frozen settings (:mod:`.settings`), read once at start-up (:mod:`.loading`).

Precedence, lowest to highest: defaults, a TOML file (``--config`` or ``SYNC_GATEWAY_CONFIG``),
environment variables ``SYNC_GATEWAY_<SECTION>_<KEY>`` (top-level keys:
``SYNC_GATEWAY_<KEY>``), then CLI flags. Anything wrong raises ``ConfigError`` with one line
naming the key.
"""

from sync_gateway.config.loading import load, redacted
from sync_gateway.config.settings import (
    ENV_PREFIX,
    AdapterName,
    AdmissionSettings,
    CorsSettings,
    LogSettings,
    RetentionSettings,
    RouteSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    StoreSettings,
    UpstreamSettings,
    WaitSettings,
    placeholders,
    route_name,
)

__all__ = [
    "ENV_PREFIX",
    "AdapterName",
    "AdmissionSettings",
    "CorsSettings",
    "LogSettings",
    "RetentionSettings",
    "RouteSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "UpstreamSettings",
    "WaitSettings",
    "load",
    "placeholders",
    "redacted",
    "route_name",
]
